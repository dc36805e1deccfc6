"""The recording after the call: the raw segments hashed into the dossier, then one file that
plays in a browser. See docs/recordings.md.

    recording.ingest_segments(conference)     # at "Encerrar conferência", in its transaction
    recording.enqueue_processing(conference)  # then; the job is enqueued when that commits
    recording.process(conference_id)          # the job's body (app/jobs/recording.py)

The media process writes each participant connection's media as a series of WebM segments
(VP8 + Opus, no transcoding) under `<RECORDINGS_ROOT>/<conference id>/<role>-<conn>/`
(docs/media-protocol.md). Those files and their SHA-256 are the evidence. The processed file is
made from them: both participants side by side on one timeline (client left, agent right), the
two voices mixed into one audio track, H.264 + AAC in an MP4 with its index at the front, and a
JPEG thumbnail, both stored as `StoredFile`s.

Processing holds no database transaction while it decodes and encodes (jobs take SQLite's
write lock up front), writes to a temporary file and records the result in one transaction at
the end, so a worker killed halfway leaves nothing behind and the job simply runs again.
"""
import hashlib
import heapq
import io
import json
import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

from flask import current_app
from sqlalchemy import event, select

from ..extensions import db
from ..models import Conference, RecordingSegment, StoredFile, utcnow
from . import audit, encryption

log = logging.getLogger(__name__)

ROLES = ("client", "agent")  # left pane, right pane
# The output: two panes side by side. 4:3 panes fit a 16:9 camera (letterboxed), a 4:3 one
# exactly and a phone held upright (pillarboxed) at a usable size.
OUTPUT_WIDTH = 1280
OUTPUT_HEIGHT = 480
OUTPUT_FPS = 15
OUTPUT_MIME = "video/mp4"
X264_PRESET = "superfast"
X264_CRF = 26
AUDIO_RATE = 48000
AUDIO_BIT_RATE = 64000
# No video frame for longer than this is a gap: marked in the notes, shown as a placeholder.
GAP_SECONDS = 1.0
# The output's duration may differ from the call's by this much before it is flagged.
DURATION_TOLERANCE_SECONDS = 2.0
# Audio packets closer than this to where the previous one ended are played back to back
# (network jitter); further apart, silence is inserted or the overlap dropped.
AUDIO_SLACK_SAMPLES = AUDIO_RATE * 40 // 1000
# The job's time limit: generous next to the measured ~0.3x of the call's length on one core.
JOB_TIMEOUT_BASE_SECONDS = 120
JOB_TIMEOUT_PER_CALL_SECOND = 3
RETRY_INTERVALS = [30, 120]  # RECORDING_RETRY_INTERVALS overrides; two retries after the first

_PENDING_KEY = "videoar_recordings_to_enqueue"
_WORK_DIR = ".work"


class RecordingError(Exception):
    pass


def recordings_root(config) -> Path:
    """RECORDINGS_ROOT, or `<INSTANCE_DIR>/recordings` when it is empty."""
    return Path(config.get("RECORDINGS_ROOT") or Path(config["INSTANCE_DIR"]) / "recordings")


def _keyring():
    return encryption.get_keyring()


def _sha256_file(path: Path) -> tuple[str, int]:
    """SHA-256 and size of the segment's media: of the plaintext, whether the file is still
    as the media process wrote it or already encrypted at rest."""
    return encryption.sha256_of(path, _keyring)


def _from_unix(value) -> datetime:
    return datetime.fromtimestamp(float(value), timezone.utc)


def _unix(value: datetime) -> float:
    return value.timestamp()


def combined_digest(segments) -> str:
    """SHA-256 over every segment's identity and digest, in a fixed order: one value that
    stands for the whole set of raw files."""
    lines = sorted(f"{s.role} {s.conn_id} {s.seq:05d} {s.sha256} {s.size}\n" for s in segments)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# --- ingest -----------------------------------------------------------------------------------

def ingest_segments(conference) -> list[RecordingSegment]:
    """Hash every closed segment on disk (those with a sidecar `.json`) into a
    `RecordingSegment` row of `conference`; segments already recorded are skipped. A `.part`
    file with no sidecar (the segment open when the media process died), or a segment without
    its sidecar, marks the recording incomplete. Runs in the caller's transaction; returns the
    rows it created."""
    root = recordings_root(current_app.config)
    room_dir = root / str(conference.id)
    existing = {(s.conn_id, s.seq) for s in db.session.execute(
        select(RecordingSegment).where(RecordingSegment.conference_id == conference.id)
    ).scalars()}
    created, incomplete, problems = [], [], []
    series_dirs = sorted(p for p in room_dir.iterdir() if p.is_dir()) if room_dir.is_dir() else []
    for series_dir in series_dirs:
        role, _, conn = series_dir.name.partition("-")
        if role not in ROLES or not conn:
            continue
        for sidecar in sorted(series_dir.glob("[0-9]*.json")):
            rel = f"{conference.id}/{series_dir.name}/{sidecar.stem}.webm"
            webm = series_dir / f"{sidecar.stem}.webm"
            try:
                meta = json.loads(sidecar.read_text())
                seq = int(meta.get("seq", sidecar.stem))
                start = float(meta["start"])
                duration_ms = int(round(float(meta.get("duration", 0)) * 1000))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                problems.append({"path": rel, "error": f"unreadable sidecar: {exc}"})
                continue
            if (conn, seq) in existing:
                continue
            if not webm.is_file():
                problems.append({"path": rel, "error": "sidecar without its segment"})
                continue
            try:
                sha256, size = _sha256_file(webm)
            except encryption.IntegrityError as exc:
                problems.append({"path": rel, "error": f"unreadable segment: {exc}"})
                continue
            segment = RecordingSegment(
                conference=conference, conn_id=conn, role=role, seq=seq, path=rel,
                sha256=sha256, size=size, started_at=_from_unix(start), duration_ms=duration_ms,
                width=meta.get("width"), height=meta.get("height"),
                video_frames=int(meta.get("video_frames") or 0),
                audio_packets=int(meta.get("audio_packets") or 0))
            db.session.add(segment)
            existing.add((conn, seq))
            created.append(segment)
        for leftover in sorted(series_dir.iterdir()):
            name = leftover.name
            if name.endswith(".part"):
                stem = name.split(".", 1)[0]
                if not (series_dir / f"{stem}.json").exists():
                    incomplete.append(f"{conference.id}/{series_dir.name}/{name}")
            elif name.endswith(".webm") and not (series_dir / f"{leftover.stem}.json").exists():
                incomplete.append(f"{conference.id}/{series_dir.name}/{name}")

    notes = dict(conference.recording_notes or {})
    changed = False
    new_incomplete = sorted(set(incomplete) - set(notes.get("incomplete_segments", [])))
    if new_incomplete:
        notes["incomplete_segments"] = sorted(set(notes.get("incomplete_segments", []))
                                              | set(new_incomplete))
        changed = True
    known = {p["path"] for p in notes.get("segment_problems", [])}
    problems = [p for p in problems if p["path"] not in known]
    if problems:
        notes["segment_problems"] = notes.get("segment_problems", []) + problems
        changed = True
    if new_incomplete or problems:
        conference.recording_incomplete = True
    if changed:
        conference.recording_notes = notes
    if created or changed:
        db.session.flush()
        every = db.session.execute(select(RecordingSegment).where(
            RecordingSegment.conference_id == conference.id)).scalars().all()
        audit.record("recording.segments_hashed", actor=audit.SYSTEM, obj=conference,
                     cert_request=conference.request,
                     details={"count": len(created), "total": len(every),
                              "bytes": sum(s.size for s in every),
                              "digest": combined_digest(every),
                              "incomplete": new_incomplete or None,
                              "problems": len(problems) or None})
    return created


# --- enqueueing -------------------------------------------------------------------------------

def call_seconds(conference, segments=None) -> float:
    """The recording's length: recording start to stop, else first segment start to last end."""
    segments = segments if segments is not None else conference.segments
    start = conference.recording_started_at
    stop = conference.recording_stopped_at
    if start is None and segments:
        start = min(s.started_at for s in segments)
    if stop is None and segments:
        stop = max(_from_unix(_unix(s.started_at) + s.duration_ms / 1000) for s in segments)
    if start is None or stop is None:
        return 0.0
    return max(0.0, (stop - start).total_seconds())


def job_timeout(seconds: float) -> int:
    return int(JOB_TIMEOUT_BASE_SECONDS + JOB_TIMEOUT_PER_CALL_SECOND * seconds)


def job_id(conference_id: int) -> str:
    return f"recording-{conference_id}"


def enqueue_processing(conference):
    """Set the recording `processing` and enqueue its job (`recording-<id>`) once the caller's
    transaction commits (a rollback enqueues nothing). Enqueueing is idempotent: a job still
    waiting or running is left alone."""
    conference.recording_state = "processing"
    pending = db.session().info.setdefault(_PENDING_KEY, {})
    pending[conference.id] = call_seconds(conference)


@event.listens_for(db.session.__class__, "after_commit", propagate=True)
def _after_commit(session):  # pragma: no cover - exercised by the processing tests
    pending = session.info.pop(_PENDING_KEY, None)
    for conference_id, seconds in (pending or {}).items():
        try:
            enqueue_job(conference_id, seconds)
        except Exception:  # Redis down: the sweep enqueues it later
            log.warning("recording %s: processing not enqueued; the sweep will retry",
                        conference_id)


@event.listens_for(db.session.__class__, "after_rollback", propagate=True)
def _after_rollback(session):
    session.info.pop(_PENDING_KEY, None)


def enqueue_job(conference_id: int, seconds: float):
    """Enqueue `app.jobs.recording.process_recording` now (no transaction needed)."""
    from rq import Retry

    from ..jobs import enqueue

    intervals = list(current_app.config.get("RECORDING_RETRY_INTERVALS", RETRY_INTERVALS))
    return enqueue("app.jobs.recording.process_recording", conference_id, queue="default",
                   job_id=job_id(conference_id), name="process_recording",
                   description=f"recording {conference_id}",
                   retry=Retry(max=len(intervals), interval=intervals) if intervals else None,
                   job_timeout=job_timeout(seconds))


# --- processing -------------------------------------------------------------------------------

@dataclass
class _Segment:
    role: str
    conn: str
    seq: int
    path: Path
    rel: str
    sha256: str
    start: float  # unix time of pts 0
    duration: float


@dataclass
class RenderResult:
    frames: int
    duration: float  # of the output, probed from the file
    gaps: dict  # role -> [[start s, end s], …] from the timeline's start
    first_frame: dict  # role -> s of the first frame, or None
    last_frame: dict
    decode_errors: list
    thumbnail: bytes


def process(conference_id: int, *, will_retry: bool = False, force: bool = False):
    """Make the browser-playable file of the recording and store it (see the module's
    docstring). Idempotent: a recording already `done` is left alone unless `force`.
    On an error the recording is `failed` (or stays `processing` when `will_retry`, as RQ
    will run the job again), the reason goes to the notes and the audit trail, and the
    exception is raised again."""
    conference = db.session.get(Conference, conference_id)
    if conference is None:
        raise RecordingError(f"conference {conference_id} not found")
    storage = _storage()
    done_sha256 = conference.recording_sha256
    if (not force and conference.recording_state == "done" and done_sha256
            and storage.exists(done_sha256)):
        db.session.commit()
        return done_sha256
    root = recordings_root(current_app.config)
    work_dir = root / _WORK_DIR
    out_path = work_dir / f"{conference_id}-{os.getpid()}.mp4"
    started = time.monotonic()
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(work_dir, conference_id)
        rows = db.session.execute(select(RecordingSegment).where(
            RecordingSegment.conference_id == conference_id)).scalars().all()
        if not rows:
            ingest_segments(conference)
            rows = list(conference.segments)
        if not rows:
            raise RecordingError("no segments were recorded")
        t0 = conference.recording_started_at or min(s.started_at for s in rows)
        t_end = conference.recording_stopped_at or max(
            _from_unix(_unix(s.started_at) + s.duration_ms / 1000) for s in rows)
        t0, t_end = _unix(t0), _unix(t_end)
        segments = [_Segment(s.role, s.conn_id, s.seq, root / s.path, s.path, s.sha256,
                             _unix(s.started_at), s.duration_ms / 1000) for s in rows]
        if conference.recording_state != "processing":
            conference.recording_state = "processing"
        db.session.commit()  # no transaction (nor SQLite's write lock) while we work

        # First of all (even for a recording that turns out unusable): the raw segments are
        # checked against the dossier's digests and encrypted at rest, in one read.
        missing, changed, usable = _seal_segments(segments)
        if t_end - t0 <= 0:
            raise RecordingError("the recording has no length")
        threads = int(current_app.config.get("RECORDING_DECODE_THREADS", 1))
        result = render(usable, t0, t_end, out_path, decode_threads=threads)

        blob_video = _put_file(storage, out_path)
        blob_thumb = storage.put(result.thumbnail, encrypt=True)
        elapsed = time.monotonic() - started
        _finish(conference_id, t0, t_end, result, blob_video, blob_thumb, missing, changed,
                elapsed, force)
        return blob_video.sha256
    except Exception as exc:
        db.session.rollback()
        _record_failure(conference_id, exc, will_retry)
        raise
    finally:
        out_path.unlink(missing_ok=True)


def _storage():
    from .storage import get_storage

    return get_storage()


def _put_file(storage, path: Path):
    with open(path, "rb") as f:  # streamed by the storage in chunks: never all in memory
        return storage.put(f, encrypt=True)


def _seal_segments(segments):
    """(missing, changed, usable) segments. Each raw segment still in clear (as the media
    process wrote it) or under an older data key is encrypted in place under the current key
    (atomic rename; the plaintext's digest, the evidence, is unchanged) while its digest is
    checked; one already encrypted is decrypted to check it. A segment that is gone is
    missing; one whose content differs from the dossier's digest, or fails authentication,
    is changed."""
    keyring = _keyring()
    missing, changed, usable = [], [], []
    for seg in segments:
        if not seg.path.is_file():
            missing.append(seg.rel)
            continue
        try:
            if encryption.needs_sealing(seg.path, keyring):
                encryption.remove_stale_seal_files(seg.path.parent, seg.path.name)
                sha256 = encryption.seal_file(seg.path, keyring).sha256
            else:
                sha256 = encryption.sha256_of(seg.path, keyring)[0]
        except encryption.IntegrityError as exc:
            log.warning("recording segment %s fails authentication: %s", seg.rel, exc)
            sha256 = None
        if sha256 != seg.sha256:
            changed.append(seg.rel)
        else:
            usable.append(seg)
    return missing, changed, usable


def _remove_leftovers(work_dir: Path, conference_id: int):
    """Temporary files of an earlier run of this conference's job (killed halfway)."""
    for path in work_dir.glob(f"{conference_id}-*.mp4"):
        try:
            pid = int(path.stem.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid == os.getpid() or not _pid_alive(pid):
            path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _finish(conference_id, t0, t_end, result, blob_video, blob_thumb, missing, changed,
            elapsed, force):
    conference = db.session.get(Conference, conference_id, with_for_update=True)
    if (not force and conference.recording_state == "done" and conference.recording_sha256):
        db.session.commit()  # another run of the same job finished first
        return
    for blob, mime in ((blob_video, OUTPUT_MIME), (blob_thumb, "image/jpeg")):
        if db.session.get(StoredFile, blob.sha256) is None:
            db.session.add(StoredFile(sha256=blob.sha256, size=blob.size, mime=mime))
    expected = t_end - t0
    difference = result.duration - expected
    duration_check = {"expected_s": round(expected, 3), "actual_s": round(result.duration, 3),
                      "difference_s": round(difference, 3),
                      "ok": abs(difference) <= DURATION_TOLERANCE_SECONDS}
    interior = {role: [g for g in gaps if result.first_frame[role] is not None
                       and g[0] >= result.first_frame[role] - 1e-6
                       and g[1] <= (result.last_frame[role] or 0) + 1e-6]
                for role, gaps in result.gaps.items()}
    notes = dict(conference.recording_notes or {})
    notes.pop("error", None)
    notes.update({
        "gaps": result.gaps,
        "duration_check": duration_check,
        "output": {"width": OUTPUT_WIDTH, "height": OUTPUT_HEIGHT, "fps": OUTPUT_FPS,
                   "video": "h264", "audio": "aac", "container": "mp4",
                   "frames": result.frames, "processing_s": round(elapsed, 1)},
    })
    if result.decode_errors:
        notes["decode_errors"] = result.decode_errors[:50]
    if missing:
        notes["missing_segments"] = missing
    if changed:
        notes["changed_segments"] = changed
    if missing or changed or any(interior.values()) or not duration_check["ok"] or any(
            result.first_frame[role] is None for role in ROLES):
        conference.recording_incomplete = True
    conference.recording_notes = notes
    conference.recording_sha256 = blob_video.sha256
    conference.recording_thumbnail_sha256 = blob_thumb.sha256
    conference.recording_duration_ms = int(round(result.duration * 1000))
    conference.processed_at = utcnow()
    conference.recording_state = "done"
    audit.record("recording.processed", actor=audit.SYSTEM, obj=conference,
                 cert_request=conference.request,
                 details={"sha256": blob_video.sha256, "size": blob_video.size,
                          "thumbnail_sha256": blob_thumb.sha256,
                          "duration_ms": conference.recording_duration_ms,
                          "duration_ok": duration_check["ok"],
                          "gaps": {r: len(g) for r, g in result.gaps.items()},
                          "missing": len(missing) or None, "changed": changed or None,
                          "incomplete": conference.recording_incomplete})
    db.session.commit()


def _record_failure(conference_id, exc, will_retry):
    try:
        conference = db.session.get(Conference, conference_id)
        if conference is None:
            return
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        notes = dict(conference.recording_notes or {})
        notes["error"] = reason
        notes.setdefault("attempt_errors", []).append({"at": utcnow().isoformat(),
                                                       "error": reason})
        conference.recording_notes = notes
        if conference.recording_state != "done":
            conference.recording_state = "processing" if will_retry else "failed"
        audit.record("recording.processing_failed", actor=audit.SYSTEM, obj=conference,
                     cert_request=conference.request,
                     details={"error": reason, "will_retry": will_retry})
        db.session.commit()
    except Exception:
        db.session.rollback()
        log.exception("recording %s: could not record the failure", conference_id)


# --- rendering (no database) ------------------------------------------------------------------

def render(segments, t0: float, t_end: float, out_path, *, fps: int = OUTPUT_FPS,
           width: int = OUTPUT_WIDTH, height: int = OUTPUT_HEIGHT,
           decode_threads: int = 1) -> RenderResult:
    """Decode `segments` and write the side-by-side MP4 to `out_path`; the timeline runs from
    unix time `t0` to `t_end`, each segment placed by its wall-clock start."""
    import av

    length = t_end - t0
    n_frames = max(1, math.ceil(length * fps - 1e-9))
    pane_w, pane_h = width // 2, height
    decode_errors = []
    tracks = {role: _Track(role, [s for s in segments if s.role == role], t0, length,
                           decode_threads, decode_errors) for role in ROLES}
    canvas = _Canvas(width, height)
    placeholder = _placeholder_planes(pane_w, pane_h)
    shown = {role: None for role in ROLES}  # what each pane shows: a frame id or "placeholder"

    out = av.open(str(out_path), "w", format="mp4", options={"movflags": "+faststart"})
    vstream = out.add_stream("libx264", rate=fps)
    vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
    vstream.codec_context.thread_count = 1
    vstream.codec_context.gop_size = fps * 2
    vstream.codec_context.options = {"preset": X264_PRESET, "crf": str(X264_CRF)}
    astream = out.add_stream("aac", rate=AUDIO_RATE)
    astream.layout = "mono"
    astream.bit_rate = AUDIO_BIT_RATE
    mixer = _Mixer(tracks["client"].pcm, tracks["agent"].pcm)
    thumbnail = None
    try:
        for k in range(n_frames):
            now = k / fps
            for index, role in enumerate(ROLES):
                track = tracks[role]
                track.advance(now)
                x = index * pane_w
                if track.frame is not None and now - track.frame_time <= GAP_SECONDS:
                    if shown[role] != track.frame_serial:
                        canvas.paint_frame(x, pane_w, pane_h, track.frame)
                        shown[role] = track.frame_serial
                elif shown[role] != "placeholder":
                    canvas.paint(x, pane_w, pane_h, placeholder)
                    shown[role] = "placeholder"
            frame = canvas.frame()
            frame.pts = k
            if k == n_frames // 2:
                thumbnail = _jpeg(frame)
            for packet in vstream.encode(frame):
                out.mux(packet)
            # Mix the audio up to a little behind the video clock: audio of a segment can be
            # demuxed a bit later than video of the same time.
            for aframe in mixer.mix_until(max(0, int((now - 0.5) * AUDIO_RATE))):
                for packet in astream.encode(aframe):
                    out.mux(packet)
        end = n_frames / fps
        for role in ROLES:
            tracks[role].finish(end)
        for aframe in mixer.mix_until(int(round(end * AUDIO_RATE)), final=True):
            for packet in astream.encode(aframe):
                out.mux(packet)
        for packet in vstream.encode(None):
            out.mux(packet)
        for packet in astream.encode(None):
            out.mux(packet)
    finally:
        out.close()
        for track in tracks.values():
            track.close()
    with av.open(str(out_path)) as probe:
        duration = (probe.duration or 0) / 1_000_000
    return RenderResult(
        frames=n_frames, duration=duration,
        gaps={role: [[round(a, 3), round(b, 3)] for a, b in tracks[role].gaps] for role in ROLES},
        first_frame={role: tracks[role].first_seen for role in ROLES},
        last_frame={role: tracks[role].last_seen for role in ROLES},
        decode_errors=decode_errors, thumbnail=thumbnail)


def _jpeg(frame) -> bytes:
    buf = io.BytesIO()
    frame.to_image().save(buf, "JPEG", quality=85)
    return buf.getvalue()


class _Pcm:
    """One participant's audio on the timeline: mono s16 samples from sample `base` on."""

    def __init__(self):
        self.base = 0
        self.buf = bytearray()

    @property
    def end(self) -> int:
        return self.base + len(self.buf) // 2

    def put(self, pos: int, data: bytes):
        end = self.end
        if pos > end + AUDIO_SLACK_SAMPLES:  # a hole: silence
            self.buf += bytes((pos - end) * 2)
        elif pos < end - AUDIO_SLACK_SAMPLES:  # overlaps what is there (or already mixed)
            cut = (end - pos) * 2
            if cut >= len(data):
                return
            data = data[cut:]
        self.buf += data

    def take(self, n: int) -> bytes:
        have = min(n, len(self.buf) // 2) * 2
        out = bytes(self.buf[:have])
        del self.buf[:have]
        self.base += n
        if have < n * 2:
            out += bytes(n * 2 - have)
        return out


class _Mixer:
    """Sums the two participants' audio into one mono track (libavfilter's `pan`)."""

    def __init__(self, left: _Pcm, right: _Pcm):
        import av.filter

        self.left, self.right = left, right
        self.cursor = 0
        self.graph = av.filter.Graph()
        src = self.graph.add_abuffer(format="s16p", sample_rate=AUDIO_RATE, layout="stereo",
                                     time_base=Fraction(1, AUDIO_RATE))
        fmt = self.graph.add("aformat", "sample_fmts=fltp")
        pan = self.graph.add("pan", "mono|c0=c0+c1")
        sink = self.graph.add("abuffersink")
        src.link_to(fmt)
        fmt.link_to(pan)
        pan.link_to(sink)
        self.graph.configure()
        self.src, self.sink = src, sink

    def mix_until(self, target: int, final: bool = False):
        from av.audio.frame import AudioFrame

        out = []
        while self.cursor < target:
            n = min(target - self.cursor, AUDIO_RATE)
            frame = AudioFrame(format="s16p", layout="stereo", samples=n)
            frame.sample_rate = AUDIO_RATE
            frame.time_base = Fraction(1, AUDIO_RATE)
            frame.pts = self.cursor
            frame.planes[0].update(self.left.take(n))
            frame.planes[1].update(self.right.take(n))
            self.cursor += n
            self.src.push(frame)
            out.extend(self._drain())
        if final:
            self.src.push(None)
            out.extend(self._drain())
        return out

    def _drain(self):
        import av

        frames = []
        while True:
            try:
                frames.append(self.sink.pull())
            except (BlockingIOError, av.error.EOFError):
                return frames


class _Track:
    """One role's media in timeline order, across its segments and series: the latest video
    frame at the clock, the gaps in its video, its audio placed into a `_Pcm`."""

    def __init__(self, role, segments, t0, length, threads, errors):
        self.role = role
        self.t0 = t0
        self.length = length
        self.threads = threads
        self.errors = errors
        self.pending = deque(sorted(segments, key=lambda s: (s.start, s.conn, s.seq)))
        self.heap = []
        self.counter = 0
        self.open_iters = set()
        self.frame = None
        self.frame_time = None
        self.frame_serial = 0
        self.pcm = _Pcm()
        self.gaps = []
        self.last_seen = None
        self.first_seen = None
        self.next_event = None
        self.done = False

    def _open_next(self):
        seg = self.pending.popleft()
        it = _segment_events(seg, self.t0, self.threads, self.errors)
        self.open_iters.add(it)
        first = next(it, None)
        if first is None:
            self.open_iters.discard(it)
        else:
            self.counter += 1
            heapq.heappush(self.heap, (first[0], self.counter, first, it))

    def _next(self):
        while self.pending and (not self.heap or
                                self.pending[0].start - self.t0 <= self.heap[0][0]):
            self._open_next()
        if not self.heap:
            return None
        _, _, ev, it = heapq.heappop(self.heap)
        nxt = next(it, None)
        if nxt is None:
            self.open_iters.discard(it)
        else:
            self.counter += 1
            heapq.heappush(self.heap, (nxt[0], self.counter, nxt, it))
        return ev

    def advance(self, now: float):
        """Take in every event up to the time `now` (s from the timeline's start)."""
        while True:
            if self.next_event is None:
                if self.done:
                    return
                self.next_event = self._next()
                if self.next_event is None:
                    self.done = True
                    return
            t, kind, payload = self.next_event
            if t > now:
                return
            self.next_event = None
            if kind == "v":
                self._saw_frame(t)
                self.frame, self.frame_time = payload, t
                self.frame_serial += 1
            else:
                self.pcm.put(int(round(t * AUDIO_RATE)), payload)

    def _saw_frame(self, t: float):
        t = min(max(t, 0.0), self.length)
        if self.last_seen is None:
            if t > GAP_SECONDS:
                self.gaps.append((0.0, t))
            self.first_seen = t
        elif t - self.last_seen > GAP_SECONDS:
            self.gaps.append((self.last_seen, t))
        self.last_seen = t if self.last_seen is None else max(self.last_seen, t)

    def finish(self, end: float):
        """Take in what is left (audio up to `end`) and close the gap list."""
        self.advance(end)
        if self.last_seen is None:
            self.gaps.append((0.0, self.length))
        elif self.length - self.last_seen > GAP_SECONDS:
            self.gaps.append((self.last_seen, self.length))

    def close(self):
        for it in self.open_iters:
            it.close()


def _segment_events(seg: _Segment, t0: float, threads: int, errors: list):
    """(time from the timeline's start, "v", VideoFrame) and (time, "a", mono s16 bytes) of one
    segment, in file order."""
    import av
    from av.audio.resampler import AudioResampler
    from av.codec.context import Flags2

    source = None
    try:
        # An encrypted segment is read through the decrypting reader (seekable, chunk by
        # chunk); a plain one by FFmpeg itself, as before.
        if encryption.is_encrypted(seg.path):
            source = encryption.open_path(seg.path, _keyring)
        container = av.open(source if source is not None else str(seg.path))
    except (av.error.FFmpegError, encryption.EncryptionError, OSError) as exc:
        if source is not None:
            source.close()
        errors.append({"segment": seg.rel, "error": str(exc)})
        return
    try:
        offset = seg.start - t0
        vstream = next((s for s in container.streams if s.type == "video"), None)
        astream = next((s for s in container.streams if s.type == "audio"), None)
        streams = [s for s in (vstream, astream) if s is not None]
        if vstream is not None:
            vctx = vstream.codec_context
            vctx.thread_count = threads
            if threads != 1:
                vctx.thread_type = "AUTO"
        if astream is not None:
            actx = astream.codec_context
            # Each segment's packets continue one stream: the header's pre-skip is not real.
            actx.flags2 = actx.flags2 | Flags2.skip_manual
            resampler = AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
        failures = 0
        for packet in container.demux(*streams):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                failures += 1
                if failures <= 3:
                    errors.append({"segment": seg.rel, "pts": packet.pts, "error": str(exc)})
                continue
            for frame in frames:
                if frame.pts is None:
                    continue
                t = offset + float(frame.pts * frame.time_base)
                if packet.stream is vstream:
                    yield (t, "v", frame)
                else:
                    data = b"".join(bytes(f.planes[0])[: f.samples * 2]
                                    for f in resampler.resample(frame))
                    if data:
                        yield (t, "a", data)
    finally:
        container.close()
        if source is not None:
            source.close()


class _Canvas:
    """The output picture (yuv420p), kept between frames: a pane is painted only when what it
    shows changes."""

    def __init__(self, width, height):
        self.width, self.height = width, height
        self.planes = [bytearray(b"\x10" * (width * height)),
                       bytearray(b"\x80" * (width * height // 4)),
                       bytearray(b"\x80" * (width * height // 4))]
        self.fits = {}
        self.scalers = {}  # one per pane: it keeps its scaling context between frames

    def paint(self, x, w, h, planes):
        """Copy pane-sized planes (yuv420p bytes, no padding) to the pane at `x`."""
        for index, data in enumerate(planes):
            sub = 1 if index == 0 else 2
            pw, ph, px, stride = w // sub, h // sub, x // sub, self.width // sub
            target = self.planes[index]
            for row in range(ph):
                target[row * stride + px: row * stride + px + pw] = data[row * pw:(row + 1) * pw]

    def paint_frame(self, x, w, h, frame):
        fit = self._fit(frame.width, frame.height, w, h)
        fw, fh, ox, oy = fit
        if self.fits.get(x) != fit:
            self.paint(x, w, h, _solid_planes(w, h, 16))  # letterbox bars
            self.fits[x] = fit
        scaler = self.scalers.get(x)
        if scaler is None:
            from av.video.reformatter import VideoReformatter

            scaler = self.scalers[x] = VideoReformatter()
        scaled = scaler.reformat(frame, width=fw, height=fh, format="yuv420p",
                                 interpolation="AREA")
        for index, plane in enumerate(scaled.planes):
            sub = 1 if index == 0 else 2
            pw, ph = fw // sub, fh // sub
            px, py, stride = (x + ox) // sub, oy // sub, self.width // sub
            src = memoryview(plane)
            line = plane.line_size
            target = self.planes[index]
            for row in range(ph):
                start = (py + row) * stride + px
                target[start:start + pw] = src[row * line: row * line + pw]

    @staticmethod
    def _fit(sw, sh, w, h):
        scale = min(w / sw, h / sh)
        fw = max(2, int(sw * scale) // 2 * 2)
        fh = max(2, int(sh * scale) // 2 * 2)
        return fw, fh, (w - fw) // 4 * 2, (h - fh) // 4 * 2

    def frame(self):
        from av.video.frame import VideoFrame

        frame = VideoFrame(self.width, self.height, "yuv420p")
        for index, plane in enumerate(frame.planes):
            sub = 1 if index == 0 else 2
            w = self.width // sub
            if plane.line_size == w:
                plane.update(self.planes[index])
            else:
                data = self.planes[index]
                pad = b"\0" * (plane.line_size - w)
                plane.update(b"".join(bytes(data[r * w:(r + 1) * w]) + pad
                                      for r in range(self.height // sub)))
        return frame


_solid_cache = {}


def _solid_planes(w, h, y):
    key = (w, h, y)
    if key not in _solid_cache:
        _solid_cache[key] = (bytes([y]) * (w * h), b"\x80" * (w * h // 4),
                             b"\x80" * (w * h // 4))
    return _solid_cache[key]


def _placeholder_planes(w, h):
    """A dark pane with a light silhouette (head and shoulders): "no video here", no text."""
    bg, fg = 34, 62
    cx, head_cy, head_r = w / 2, h * 0.40, h * 0.13
    sh_cy, sh_rx, sh_ry = h * 0.80, h * 0.27, h * 0.22
    rows = []
    for y in range(h):
        row = bytearray([bg]) * w
        dy = y - head_cy
        if abs(dy) < head_r:
            half = math.sqrt(head_r * head_r - dy * dy)
            row[int(cx - half):int(cx + half)] = bytes([fg]) * (int(cx + half) - int(cx - half))
        dy = y - sh_cy
        if -sh_ry < dy < 0 or (0 <= dy and y < h * 0.86):
            ratio = min(1.0, abs(dy) / sh_ry) if dy < 0 else 0.0
            half = sh_rx * math.sqrt(max(0.0, 1 - ratio * ratio))
            row[int(cx - half):int(cx + half)] = bytes([fg]) * (int(cx + half) - int(cx - half))
        rows.append(bytes(row))
    return (b"".join(rows), b"\x80" * (w * h // 4), b"\x80" * (w * h // 4))
