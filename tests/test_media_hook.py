"""The aiortc hook (app/media/aiortc_hook.py) and the media helpers, in one process."""
import asyncio
import inspect
import threading

import aiortc
import av
import pytest
from aiortc import RTCPeerConnection
from aiortc.contrib.media import MediaPlayer
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from app.media import aiortc_hook, net
from app.media.aiortc_hook import EncodedFrame, parse_vp8
from app.media.recorder import opus_duration_ms
from tests.support.media import encode_opus, encode_vp8, media_files  # noqa: F401


def test_hook_is_pinned_and_installed():
    assert aiortc.__version__ == aiortc_hook.AIORTC_VERSION == "1.16.0"
    assert aiortc_hook.installed()
    from aiortc import rtcrtpreceiver

    assert list(inspect.signature(aiortc_hook._original_decoder_worker).parameters) == \
        list(inspect.signature(rtcrtpreceiver.decoder_worker).parameters)


def test_vp8_header_parsing():
    packets = encode_vp8(320, 240, 4, gop=3)
    keys = [parse_vp8(data) for data, _, _ in packets]
    assert keys[0] == (True, 320, 240) and keys[3] == (True, 320, 240)
    assert keys[1] == (False, 0, 0) and keys[2] == (False, 0, 0)
    assert [k[0] for k in keys] == [key for _, _, key in packets]
    assert all(aiortc_hook.vp8_interframe_ok(data) for data, _, _ in packets)
    assert parse_vp8(b"\x00\x00") == (False, 0, 0)


def test_opus_packet_duration():
    packets = encode_opus(0.1)
    assert packets and all(opus_duration_ms(data) == 20 for data, _ in packets)


async def _loopback(media_file, register):
    """A sends `media_file` (pre-encoded, MediaPlayer(decode=False)) to B; B's video track is
    registered with the hook or not. Returns the first frames B's track yields."""
    a, b = RTCPeerConnection(), RTCPeerConnection()
    player = MediaPlayer(str(media_file), decode=False)
    a.addTrack(player.video)
    received = []
    done = asyncio.Event()

    @b.on("track")
    def on_track(track):
        receiver = next(t.receiver for t in b.getTransceivers() if t.receiver.track is track)
        if register == "inline":
            aiortc_hook.register(track, receiver)
            assert isinstance(receiver._RTCRtpReceiver__decoder_queue, aiortc_hook._InlineQueue)
        elif register == "thread":
            aiortc_hook.register(track)

        async def consume():
            while len(received) < 40:
                received.append(await track.recv())
            done.set()

        asyncio.ensure_future(consume())

    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    try:
        await asyncio.wait_for(done.wait(), 20)
        decoders = [t for t in threading.enumerate() if t.name == "video-decoder"]
        # inline: the receiver's decoder thread returned at once; otherwise it runs
        assert bool(decoders) == (register != "inline")
    finally:
        await a.close()
        await b.close()
    return received


@pytest.mark.parametrize("mode", ["inline", "thread"])
def test_registered_track_yields_encoded_frames(media_files, mode):
    frames = asyncio.run(_loopback(media_files["vga_short"], register=mode))
    assert all(isinstance(f, EncodedFrame) for f in frames)
    assert frames[0].kind == "video" and frames[0].codec == "vp8"
    assert frames[0].keyframe and (frames[0].width, frames[0].height) == (640, 480)
    keyframes = [i for i, f in enumerate(frames) if f.keyframe]
    assert keyframes == [0, 30]                       # the clip's GOP is 30 frames
    assert all(f.width == 0 for f in frames if not f.keyframe)
    assert frames[0].time_base == aiortc_hook.VIDEO_TIME_BASE
    steps = {b.pts - a.pts for a, b in zip(frames, frames[1:])}
    assert steps <= {2970, 3000, 3060}                 # 30 fps at 90 kHz (ms-rounded source)
    with pytest.raises(AttributeError):
        frames[0].data = b""                           # immutable
    # the pass-through frames are the sender's packets, byte for byte: they decode
    decoder = av.CodecContext.create("vp8", "r")
    decoded = [f for e in frames for f in decoder.decode(av.Packet(e.data))]
    assert len(decoded) == 40 and decoded[0].width == 640


def test_unregistered_track_still_decodes(media_files):
    frames = asyncio.run(_loopback(media_files["vga_short"], register=None))
    assert all(isinstance(f, av.VideoFrame) for f in frames)
    assert (frames[0].width, frames[0].height) == (640, 480)


def test_send_pli_uses_the_receivers_ssrc(monkeypatch):
    sent = []

    class Source:
        source = 1234

    class FakeReceiver:
        def getSynchronizationSources(self):
            return [Source()]

        async def _send_rtcp_pli(self, ssrc):
            sent.append(ssrc)

    async def go():
        assert aiortc_hook.send_pli(FakeReceiver())
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(go())
    assert sent == [1234]
    assert hasattr(RTCRtpReceiver, "_send_rtcp_pli")


def test_announced_address_rewrites_host_candidates():
    sdp = "\r\n".join([
        "v=0", "c=IN IP4 10.0.0.5",
        "a=candidate:abc 1 udp 2130706431 10.0.0.5 40001 typ host",
        "a=candidate:def 1 udp 2130706431 fe80::1 40002 typ host",
        "a=candidate:ghi 1 udp 1694498815 203.0.113.9 40003 typ srflx raddr 10.0.0.5 rport 40001",
        ""])
    out = net.announce(sdp, "198.51.100.7").split("\r\n")
    assert out[1] == "c=IN IP4 198.51.100.7"
    assert out[2] == "a=candidate:abc 1 udp 2130706431 198.51.100.7 40001 typ host"
    assert out[3].endswith("fe80::1 40002 typ host")           # other family untouched
    assert "203.0.113.9 40003 typ srflx" in out[4]              # not a host candidate
    assert net.announce(sdp, "") == sdp
    with pytest.raises(ValueError):
        net.announce(sdp, "media.example.com")
