"""Relay and recorder logic with synthetic frames (no network): fast and deterministic."""
import asyncio
import json

import av
import pytest

from app.media import relay
from app.media.aiortc_hook import EncodedFrame, VIDEO_TIME_BASE, AUDIO_TIME_BASE
from app.media.recorder import SeriesRecorder
from app.media.relay import ForwardTrack, Source
from tests.support.media import encode_opus, encode_vp8, inspect_segment


class FakeSource(Source):
    """A Source without a receiver: counts keyframe requests instead of sending PLIs."""

    def __init__(self, kind):
        super().__init__(kind, track=None, receiver=None, label="test")
        self.requests = 0

    def request_keyframe(self):
        self.requests += 1


def video_frames(width=320, height=240, count=60, gop=30, start_pts=0, arrival0=1000.0):
    packets = encode_vp8(width, height, count, 30, gop)
    return [EncodedFrame("video", "vp8", data, start_pts + i * 3000, VIDEO_TIME_BASE, key,
                         width if key else 0, height if key else 0, arrival0 + i / 30)
            for i, (data, _, key) in enumerate(packets)]


def audio_frames(count, start_pts=0, arrival0=1000.0):
    packets = encode_opus(count / 50)
    return [EncodedFrame("audio", "opus", data, start_pts + i * 960, AUDIO_TIME_BASE, True, 0, 0,
                         arrival0 + i / 50 + 0.047)
            for i, (data, _) in enumerate(packets)]


def test_forward_track_new_packet_per_subscriber_keyframe_gating_and_rebase():
    async def go():
        source = FakeSource("video")
        a, b = ForwardTrack("video"), ForwardTrack("video")
        a.set_source(source)
        b.set_source(source)
        frames = video_frames(count=40, gop=30)
        source._dispatch(frames[0])              # nobody sends yet: dropped, nothing queued
        assert a._queue.empty()
        for track in (a, b):
            track._sending = True
        for frame in frames[1:]:                 # deltas first: dropped until the keyframe
            source._dispatch(frame)
        assert a._queue.qsize() == 10 and source.requests >= 1
        pa, pb = await a.recv(), await b.recv()
        assert isinstance(pa, av.Packet) and pa is not pb
        assert bytes(pa) == bytes(pb) == frames[30].data and pa.is_keyframe
        assert pa.time_base == VIDEO_TIME_BASE and pa.pts == pa.dts
        out = [pa.pts] + [(await a.recv()).pts for _ in range(9)]
        # the other side rejoins: a new source whose pts start at 0 again
        second = FakeSource("video")
        a.set_source(second)
        assert second.requests == 1              # a keyframe for the new subscriber
        for frame in video_frames(count=25, gop=30, arrival0=2000.0):
            second._dispatch(frame)
        after = [(await a.recv()).pts for _ in range(25)]
        steps = [y - x for x, y in zip(out + after, (out + after)[1:])]
        assert all(s > 0 for s in steps) and max(steps) == 3000

    asyncio.run(asyncio.wait_for(go(), 30))


def test_forward_track_overflow_drops_until_keyframe():
    async def go():
        source = FakeSource("video")
        track = ForwardTrack("video")
        track.set_source(source)
        track._sending = True
        frames = video_frames(count=90, gop=45)
        for frame in frames[:40]:                # queue holds 30: overflow at the 31st
            source._dispatch(frame)
        assert track._queue.empty() and track.dropped >= 30 and source.requests >= 2
        for frame in frames[40:46]:              # 40-44 deltas dropped, 45 keyframe passes
            source._dispatch(frame)
        first = await track.recv()
        assert first.is_keyframe and bytes(first) == frames[45].data
        assert track._queue.qsize() == 0

    asyncio.run(asyncio.wait_for(go(), 30))


def test_source_continuous_pts_loss_and_pli_rate_limit(monkeypatch):
    async def go():
        sent = []
        monkeypatch.setattr(relay.aiortc_hook, "send_pli", lambda receiver: sent.append(1) or True)
        source = Source("video", track=None, receiver=object(), label="t")
        got = []

        class Sub:
            def push(self, src, frame, pts, keyframe):
                got.append((pts, keyframe))

        source.subscribe(Sub())
        frames = video_frames(count=60, gop=30)
        for frame in frames[:20]:
            source._dispatch(frame)
        # aiortc's TimestampMapper turns a backward step into +2^32: re-based, not a jump
        jumped = frames[20]._replace(pts=frames[20].pts + 2 ** 32)
        source._dispatch(jumped)
        assert got[-1][0] - got[-2][0] < 90000
        # a loss: delta frames are withheld until the next keyframe
        source.picture_lost()
        for frame in frames[21:31]:
            source._dispatch(frame._replace(pts=frame.pts + 2 ** 32))
        assert len(got) == 22 and got[-1][1]     # only the keyframe (frame 30) came through
        assert source.losses == 1 and source.dropped == 9
        # PLI rate limit: a burst is one PLI now and one merged PLI 300 ms later
        sent.clear()
        source._last_pli = -1e9
        for _ in range(10):
            source.request_keyframe()
        assert len(sent) == 1
        await asyncio.sleep(0.35)
        assert len(sent) == 2
        # audio sources never send PLIs
        audio = Source("audio", track=None, receiver=object())
        audio.request_keyframe()
        assert len(sent) == 2

    asyncio.run(asyncio.wait_for(go(), 30))


def run_recorder(tmp_path, feed, **kwargs):
    events = []

    async def publish(event):
        events.append(event)

    async def go():
        series = SeriesRecorder(room="9", conn="c" * 32, role="client", record_dir=tmp_path,
                                min_free_mb=kwargs.pop("min_free_mb", 1), publish=publish,
                                **kwargs)
        video, audio = FakeSource("video"), FakeSource("audio")
        series.start({"video": video, "audio": audio})
        await feed(video, audio)
        await series.finalize()
        await asyncio.sleep(0)
        return series

    series = asyncio.run(asyncio.wait_for(go(), 30))
    return series, events, tmp_path / f"client-{'c' * 32}"


def test_recorder_aligns_audio_rotates_and_keeps_late_audio(tmp_path):
    async def feed(video, audio):
        vf = video_frames(count=100, gop=30)
        af = audio_frames(170)
        items = sorted([(f.arrival, 0, f) for f in vf] + [(f.arrival, 1, f) for f in af],
                       key=lambda x: (x[0], x[1]))
        for _, kind, frame in items:
            (video if kind == 0 else audio)._dispatch(frame)
            if kind == 0 and frame.pts == 60 * 3000:
                await asyncio.sleep(0.3)          # the grace period of a rotated segment

    series, events, directory = run_recorder(tmp_path, feed, soft=1.0, hard=2.0)
    segments = sorted(directory.glob("*.webm"))
    assert [p.name for p in segments] == ["00001.webm", "00002.webm", "00003.webm", "00004.webm"]
    sidecars = [json.loads(p.with_suffix(".json").read_text()) for p in segments]
    assert [s["video_frames"] for s in sidecars] == [30, 30, 30, 10]
    for path, sidecar in zip(segments, sidecars):
        info = inspect_segment(path)
        assert info["keyframes"][0] and info["decoded"] == sidecar["video_frames"]
        assert info["audio_packets"] == sidecar["audio_packets"]
        # audio arrives 47 ms after the video it belongs with but lines up on pts
        assert abs(info["audio_pts"][0] - info["video_pts"][0]) <= 20
    assert sum(s["audio_packets"] for s in sidecars) >= 165
    assert sidecars[1]["start"] - sidecars[0]["start"] == pytest.approx(1.0, abs=0.002)
    assert [e["seq"] for e in events if e["event"] == "segment"] == [1, 2, 3, 4]


def test_recorder_refuses_a_segment_when_the_disk_is_full(tmp_path):
    async def feed(video, audio):
        for frame in video_frames(count=31, gop=30):
            video._dispatch(frame)

    series, events, directory = run_recorder(tmp_path, feed, min_free_mb=10 ** 12)
    assert not list(directory.glob("*.webm*"))
    assert json.loads((directory / "series.json").read_text())["role"] == "client"
    errors = [e for e in events if e["event"] == "recording_error"]
    assert len(errors) == 1 and errors[0]["error"] == "disk" and errors[0]["free_mb"] > 0
