"""Every use of aiortc's private surface, pinned to aiortc 1.16.0 (docs/media-design.md §2, §4).

- `decoder_worker` (module global of `aiortc.rtcrtpreceiver`) is replaced once, at import, by a
  worker that hands the *encoded* frames of registered tracks to their `RemoteStreamTrack`
  as immutable `EncodedFrame`s, and calls the original worker (which decodes) for any other
  track. `register(track)` must run in `pc.on("track")`, before the receiver starts.
- `send_pli(receiver)` sends a Picture Loss Indication upstream (`RTCRtpReceiver._send_rtcp_pli`).
- `on_keyframe_request(sender, callback)` routes the PLI/FIR that a sender receives
  (`RTCRtpSender._send_keyframe`, ignored by aiortc for pre-encoded packets) to `callback`.

If aiortc is upgraded, the assertions below fail at import: check the line numbers in the
design document again before changing the pin.
"""
import asyncio
import inspect
import logging
import threading
import time
import weakref
from fractions import Fraction
from typing import NamedTuple, Optional

import aiortc
from aiortc import rtcrtpreceiver

log = logging.getLogger("videoar.media.hook")

AIORTC_VERSION = "1.16.0"
if aiortc.__version__ != AIORTC_VERSION:  # pragma: no cover - guarded by the pin
    raise ImportError(f"app.media.aiortc_hook is written for aiortc {AIORTC_VERSION}, "
                      f"found {aiortc.__version__}: re-check docs/media-design.md before upgrading")

_original_decoder_worker = rtcrtpreceiver.decoder_worker
_params = list(inspect.signature(_original_decoder_worker).parameters)
if _params != ["loop", "input_q", "output_q", "decode_error"]:  # pragma: no cover
    raise ImportError(f"aiortc.rtcrtpreceiver.decoder_worker has parameters {_params}: "
                      "the pass-through hook no longer fits")
for _name in ("_send_rtcp_pli", "getSynchronizationSources"):
    if not callable(getattr(rtcrtpreceiver.RTCRtpReceiver, _name, None)):  # pragma: no cover
        raise ImportError(f"RTCRtpReceiver.{_name} is gone")
if not callable(getattr(aiortc.RTCRtpSender, "_send_keyframe", None)):  # pragma: no cover
    raise ImportError("RTCRtpSender._send_keyframe is gone")
# The inline hand-over replaces the receiver's decoder queue: check that aiortc still creates
# it in __init__, puts (codec, frame) / None into it, and reads nothing else from it.
_receiver_source = inspect.getsource(rtcrtpreceiver.RTCRtpReceiver)
for _needle, _count in (("self.__decoder_queue", 4), ("self.__decoder_queue: queue.Queue = queue.Queue()", 1),
                        ("self.__decoder_queue.put((codec, encoded_frame))", 1),
                        ("self.__decoder_queue.put(None)", 1), ("self.__started = ", 2),
                        ("await self._send_rtcp_pli(packet.ssrc)", 1),
                        ("self.__rtx_ssrc: dict[int, int] = {}", 1)):
    if _receiver_source.count(_needle) != _count:  # pragma: no cover
        raise ImportError(f"RTCRtpReceiver changed around {_needle!r}: re-check the hook")
del _receiver_source

VIDEO_TIME_BASE = Fraction(1, 90000)
AUDIO_TIME_BASE = Fraction(1, 48000)


class EncodedFrame(NamedTuple):
    """One complete encoded frame as it came out of the jitter buffer.

    `pts` is the receiver's unwrapped RTP timestamp (starts at 0; 90 kHz video, 48 kHz audio);
    `keyframe`, `width`, `height` come from the VP8 header (audio: keyframe True, size 0);
    `arrival` is the `time.monotonic()` at which the hook released the frame."""
    kind: str
    codec: str
    data: bytes
    pts: int
    time_base: Fraction
    keyframe: bool
    width: int
    height: int
    arrival: float = 0.0


def parse_vp8(data: bytes) -> tuple[bool, int, int]:
    """(keyframe, width, height) of a raw VP8 frame (RFC 6386 §9.1); size 0 for interframes."""
    if len(data) < 10 or data[0] & 1:
        return False, 0, 0
    if data[3:6] != b"\x9d\x01\x2a":
        return False, 0, 0
    width = (data[6] | data[7] << 8) & 0x3FFF
    height = (data[8] | data[9] << 8) & 0x3FFF
    return True, width, height


def vp8_interframe_ok(data: bytes) -> bool:
    """Sanity check of a VP8 frame: the first partition must fit in the frame."""
    if len(data) < 3:
        return False
    first_partition = (data[0] | data[1] << 8 | data[2] << 16) >> 5
    return first_partition < len(data)


# Output queues (RemoteStreamTrack._queue) whose frames pass through undecoded.
_passthrough: "weakref.WeakSet[asyncio.Queue]" = weakref.WeakSet()
_lock = threading.Lock()


def register(track, receiver=None) -> None:
    """Mark a RemoteStreamTrack (from pc.on("track")) for pass-through. Must run before the
    receiver starts, i.e. in the "track" handler or right after setRemoteDescription.

    With its `receiver`, frames are handed over inline on the event loop (cheaper: no decoder
    thread at all); without, the decoder thread passes them through."""
    with _lock:
        _passthrough.add(track._queue)
    if receiver is not None:
        if getattr(receiver, "_RTCRtpReceiver__started", True):
            raise RuntimeError("register() after the receiver started")
        receiver._RTCRtpReceiver__decoder_queue = _InlineQueue(track._queue)


def is_registered(track) -> bool:
    with _lock:
        return track._queue in _passthrough


def _encoded_frame(codec, jitter_frame) -> EncodedFrame:
    kind, _, name = codec.mimeType.partition("/")
    data = bytes(jitter_frame.data)
    if kind == "video":
        keyframe, width, height = parse_vp8(data) if name.upper() == "VP8" else (False, 0, 0)
        time_base = Fraction(1, codec.clockRate or 90000)
    else:
        keyframe, width, height = True, 0, 0
        time_base = Fraction(1, codec.clockRate or 48000)
    return EncodedFrame(kind, name.lower(), data, jitter_frame.timestamp, time_base, keyframe,
                        width, height, time.monotonic())


def _passthrough_worker(loop, input_q, output_q) -> None:
    while True:
        task = input_q.get()
        if task is None:
            loop.call_soon_threadsafe(output_q.put_nowait, None)
            break
        codec, jitter_frame = task
        try:
            item = _encoded_frame(codec, jitter_frame)
        except Exception:  # never kill the thread over one odd frame
            log.exception("pass-through: bad frame")
            continue
        try:
            loop.call_soon_threadsafe(output_q.put_nowait, item)
        except RuntimeError:  # loop closed
            break


class _InlineQueue:
    """Stands in for a receiver's decoder queue (`RTCRtpReceiver.__decoder_queue`, l. 291):
    `_handle_rtp_packet` (l. 567) and `__stop_decoder` (l. 648) call `put` on the event loop,
    and the frame goes straight into the track's queue: no thread hop, no loop wake-up."""

    def __init__(self, output_q: asyncio.Queue):
        self.output_q = output_q

    def put(self, item) -> None:
        if item is None:
            self.output_q.put_nowait(None)
            return
        codec, jitter_frame = item
        self.output_q.put_nowait(_encoded_frame(codec, jitter_frame))


def decoder_worker(loop, input_q, output_q, decode_error) -> None:
    """Replacement for aiortc.rtcrtpreceiver.decoder_worker (same signature)."""
    if isinstance(input_q, _InlineQueue):
        return  # frames are delivered inline; the thread has nothing to do
    with _lock:
        passthrough = output_q in _passthrough
    if passthrough:
        _passthrough_worker(loop, input_q, output_q)
    else:
        _original_decoder_worker(loop, input_q, output_q, decode_error)


def install() -> None:
    rtcrtpreceiver.decoder_worker = decoder_worker


def installed() -> bool:
    return rtcrtpreceiver.decoder_worker is decoder_worker


install()


def receiver_ssrc(receiver) -> Optional[int]:
    """The media SSRC the receiver gets packets from (not its RTX SSRC)."""
    rtx = getattr(receiver, "_RTCRtpReceiver__rtx_ssrc", {})
    sources = [s.source for s in receiver.getSynchronizationSources() if s.source not in rtx]
    return sources[-1] if sources else None


def send_pli(receiver) -> bool:
    """Ask the sender behind `receiver` for a keyframe. False when nothing has arrived yet
    (no SSRC known)."""
    ssrc = receiver_ssrc(receiver)
    if ssrc is None:
        return False
    send = getattr(receiver, "_videoar_send_rtcp_pli", None) or receiver._send_rtcp_pli
    task = asyncio.ensure_future(send(ssrc))
    task.add_done_callback(_log_failure)
    return True


def on_picture_loss(receiver, callback) -> None:
    """Call `callback()` when aiortc itself sends a PLI for `receiver`: its jitter buffer
    overflowed or saw a big misorder, i.e. packets were lost and the frames that follow may
    be incomplete (`_handle_rtp_packet`, l. 551-560). `send_pli` does not trigger it."""
    original = receiver._send_rtcp_pli

    async def send_rtcp_pli(media_ssrc):
        callback()
        await original(media_ssrc)

    receiver._videoar_send_rtcp_pli = original
    receiver._send_rtcp_pli = send_rtcp_pli


def _log_failure(task):
    if not task.cancelled() and task.exception() is not None:
        log.warning("PLI not sent: %s", task.exception())


def on_keyframe_request(sender, callback) -> None:
    """Call `callback()` when the remote peer of `sender` asks for a keyframe (PLI or FIR)."""
    sender._send_keyframe = callback
