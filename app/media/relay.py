"""Relay of encoded frames between the two participants of a room (docs/media-design.md §3, §4).

A `Source` reads one received track (audio or video) of one participant, puts its timestamps on
a continuous clock, and pushes every frame to its subscribers (the other participant's
`ForwardTrack` and the recorder). A `ForwardTrack` belongs to the *destination* peer: it is
the track of that peer's sender, lives as long as that peer, and is fed by whichever source
is current (a rejoin of the other side switches the source; pts are rebased so they keep
increasing). Each subscriber builds its own `av.Packet`: nothing is shared.
"""
import asyncio
import logging
import time

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from . import aiortc_hook

log = logging.getLogger("videoar.media.relay")

PLI_MIN_INTERVAL = 0.3          # at most one upstream PLI per source per 300 ms
DISCONTINUITY_SECONDS = 10.0    # a pts jump beyond this (or backwards) is re-based
# Delay added by aiortc's jitter buffer before a frame leaves the receiver: audio waits for
# 4 more frames (prefetch=4, 20 ms each), video for the first packet of the next frame.
JITTER_DELAY = {"audio": 0.080, "video": 1 / 30}
NOMINAL_STEP = {"audio": 960, "video": 3000}   # one frame, in the track's clock (48k / 90k)
QUEUE_SIZE = {"audio": 50, "video": 30}


class Source:
    """One received track of one participant: fan-out, continuous pts, PLI upstream."""

    def __init__(self, kind: str, track, receiver, label: str = ""):
        self.kind = kind
        self.track = track
        self.receiver = receiver
        self.label = label
        self.subscribers: list = []
        self.frames = 0
        self.keyframes = 0
        self.plis_sent = 0
        self.plis_requested = 0
        self.broken = False         # packets were lost: drop delta frames until a keyframe
        self.losses = 0
        self.dropped = 0
        self.anchor = None          # monotonic time of pts 0 (capture-time estimate)
        self.clock = None
        self._offset = 0            # added to the receiver's pts
        self._last_raw = None
        self._last_pts = None
        self._last_arrival = None
        self._last_pli = -1e9
        self._pli_timer = None
        self._task = None
        self.ended = asyncio.Event()

    def start(self):
        self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self):
        if self._pli_timer is not None:
            self._pli_timer.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self.subscribers = []
        self.ended.set()

    def subscribe(self, subscriber):
        if subscriber not in self.subscribers:
            self.subscribers.append(subscriber)

    def unsubscribe(self, subscriber):
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)

    def picture_lost(self):
        """aiortc's jitter buffer lost packets (it sent a PLI itself)."""
        if self.kind == "video" and not self.broken:
            self.broken = True
            self.losses += 1

    def capture_time(self, pts: int) -> float:
        """Monotonic time at which the frame with (continuous) `pts` was captured, estimated."""
        return self.anchor + pts / self.clock

    # -- keyframe requests -------------------------------------------------------------
    def request_keyframe(self):
        """Rate-limited PLI to the sender: bursts within 300 ms merge into one deferred PLI."""
        if self.kind != "video" or self.receiver is None:
            return
        self.plis_requested += 1
        now = time.monotonic()
        wait = self._last_pli + PLI_MIN_INTERVAL - now
        if wait <= 0:
            self._send_pli(now)
        elif self._pli_timer is None:
            self._pli_timer = asyncio.get_running_loop().call_later(wait, self._deferred_pli)

    def _deferred_pli(self):
        self._pli_timer = None
        self._send_pli(time.monotonic())

    def _send_pli(self, now):
        self._last_pli = now
        if aiortc_hook.send_pli(self.receiver):
            self.plis_sent += 1

    # -- the fan-out ---------------------------------------------------------------------
    async def _run(self):
        try:
            while True:
                try:
                    frame = await self.track.recv()
                except MediaStreamError:
                    break
                self._dispatch(frame)
        finally:
            self.ended.set()

    def _dispatch(self, frame):
        arrival = getattr(frame, "arrival", 0.0) or time.monotonic()
        raw = frame.pts
        if raw is None:
            return
        if self.clock is None:
            self.clock = int(1 / frame.time_base) if frame.time_base else (
                90000 if self.kind == "video" else 48000)
            self.anchor = arrival - JITTER_DELAY[self.kind]
            self._offset = -raw
        elif raw - self._last_raw < 0 or raw - self._last_raw > DISCONTINUITY_SECONDS * self.clock:
            # aiortc's TimestampMapper treats any backward step as a wrap (+2^32) and a new
            # SSRC starts elsewhere: continue from the last pts, advanced by the wall time.
            gap = max(NOMINAL_STEP[self.kind],
                      int((arrival - self._last_arrival) * self.clock))
            self._offset = self._last_pts + gap - raw
            log.info("%s %s: timestamp discontinuity (%d -> %d), re-based", self.label,
                     self.kind, self._last_raw, raw)
        pts = raw + self._offset
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_raw, self._last_pts, self._last_arrival = raw, pts, arrival
        self.frames += 1
        keyframe = getattr(frame, "keyframe", None)
        if keyframe is None:  # decoded frame (transcode mode)
            keyframe = bool(getattr(frame, "key_frame", False))
        elif self.kind == "video":
            if keyframe:
                self.keyframes += 1
                self.broken = False
            elif self.broken or not aiortc_hook.vp8_interframe_ok(frame.data):
                # after a loss, a delta frame may be incomplete or refer to a lost one:
                # nobody gets video until the next keyframe
                if not self.broken:
                    self.broken = True
                    self.losses += 1
                self.dropped += 1
                self.request_keyframe()
                return
        for subscriber in list(self.subscribers):
            try:
                subscriber.push(self, frame, pts, keyframe)
            except Exception:
                log.exception("%s %s: subscriber failed", self.label, self.kind)


class ForwardTrack(MediaStreamTrack):
    """The track a destination peer's sender sends: frames of the other participant's
    current source, each as a new `av.Packet` (or, in transcode mode, the decoded frame)."""

    def __init__(self, kind: str, label: str = ""):
        super().__init__()
        self.kind = kind
        self.label = label
        self.source: Source | None = None
        self.forwarded = 0
        self.dropped = 0
        self._queue: asyncio.Queue = asyncio.Queue(QUEUE_SIZE[kind])
        self._need_keyframe = kind == "video"
        self._offset = None         # source pts -> output pts, per source epoch
        self._last_out = None
        self._sending = False       # the sender asked for a first frame (peer connected)

    def set_source(self, source: "Source | None"):
        if self.source is not None:
            self.source.unsubscribe(self)
        self.source = source
        self._offset = None
        self._need_keyframe = self.kind == "video"
        if source is not None:
            source.subscribe(self)
            source.request_keyframe()

    def request_keyframe(self):
        """Called when the destination asks this sender for a keyframe (PLI/FIR)."""
        if self.source is not None:
            self.source.request_keyframe()

    def push(self, source, frame, pts, keyframe):
        if source is not self.source or self.readyState != "live":
            return
        if not self._sending:
            # nobody sends yet (the destination is still connecting): queueing would only
            # send a burst of stale frames later
            return
        if self._need_keyframe and not isinstance(frame, av.frame.Frame):
            if not keyframe:
                source.request_keyframe()
                return
            self._need_keyframe = False
        if self._offset is None:
            step = NOMINAL_STEP[self.kind]
            self._offset = (self._last_out + step - pts) if self._last_out is not None else -pts
        out = pts + self._offset
        if self._last_out is not None and out <= self._last_out:
            out = self._last_out + 1
        if self._queue.full():
            self.dropped += 1
            if self.kind == "video":
                # A dropped delta frame corrupts the picture: drop until the next keyframe.
                while not self._queue.empty():
                    self._queue.get_nowait()
                    self.dropped += 1
                self._need_keyframe = True
                source.request_keyframe()
                return
            self._queue.get_nowait()
        self._last_out = out
        self._queue.put_nowait((frame, out))

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if not self._sending:
            self._sending = True
            self.request_keyframe()
        frame, pts = await self._queue.get()
        self.forwarded += 1
        if isinstance(frame, av.frame.Frame):  # transcode mode: the sender encodes it
            frame.pts = pts
            return frame
        packet = av.Packet(frame.data)
        packet.pts = packet.dts = pts
        packet.time_base = frame.time_base
        packet.is_keyframe = frame.keyframe
        return packet

