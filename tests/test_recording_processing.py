"""The recording after the call (docs/recordings.md): segments written by these tests exactly as
the media process writes them (docs/media-protocol.md), hashed into the dossier, and processed
into one side-by-side MP4 (client left, agent right, both voices in one track), directly and
through a real `python worker.py`, including a work-horse killed halfway."""
import hashlib
import io
import json
import math
import shutil
import sys
from array import array
from datetime import datetime, timezone
from pathlib import Path

import av
import pytest
from PIL import Image, ImageStat
from sqlalchemy import select

from app.models import AuditEvent, BackgroundJob, Conference, RecordingSegment, StoredFile
from app.services import recording
from app.services.storage import get_storage
from tests.support.processes import fresh, rq_job, wait_until, writing

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from media_processing import write_call, write_series  # noqa: E402

T0 = 1_750_000_000.0
CALL_SECONDS = 21.0
CLIENT_1, CLIENT_2, AGENT = "c1" + "0" * 30, "c2" + "0" * 30, "a1" + "0" * 30
# The client's first connection records 0–9 s (then the media process dies in its second
# segment: a .part is left), the client rejoins at 12 s; the agent records 0–21 s.
GAP = (9.0, 12.0)
SMALL_SECONDS = 24.0


def _cached_call(request, tmp_path_factory, name, write):
    """A synthetic call written once and kept in pytest's cache (.pytest_cache), keyed by the
    generator's source, so later runs skip the encoding."""
    source = (ROOT / "bench" / "media_processing.py").read_bytes() + name.encode()
    key = hashlib.sha256(source).hexdigest()[:16]
    cache = Path(request.config.cache.mkdir("videoar-recording-calls"))
    target = cache / f"{name}-{key}"
    if not (target / "room").is_dir():
        scratch = tmp_path_factory.mktemp(name)
        write(scratch / "room")
        for old in cache.glob(f"{name}-*"):
            shutil.rmtree(old, ignore_errors=True)
        try:
            scratch.rename(target)
        except OSError:  # another session wrote it first (or another file system)
            if not (target / "room").is_dir():
                shutil.copytree(scratch, target)
    return target / "room"


@pytest.fixture(scope="session")
def call_720p(request, tmp_path_factory):
    """The synthetic call: 1280x720 VP8 at 30 fps + Opus."""
    def write(room):
        write_series(room, "client", CLIENT_1, T0, 9.0, part_seconds=1.5, background="flat")
        write_series(room, "client", CLIENT_2, T0 + GAP[1], CALL_SECONDS - GAP[1],
                     background="flat")
        write_series(room, "agent", AGENT, T0, CALL_SECONDS, background="flat")

    return _cached_call(request, tmp_path_factory, "call720", write)


@pytest.fixture(scope="session")
def call_small(request, tmp_path_factory):
    """A cheaper call (320x240) for the worker tests."""
    return _cached_call(request, tmp_path_factory, "callsmall", lambda room: write_call(
        room, SMALL_SECONDS, 320, 240, start=T0, background="flat"))


def _utc(ts):
    return datetime.fromtimestamp(ts, timezone.utc)


def _conference(app, db, factory, source: Path, seconds: float):
    """An ended conference whose recording directory holds a copy of `source`."""
    cert_request = factory.request(product_code="enotariado")
    conference = Conference(request=cert_request, kind="instant", state="ended",
                            opens_at=_utc(T0), code_nonce="0" * 32, recording_state="recording",
                            recording_started_at=_utc(T0),
                            recording_stopped_at=_utc(T0 + seconds))
    db.session.add(conference)
    db.session.commit()
    root = recording.recordings_root(app.config)
    shutil.copytree(source, root / str(conference.id))
    return conference


def _events(db, action):
    db.session.rollback()
    return db.session.execute(select(AuditEvent).where(AuditEvent.action == action)
                              .order_by(AuditEvent.seq)).scalars().all()


# --- ingest -----------------------------------------------------------------------------------

def test_ingest_hashes_every_closed_segment(app, db, factory, call_720p):
    conference = _conference(app, db, factory, call_720p, CALL_SECONDS)
    root = recording.recordings_root(app.config)

    created = recording.ingest_segments(conference)
    db.session.commit()

    assert len(created) == 5  # client 1 + 1, agent 3 (9 + 9 + 3 s)
    assert len(conference.segments) == 5
    for segment in conference.segments:
        path = root / segment.path
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert segment.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert segment.size == path.stat().st_size
        assert segment.started_at == _utc(sidecar["start"])
        assert segment.duration_ms == round(sidecar["duration"] * 1000)
        assert (segment.width, segment.height) == (1280, 720)
        assert segment.video_frames == sidecar["video_frames"] > 0
        assert segment.path.startswith(f"{conference.id}/{segment.role}-{segment.conn_id}/")
    assert sorted((s.role, s.conn_id, s.seq) for s in conference.segments) == [
        ("agent", AGENT, 1), ("agent", AGENT, 2), ("agent", AGENT, 3),
        ("client", CLIENT_1, 1), ("client", CLIENT_2, 1)]
    # The segment open when the media process died is not part of the recording.
    assert conference.recording_incomplete is True
    assert conference.recording_notes["incomplete_segments"] == [
        f"{conference.id}/client-{CLIENT_1}/00002.webm.part"]
    [event] = _events(db, "recording.segments_hashed")
    details = json.loads(event.details)
    assert details["count"] == 5
    assert details["digest"] == recording.combined_digest(conference.segments)
    assert event.object_id == str(conference.id) and event.actor_type == "system"

    # Idempotent: nothing new, nothing audited again.
    assert recording.ingest_segments(conference) == []
    db.session.commit()
    assert db.session.query(RecordingSegment).count() == 5
    assert len(_events(db, "recording.segments_hashed")) == 1


def test_enqueue_is_idempotent_with_a_timeout_from_the_call(app, db, factory, call_small):
    conference = _conference(app, db, factory, call_small, SMALL_SECONDS)
    recording.ingest_segments(conference)
    recording.enqueue_processing(conference)
    assert conference.recording_state == "processing"
    recording.enqueue_processing(conference)
    db.session.commit()
    recording.enqueue_job(conference.id, SMALL_SECONDS)  # e.g. the sweep, while it waits

    from app.jobs import get_queue

    assert get_queue("default").job_ids == [f"recording-{conference.id}"]
    job = rq_job(app, f"recording-{conference.id}")
    assert job.timeout == 120 + 3 * SMALL_SECONDS
    assert job.func_name == "app.jobs.recording.process_recording"
    assert job.retries_left == 2


def test_rolled_back_end_enqueues_nothing(app, db, factory, call_small):
    conference = _conference(app, db, factory, call_small, SMALL_SECONDS)
    recording.enqueue_processing(conference)
    db.session.rollback()
    from app.jobs import get_queue

    assert get_queue("default").job_ids == []


def test_sweep_enqueues_a_lost_job_and_fails_a_dead_one(app, db, factory, call_small):
    from rq.job import JobStatus

    from app.jobs import get_queue
    from app.jobs.recording import sweep_unprocessed_recordings

    lost = _conference(app, db, factory, call_small, SMALL_SECONDS)
    dead = Conference(request=lost.request, kind="instant", state="ended", opens_at=_utc(T0),
                      code_nonce="1" * 32, recording_state="processing")
    db.session.add(dead)
    lost.recording_state = "processing"  # as if Redis lost its job
    db.session.commit()
    job = recording.enqueue_job(dead.id, 10)
    get_queue("default").remove(job)
    job.set_status(JobStatus.FAILED)  # its work-horse killed on the last attempt

    assert sweep_unprocessed_recordings() == 2

    assert get_queue("default").job_ids == [f"recording-{lost.id}"]
    assert fresh(db, Conference, lost.id).recording_state == "processing"
    dead = fresh(db, Conference, dead.id)
    assert dead.recording_state == "failed" and "failed" in dead.recording_notes["error"]


# --- processing -------------------------------------------------------------------------------

def _goertzel_amplitude(samples, hz, rate=48000):
    """Amplitude of the `hz` component of `samples` (one DFT bin)."""
    k = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - k * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / len(samples)


def _pane_colour(image, x):
    r, g, b = ImageStat.Stat(image.crop((x - 8, 232, x + 8, 248))).mean
    if r > 150 and g < 80 and b < 80:
        return "red"
    if b > 150 and r < 80 and g < 80:
        return "blue"
    if max(r, g, b) < 90 and max(r, g, b) - min(r, g, b) < 20:
        return "placeholder"
    return f"rgb({r:.0f},{g:.0f},{b:.0f})"


def _read_output(f):
    """(video frames as [(t, PIL image)] every 0.5 s, mono s16 audio samples, the container's
    duration in s, stream description)."""
    pictures, samples = [], array("h")
    resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
    with av.open(f) as container:
        duration = container.duration / 1e6
        video, audio = container.streams.video[0], container.streams.audio[0]
        info = (container.format.name, video.codec_context.name, video.width, video.height,
                audio.codec_context.name, audio.sample_rate, audio.channels)
        next_t = 0.25
        for frame in container.decode(video, audio):
            if isinstance(frame, av.VideoFrame):
                if frame.time >= next_t - 1e-6:
                    pictures.append((frame.time, frame.to_image()))
                    next_t += 0.5
            else:
                for out in resampler.resample(frame):
                    samples.frombytes(bytes(out.planes[0])[: out.samples * 2])
    return pictures, samples, duration, info


@pytest.mark.one_database  # the rendering is the same whatever the database
def test_process_makes_one_side_by_side_file(app, db, factory, call_720p):
    conference = _conference(app, db, factory, call_720p, CALL_SECONDS)
    recording.ingest_segments(conference)
    db.session.commit()

    sha256 = recording.process(conference.id)

    conference = fresh(db, Conference, conference.id)
    assert conference.recording_state == "done"
    assert conference.recording_sha256 == sha256
    assert conference.processed_at is not None
    storage = get_storage()
    with storage.open(sha256) as f:
        assert hashlib.sha256(f.read()).hexdigest() == sha256
    assert db.session.get(StoredFile, sha256).mime == "video/mp4"
    assert abs(conference.recording_duration_ms / 1000 - CALL_SECONDS) <= 2

    # The thumbnail: a JPEG of the composed picture.
    thumb = db.session.get(StoredFile, conference.recording_thumbnail_sha256)
    assert thumb.mime == "image/jpeg"
    with storage.open(thumb.sha256) as f:
        data = f.read()
    assert data[:3] == b"\xff\xd8\xff"
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.size) == ("JPEG", (1280, 480))

    # Notes: the gap where the client was away, nowhere else; the duration agrees.
    notes = conference.recording_notes
    assert notes["gaps"]["agent"] == []
    [[gap_start, gap_end]] = notes["gaps"]["client"]
    assert abs(gap_start - GAP[0]) < 0.2 and abs(gap_end - GAP[1]) < 0.2
    assert notes["duration_check"]["ok"] is True
    assert abs(notes["duration_check"]["actual_s"] - CALL_SECONDS) <= 2
    assert conference.recording_incomplete is True  # the .part, and the gap
    assert notes["incomplete_segments"]

    with storage.open(sha256) as f:
        pictures, samples, duration, info = _read_output(f)
    assert info == ("mov,mp4,m4a,3gp,3g2,mj2", "h264", 1280, 480, "aac", 48000, 1)
    assert abs(duration - CALL_SECONDS) <= 2

    # Both markers in their panes across the file; the placeholder while the client was away.
    assert len(pictures) >= 40
    for t, picture in pictures:
        assert _pane_colour(picture, 960) == "blue", f"agent pane at {t:.2f} s"
        left = _pane_colour(picture, 320)
        if t < GAP[0] - 0.1 or t > GAP[1] + 0.1:
            assert left == "red", f"client pane at {t:.2f} s: {left}"
        elif GAP[0] + 1.1 < t < GAP[1] - 0.1:
            assert left == "placeholder", f"client pane at {t:.2f} s: {left}"

    # Both tones in the one audio track throughout; the client's silent while away.
    assert abs(len(samples) / 48000 - CALL_SECONDS) <= 2
    for second in range(int(CALL_SECONDS)):
        window = samples[second * 48000 + 12000: second * 48000 + 16800]  # 100 ms
        agent, client = _goertzel_amplitude(window, 1000), _goertzel_amplitude(window, 440)
        assert agent > 3000, f"agent tone at {second} s: {agent:.0f}"
        if second + 0.35 < GAP[0] or second + 0.25 > GAP[1]:
            assert client > 3000, f"client tone at {second} s: {client:.0f}"
        elif GAP[0] < second + 0.25 and second + 0.35 < GAP[1]:
            assert client < 300, f"client tone while away, at {second} s: {client:.0f}"

    [event] = _events(db, "recording.processed")
    details = json.loads(event.details)
    assert details["sha256"] == sha256 and details["gaps"] == {"client": 1, "agent": 0}

    # Idempotent: a second run finds it done.
    assert recording.process(conference.id) == sha256
    assert len(_events(db, "recording.processed")) == 1
    assert not list((recording.recordings_root(app.config) / ".work").iterdir())


def test_processing_failure_is_recorded_and_raised(app, db, factory, call_small):
    conference = _conference(app, db, factory, call_small, SMALL_SECONDS)
    recording.ingest_segments(conference)
    db.session.commit()
    # A recording that stops when it starts cannot be processed.
    conference.recording_stopped_at = conference.recording_started_at
    db.session.commit()

    with pytest.raises(recording.RecordingError, match="no length"):
        recording.process(conference.id)

    conference = fresh(db, Conference, conference.id)
    assert conference.recording_state == "failed"
    assert "no length" in conference.recording_notes["error"]
    [event] = _events(db, "recording.processing_failed")
    assert json.loads(event.details)["will_retry"] is False


# --- through the worker -----------------------------------------------------------------------

def _end_and_enqueue(app, db, conference):
    with writing(db):
        conference = db.session.get(Conference, conference.id)
        recording.ingest_segments(conference)
        recording.enqueue_processing(conference)
    return conference.id


def _done(db, conference_id, timeout=90):
    return wait_until(lambda: (c := fresh(db, Conference, conference_id)).recording_state
                      in ("done", "failed") and c, timeout, interval=0.2,
                      message="the recording processed")


def _job_row_done(db, conference_id):
    """The job's row once `job_context` has closed it (just after the recording's commit)."""
    return wait_until(lambda: (row := fresh(db, BackgroundJob, f"recording-{conference_id}"))
                      is not None and row.status != "running" and row, 30,
                      message="the job's row closed")


def test_worker_processes_the_recording(app, db, factory, call_small, start_worker):
    start_worker()
    conference = _conference(app, db, factory, call_small, SMALL_SECONDS)
    conference_id = _end_and_enqueue(app, db, conference)

    conference = _done(db, conference_id)
    assert conference.recording_state == "done", conference.recording_notes
    assert abs(conference.recording_duration_ms / 1000 - SMALL_SECONDS) <= 2
    assert conference.recording_notes["gaps"] == {"client": [], "agent": []}
    assert conference.recording_incomplete is False
    assert get_storage().exists(conference.recording_sha256)
    row = _job_row_done(db, conference_id)
    assert (row.name, row.status, row.attempts) == ("process_recording", "done", 1)


@pytest.mark.slow
@pytest.mark.one_database
def test_work_horse_killed_while_processing(app, db, factory, call_small, start_worker):
    """SIGKILL on the work-horse in the middle of processing: RQ runs the job again, which
    starts over (the half-written file is discarded) and finishes."""
    app.config["RECORDING_RETRY_INTERVALS"] = [1, 1]
    worker = start_worker()
    conference = _conference(app, db, factory, call_small, SMALL_SECONDS)
    work = recording.recordings_root(app.config) / ".work"
    conference_id = _end_and_enqueue(app, db, conference)

    first = wait_until(lambda: list(work.glob(f"{conference_id}-*.mp4")), 60, interval=0.01,
                       message="the processing under way")
    worker.kill_horse()
    assert fresh(db, Conference, conference_id).recording_state == "processing"
    assert first[0].exists()  # left behind by the killed run

    conference = _done(db, conference_id)
    assert conference.recording_state == "done", conference.recording_notes
    assert abs(conference.recording_duration_ms / 1000 - SMALL_SECONDS) <= 2
    row = _job_row_done(db, conference_id)
    assert (row.status, row.attempts, row.error) == ("done", 2, None)
    assert rq_job(app, f"recording-{conference_id}").retries_left == 1
    assert not first[0].exists()  # the retry removed the dead run's file
    assert len(_events(db, "recording.processed")) == 1


@pytest.mark.browser
def test_chromium_plays_the_file(app, db, factory, call_small, browser):
    """Debian's Chromium plays the processed MP4 (H.264 + AAC) with sound and the right size."""
    conference = _conference(app, db, factory, call_small, SMALL_SECONDS)
    recording.ingest_segments(conference)
    db.session.commit()
    sha256 = recording.process(conference.id)
    with get_storage().open(sha256) as f:
        body = f.read()

    context = browser.new_context()
    page = context.new_page()
    page.route("http://recording.test/**", lambda route: route.fulfill(
        status=200, body=body if route.request.url.endswith(".mp4") else
        "<!doctype html><video id=v muted src='/r.mp4'></video>",
        content_type="video/mp4" if route.request.url.endswith(".mp4") else "text/html"))
    page.goto("http://recording.test/")
    page.evaluate("document.getElementById('v').play()")
    page.wait_for_function("document.getElementById('v').currentTime > 1", timeout=20000)
    played = page.evaluate("""() => { const v = document.getElementById('v');
        return {w: v.videoWidth, h: v.videoHeight, d: v.duration, error: v.error,
                audio: v.mozHasAudio ?? (v.webkitAudioDecodedByteCount > 0)}; }""")
    context.close()
    assert played["error"] is None
    assert (played["w"], played["h"]) == (1280, 480)
    assert abs(played["d"] - SMALL_SECONDS) <= 2
    assert played["audio"] is True
