"""Recording of one participant connection as a series of WebM segments, without transcoding
(docs/media-protocol.md "Recording files", docs/media-design.md §5).

    <record_dir>/<role>-<conn>/series.json
    <record_dir>/<role>-<conn>/00001.webm  (+ 00001.json sidecar once closed)

Rules: a segment starts at a keyframe; from SOFT seconds on, keyframes are requested (PLI every
500 ms, rate-limited per source) and the segment rotates at the next keyframe; a keyframe with
another resolution rotates at once; at HARD seconds the segment is closed and video is dropped
until the next keyframe. Packets are muxed on the event loop (a cheap write); the close (cues,
fsync, rename, sidecar) runs in a thread. Free disk space is checked before each new segment.
"""
import asyncio
import errno
import io
import json
import logging
import os
import shutil
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av

log = logging.getLogger("videoar.media.recorder")

MS = Fraction(1, 1000)
AUDIO_GRACE = 0.25        # a rotated segment stays open this long for late audio
KEYFRAME_REPEAT = 0.5     # while a rotation is due, ask for a keyframe this often
DISK_RECHECK = 5.0        # after a "disk" error, check again at most this often
# OpusHead (RFC 7845 §5.1): version 1, 2 channels, no pre-skip, 48 kHz, gain 0, family 0.
# Browsers send Opus over RTP without pre-skip, so none is declared.
OPUS_HEAD = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 0, 48000, 0, 0)

_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="segment-close")
_opus_template = None


def _template():
    """An Opus stream to copy into each segment (add_stream_from_template): it is never
    opened, so no encoder is initialised per segment. Built once, from one silent frame."""
    global _opus_template
    if _opus_template is None:
        buf = io.BytesIO()
        out = av.open(buf, "w", format="webm")
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "stereo"
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate, frame.pts = 48000, 0
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            out.mux(packet)
        out.close()
        _opus_template = av.open(io.BytesIO(buf.getvalue()), "r", format="webm").streams.audio[0]
    return _opus_template


def free_mb(path) -> float:
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / (1024 * 1024)


def opus_duration_ms(data: bytes) -> float:
    """Duration of one Opus packet from its TOC byte (RFC 6716 §3.1)."""
    if not data:
        return 20.0
    toc = data[0]
    config = toc >> 3
    if config < 12:
        frame = (10, 20, 40, 60)[config % 4]
    elif config < 16:
        frame = (10, 20)[config % 2]
    else:
        frame = (2.5, 5, 10, 20)[config % 4]
    count = toc & 3
    if count == 0:
        frames = 1
    elif count in (1, 2):
        frames = 2
    else:
        frames = (data[1] & 0x3F) if len(data) > 1 else 1
    return frame * max(frames, 1)


def _write_json_atomic(path: Path, data: dict):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Segment:
    """One open `.webm.part` file: stream 0 VP8, stream 1 Opus, time base 1/1000."""

    def __init__(self, directory: Path, seq: int, t0: float, wall_t0: float, width: int,
                 height: int):
        self.directory = directory
        self.seq = seq
        self.t0 = t0                # monotonic capture time of pts 0
        self.wall_t0 = wall_t0      # the same instant, unix time
        self.width, self.height = width, height
        self.path = directory / f"{seq:05d}.webm"
        self.part = directory / f"{seq:05d}.webm.part"
        self.video_frames = 0
        self.audio_packets = 0
        self.last_video = -1
        self.last_audio = -1
        self.audio_end = 0.0
        self.closing = False
        self.container = av.open(str(self.part), "w", format="webm")
        self.video = self.container.add_mux_stream("vp8", width=width, height=height)
        self.video.time_base = MS
        self.audio = self.container.add_stream_from_template(_template())
        self.audio.time_base = MS
        self.audio.codec_context.extradata = OPUS_HEAD

    def age(self, t: float) -> float:
        return t - self.t0

    def write_video(self, data: bytes, t: float, keyframe: bool):
        ms = max(round((t - self.t0) * 1000), self.last_video + 1)
        self._mux(self.video, data, ms, keyframe)
        self.last_video = ms
        self.video_frames += 1

    def write_audio(self, data: bytes, t: float):
        ms = max(round((t - self.t0) * 1000), self.last_audio + 1)
        self._mux(self.audio, data, ms, True)
        self.last_audio = ms
        self.audio_end = max(self.audio_end, ms + opus_duration_ms(data))
        self.audio_packets += 1

    def _mux(self, stream, data, ms, keyframe):
        packet = av.Packet(data)
        packet.stream = stream
        packet.time_base = MS
        packet.pts = packet.dts = ms
        packet.is_keyframe = keyframe
        self.container.mux(packet)

    def duration(self) -> float:
        if self.video_frames > 1:
            interval = self.last_video / (self.video_frames - 1)
        else:
            interval = 1000 / 30
        end = max(self.last_video + interval if self.video_frames else 0, self.audio_end)
        return round(end / 1000, 3)

    def sidecar(self) -> dict:
        return {"seq": self.seq, "start": round(self.wall_t0, 6), "duration": self.duration(),
                "video_frames": self.video_frames, "audio_packets": self.audio_packets,
                "width": self.width, "height": self.height}

    def close_blocking(self) -> dict:
        """Runs in a thread: trailer and cues, fsync, rename, sidecar."""
        self.container.close()
        fd = os.open(self.part, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.part, self.path)
        _fsync_dir(self.directory)
        sidecar = self.sidecar()
        _write_json_atomic(self.directory / f"{self.seq:05d}.json", sidecar)
        return sidecar

    def abandon(self):
        try:
            self.container.close()
        except Exception:
            pass


class SeriesRecorder:
    """Records one participant connection while its room records. Subscribes to the
    participant's audio and video `Source`s; `finalize()` closes the open segment properly."""

    def __init__(self, *, room: str, conn: str, role: str, record_dir, min_free_mb: float,
                 publish, soft: float = 8.0, hard: float = 10.0):
        self.room, self.conn, self.role = room, conn, role
        self.directory = Path(record_dir) / f"{role}-{conn}"
        self.min_free_mb = min_free_mb
        self.publish = publish      # async callable(dict)
        self.soft, self.hard = soft, hard
        self.segment: Segment | None = None
        self.previous: Segment | None = None
        self.sources = {}
        self.closing: set[asyncio.Future] = set()
        self.segments_closed = 0
        self.finalized = False
        self.failed = False
        self._wall_offset = time.time() - time.monotonic()
        self._last_request = -1e9
        self._disk_error_at = None
        self._grace_timer = None
        self._close_chain = None
        self._seq = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, sources: dict):
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = [int(p.name[:5]) for p in self.directory.glob("[0-9][0-9][0-9][0-9][0-9].*")
                    if p.name[:5].isdigit()]
        self._seq = max(existing, default=0)
        series = self.directory / "series.json"
        if not series.exists():
            _write_json_atomic(series, {"room": self.room, "conn": self.conn, "role": self.role,
                                        "started": round(time.time(), 6)})
        for source in sources.values():
            self.attach(source)
        return self

    def attach(self, source):
        """Record `source` (audio or video); called again if the participant's track arrives
        after recording started."""
        old = self.sources.get(source.kind)
        if old is not None:
            old.unsubscribe(self)
        self.sources[source.kind] = source
        source.subscribe(self)
        if source.kind == "video":
            source.request_keyframe()

    async def finalize(self):
        """Stop recording this series: close the open segment(s) and wait for the files."""
        if self.finalized:
            await self._wait_closing()
            return
        self.finalized = True
        for source in self.sources.values():
            source.unsubscribe(self)
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        for segment in (self.previous, self.segment):
            if segment is not None:
                self._close(segment)
        self.previous = self.segment = None
        await self._wait_closing()

    async def _wait_closing(self):
        while self.closing:
            await asyncio.gather(*list(self.closing), return_exceptions=True)

    # -- frames ----------------------------------------------------------------------------
    def push(self, source, frame, pts, keyframe):
        if self.finalized or self.failed or source.anchor is None:
            return
        t = source.capture_time(pts)
        try:
            if source.kind == "video":
                self._video(source, frame, t, keyframe)
            else:
                self._audio(frame, t)
        except Exception as exc:
            self._fail(exc)

    def _video(self, source, frame, t, keyframe):
        segment = self.segment
        if segment is not None:
            age = segment.age(t)
            size = (frame.width, frame.height)
            if keyframe and (age >= self.soft or size != (segment.width, segment.height)):
                self._rotate()
                segment = None
            elif age * 1000 + self._frame_interval(segment) > self.hard * 1000:
                log.info("%s-%s: segment %d cut at %.1f s without a keyframe", self.role,
                         self.conn, segment.seq, age)
                self._rotate()
                source.request_keyframe()
                return
            elif age >= self.soft:
                self._ask_keyframe(source)
        if segment is None:
            if not keyframe:
                self._ask_keyframe(source)
                return
            segment = self._open(t, frame.width, frame.height)
            if segment is None:
                return
        segment.write_video(frame.data, t, keyframe)

    @staticmethod
    def _frame_interval(segment):
        if segment.video_frames > 1:
            return segment.last_video / (segment.video_frames - 1)
        return 1000 / 30

    def _audio(self, frame, t):
        previous, segment = self.previous, self.segment
        if previous is not None and previous.t0 <= t and (segment is None or t < segment.t0):
            target = previous
        elif segment is not None and t >= segment.t0:
            target = segment
        else:
            return  # before the first keyframe, or in a gap after a hard cut
        if (t - target.t0) * 1000 + opus_duration_ms(frame.data) > self.hard * 1000:
            return
        target.write_audio(frame.data, t)

    def _ask_keyframe(self, source):
        now = time.monotonic()
        if now - self._last_request >= KEYFRAME_REPEAT:
            self._last_request = now
            source.request_keyframe()

    # -- segments --------------------------------------------------------------------------
    def _open(self, t, width, height):
        now = time.monotonic()
        if self._disk_error_at is not None and now - self._disk_error_at < DISK_RECHECK:
            return None
        free = free_mb(self.directory)
        if free < self.min_free_mb:
            if self._disk_error_at is None:
                log.warning("%s-%s: only %.0f MB free, not starting a segment", self.role,
                            self.conn, free)
                self._spawn(self.publish({"event": "recording_error", "error": "disk",
                                          "free_mb": int(free), "conn": self.conn,
                                          "role": self.role}))
            self._disk_error_at = now
            return None
        self._disk_error_at = None
        self._seq += 1
        self.segment = Segment(self.directory, self._seq, t, t + self._wall_offset, width, height)
        return self.segment

    def _rotate(self):
        """Close the current segment after a short grace (late audio still goes into it)."""
        if self.previous is not None:
            self._close(self.previous)
        self.previous, self.segment = self.segment, None
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        self._grace_timer = asyncio.get_running_loop().call_later(AUDIO_GRACE, self._close_previous)

    def _close_previous(self):
        self._grace_timer = None
        if self.previous is not None:
            self._close(self.previous)
            self.previous = None

    def _close(self, segment: Segment):
        if segment.closing:
            return
        segment.closing = True
        if self.previous is segment:
            self.previous = None
        if self.segment is segment:
            self.segment = None
        if segment.video_frames == 0:
            segment.abandon()
            segment.part.unlink(missing_ok=True)
            return
        previous = self._close_chain

        async def close():
            # one close at a time per series: files and "segment" events stay in order
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            return await asyncio.get_running_loop().run_in_executor(_executor,
                                                                    segment.close_blocking)

        future = asyncio.ensure_future(close())
        self._close_chain = future
        self.closing.add(future)
        future.add_done_callback(lambda f: self._closed(segment, f))

    def _closed(self, segment, future):
        self.closing.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.error("%s-%s: closing segment %d failed: %s", self.role, self.conn, segment.seq,
                      exc)
            self._fail(exc)
            return
        self.segments_closed += 1
        self._spawn(self.publish({"event": "segment", "conn": self.conn, "role": self.role,
                                  "seq": segment.seq, "path": str(segment.path)}))

    def _fail(self, exc):
        if self.failed:
            return
        self.failed = True
        log.error("%s-%s: recording stopped: %s", self.role, self.conn, exc)
        for segment in (self.previous, self.segment):
            if segment is not None and not segment.closing:
                segment.closing = True
                segment.abandon()
        self.previous = self.segment = None
        disk = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
        event = {"event": "recording_error", "error": "disk" if disk else "io",
                 "conn": self.conn, "role": self.role, "message": str(exc)[:200]}
        if disk:
            event["free_mb"] = int(free_mb(self.directory))
        self._spawn(self.publish(event))

    _tasks: set = set()

    def _spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
