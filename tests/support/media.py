"""The media process in tests: start it, talk to it as web does, and fake browsers with aiortc.

    from tests.support.media import media_process, media_files   # fixtures

    def test_x(media_process, media_files):
        media = media_process(MEDIA_CAPACITY="2")     # `python -m app.media`, ready to answer
        reply = media.call("join", room="1", conn=..., role="client", sdp=..., type="offer")
        media.kill()                                  # SIGKILL; media.stop() is SIGTERM
        print(media.output())                         # its log

`media_process` starts the process with REDIS_URL = $TEST_MEDIA_REDIS_URL (default
redis://127.0.0.1:6379/9: the media process pops commands from one list, so two test runs
must not share a database), RECORDINGS_ROOT = <tmp_path>/recordings, a free
MEDIA_HEALTH_PORT; extra keyword arguments are environment variables. It stops every process
it started at the end of the test and prints the log tail (shown when the test fails).

`media_files` (session) makes small pre-encoded VP8/Opus WebM files with PyAV; `FakeBrowser`
is an aiortc peer that sends one of them with MediaPlayer(decode=False), as a browser sends
its camera, and decodes what it receives.
"""
import array
import asyncio
import functools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import av
import pytest
import redis

from app.media import (HEARTBEAT_KEY, NODE_PREFIX, REQUESTS_KEY, client as media_client,
                       room_channel)

from .processes import ROOT, free_port, wait_until

MEDIA_REDIS_URL = os.environ.get("TEST_MEDIA_REDIS_URL", "redis://127.0.0.1:6379/9")
MS = Fraction(1, 1000)


# -- test media -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def encode_vp8(width, height, frames, fps=30, gop=30, bitrate=None, first_index=0):
    """VP8 packets [(bytes, pts_ms, keyframe)] of a moving, textured picture; a keyframe every
    `gop` frames (forced, so the GOP is exact)."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, fps)
    enc.framerate = Fraction(fps)
    enc.bit_rate = bitrate or (width * height * 3)
    enc.gop_size = gop
    enc.options = {"deadline": "realtime", "cpu-used": "16", "lag-in-frames": "0",
                   "auto-alt-ref": "0", "kf-max-dist": str(gop), "kf-min-dist": str(gop)}
    y_size, c_size = width * height, (width // 2) * (height // 2)
    texture = os.urandom(y_size // 4)
    base = bytes((x * 7) & 0xFF for x in range(width)) * 4
    out = []
    for i in range(frames):
        frame = av.VideoFrame(width, height, "yuv420p")
        shift = (i * 8) % width
        rows = (base[shift:] + base[:shift]) * (height // 4)
        y = bytearray(rows[:y_size])
        # a noisy band moving down the picture gives the encoder real work
        band = (i * 16) % (height - 40)
        start = band * width
        y[start:start + len(texture) // 8] = texture[:len(texture) // 8]
        frame.planes[0].update(bytes(y))
        frame.planes[1].update(bytes([(i * 3) & 0xFF]) * c_size)
        frame.planes[2].update(bytes([(128 + i) & 0xFF]) * c_size)
        frame.pts = i
        if i % gop == 0:
            frame.pict_type = av.video.frame.PictureType.I
        for packet in enc.encode(frame):
            out.append((bytes(packet), round((first_index + packet.pts) * 1000 / fps),
                        packet.is_keyframe))
    for packet in enc.encode(None):
        out.append((bytes(packet), round((first_index + packet.pts) * 1000 / fps),
                    packet.is_keyframe))
    return out


def encode_opus(seconds):
    """Opus packets [(bytes, pts_ms)] of a 440 Hz tone, 20 ms each."""
    return _opus_tone()[:int(seconds * 50)]


@functools.lru_cache(maxsize=1)
def _opus_tone(seconds=12):
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "stereo", "s16"
    enc.time_base = Fraction(1, 48000)
    # 440 Hz: 48000 samples hold exactly 440 periods, so the second is looped seamlessly
    tone = array.array("h", (int(8000 * math.sin(2 * math.pi * 440 * n / 48000))
                             for n in range(48000) for _ in range(2))).tobytes()
    out = []
    for i in range(seconds * 50):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        offset = (i % 50) * 960 * 4
        frame.planes[0].update(tone[offset:offset + 960 * 4])
        frame.sample_rate, frame.pts = 48000, i * 960
        for packet in enc.encode(frame):
            out.append((bytes(packet), len(out) * 20))
    return out


def write_webm(path, video, audio, width, height):
    """Mux pre-encoded packets into a WebM (stream 0 VP8, stream 1 Opus) without encoding."""
    from app.media.recorder import OPUS_HEAD, _template

    out = av.open(str(path), "w", format="webm")
    vs = out.add_mux_stream("vp8", width=width, height=height)
    vs.time_base = MS
    aus = out.add_stream_from_template(_template())
    aus.time_base = MS
    aus.codec_context.extradata = OPUS_HEAD
    items = [(ms, 0, data, key) for data, ms, key in video] + \
            [(ms, 1, data, True) for data, ms in audio]
    for ms, index, data, key in sorted(items, key=lambda x: (x[0], x[1])):
        packet = av.Packet(data)
        packet.stream = vs if index == 0 else aus
        packet.time_base = MS
        packet.pts = packet.dts = ms
        packet.is_keyframe = key
        out.mux(packet)
    out.close()
    return Path(path)


def make_webm(path, width=640, height=480, seconds=4.0, fps=30, gop=30, chunk_frames=30):
    """A `seconds` long clip: `chunk_frames` encoded frames (a whole number of GOPs) repeated
    with increasing pts, so long clips cost no more encoding than short ones."""
    assert chunk_frames % gop == 0
    chunk = encode_vp8(width, height, chunk_frames, fps, gop)
    video = []
    for i in range(int(seconds * fps)):
        data, ms, key = chunk[i % chunk_frames]
        video.append((data, round(i * 1000 / fps), key))
    return write_webm(path, video, encode_opus(seconds), width, height)


def make_switch_webm(path, first=(640, 480), second=(1280, 720), seconds=(1.0, 2.5), fps=30,
                     gop=10_000):
    """A camera switch: `first` resolution for seconds[0], then `second` for seconds[1], one
    keyframe at the start of each part (with the default huge GOP)."""
    n1, n2 = int(seconds[0] * fps), int(seconds[1] * fps)
    video = encode_vp8(*first, n1, fps, gop) + encode_vp8(*second, n2, fps, gop, first_index=n1)
    return write_webm(path, video, encode_opus(sum(seconds)), *first)


class _Clips(dict):
    """Test clips made on first use (a test that needs one clip does not wait for all)."""

    RECIPES = {
        "vga": lambda p: make_webm(p, 640, 480, 10.0),
        "hd": lambda p: make_webm(p, 1280, 720, 10.0),
        "vga_short": lambda p: make_webm(p, 640, 480, 4.0),
        "hd_short": lambda p: make_webm(p, 1280, 720, 4.0),
        "vga_fast_gop": lambda p: make_webm(p, 640, 480, 6.0, gop=15),
        "switch": lambda p: make_switch_webm(p),
    }

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, name):
        self[name] = self.RECIPES[name](self.root / f"{name}.webm")
        return self[name]


@pytest.fixture(scope="session")
def media_files(tmp_path_factory):
    """Pre-encoded test clips, made on first use: vga (640x480, 10 s, keyframe every second),
    hd (1280x720, 10 s), vga_short / hd_short (4 s), vga_fast_gop (6 s, keyframe every 0.5 s)
    and switch (1 s 640x480 then 2.5 s 1280x720, one keyframe in each part)."""
    return _Clips(tmp_path_factory.mktemp("media-files"))


def inspect_segment(path) -> dict:
    """Decode a recorded segment completely; what the recording checks need."""
    container = av.open(str(path))
    video = container.streams.video[0]
    audio = container.streams.audio[0]
    info = {"codecs": (video.codec_context.name, audio.codec_context.name),
            "streams": [s.type for s in container.streams],
            "video_pts": [], "keyframes": [], "decoded": 0, "audio_packets": 0,
            "audio_decoded": 0, "sizes": set(), "audio_pts": [],
            "time_bases": (video.time_base, audio.time_base)}
    for packet in container.demux():
        if packet.size == 0:
            continue
        if packet.stream.type == "video":
            info["video_pts"].append(packet.pts)
            info["keyframes"].append(packet.is_keyframe)
            for frame in packet.decode():
                info["decoded"] += 1
                info["sizes"].add((frame.width, frame.height))
        else:
            info["audio_packets"] += 1
            info["audio_pts"].append(packet.pts)
            info["audio_decoded"] += len(packet.decode())
    container.close()
    pts = info["video_pts"]
    info["frames"] = len(pts)
    info["span_s"] = (pts[-1] - pts[0]) / 1000 if len(pts) > 1 else 0
    info["fps"] = (len(pts) - 1) / info["span_s"] if info["span_s"] else 0
    return info


# -- the media process ----------------------------------------------------------------------
class MediaProcess:
    def __init__(self, env: dict, log_path: Path):
        self.env = env
        self.log_path = log_path
        self.redis_url = env["REDIS_URL"]
        self.redis = redis.Redis.from_url(self.redis_url)
        self.health_port = int(env["MEDIA_HEALTH_PORT"])
        self.recordings = Path(env["RECORDINGS_ROOT"])
        self.proc = None
        self.ident = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self, timeout=30.0):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "app.media"], cwd=ROOT, env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

        def ready():
            # Its ident from its own health check, then a command through its own list: other
            # media processes may share the Redis database (web places rooms on one of them).
            if self.proc.poll() is not None:
                pytest.fail(f"media process exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz",
                                            timeout=0.5) as response:
                    ident = json.loads(response.read())["ident"]
            except (OSError, ValueError, KeyError):
                return None
            reply = media_client.call(self.redis, "ping", timeout=0.5, node=ident)
            return reply if reply and reply.get("op") == "pong" else None

        pong = wait_until(ready, timeout, interval=0.05, message="the media process answering")
        self.ident = pong["ident"]
        return self

    def call(self, op, timeout=10.0, **payload):
        return media_client.call(self.redis, op, timeout=timeout, node=self.ident, **payload)

    async def acall(self, op, timeout=10.0, **payload):
        return await asyncio.to_thread(self.call, op, timeout, **payload)

    def heartbeat(self):
        raw = self.redis.get(NODE_PREFIX + self.ident) if self.ident else None
        return json.loads(raw) if raw else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        """Kill it (default SIGKILL: no cleanup at all) and wait until it is gone."""
        if self.alive():
            os.kill(self.proc.pid, sig)
            self.proc.wait(20)
        return self.proc.returncode

    def stop(self, timeout=30.0):
        """SIGTERM: a graceful stop (every call closed, open segments kept)."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode

    def output(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")


class EventListener:
    """Collects the pub/sub events of one room (a thread of redis-py's pubsub)."""

    def __init__(self, redis_url, room):
        self.events = []
        self._redis = redis.Redis.from_url(redis_url)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(**{room_channel(room): self._on})
        self._thread = self._pubsub.run_in_thread(sleep_time=0.05, daemon=True)

    def _on(self, message):
        self.events.append(json.loads(message["data"]))

    def of(self, event, **match):
        return [e for e in self.events if e.get("event") == event
                and all(e.get(k) == v for k, v in match.items())]

    def close(self):
        self._thread.stop()
        self._thread.join(5)
        self._pubsub.close()
        self._redis.close()


@pytest.fixture
def media_process(tmp_path):
    """Factory: media_process(**env) starts `python -m app.media` and waits until it answers."""
    started = []
    recordings = tmp_path / "recordings"
    recordings.mkdir(exist_ok=True)
    connection = redis.Redis.from_url(MEDIA_REDIS_URL)

    def start(**env):
        full = dict(os.environ)
        full.update({"REDIS_URL": MEDIA_REDIS_URL, "RECORDINGS_ROOT": str(recordings),
                     "MEDIA_HEALTH_PORT": str(free_port()), "RECORDING_MIN_FREE_MB": "50",
                     "PYTHONUNBUFFERED": "1"})
        full.update({k: str(v) for k, v in env.items()})
        process = MediaProcess(full, tmp_path / f"media-{len(started)}.log")
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()
        print(f"--- media process log ({process.log_path}) ---")
        print("\n".join(process.output().splitlines()[-80:]))
    for url in {MEDIA_REDIS_URL, *(p.redis_url for p in started)}:
        other = redis.Redis.from_url(url)
        # A SIGKILLed process leaves its heartbeats and its command list.
        other.delete(REQUESTS_KEY, HEARTBEAT_KEY, *other.scan_iter(match=NODE_PREFIX + "*"),
                     *other.scan_iter(match=REQUESTS_KEY + ":*"))
        other.close()
    for process in started:
        process.redis.close()
    connection.close()


# -- fake browsers ----------------------------------------------------------------------------
class FakeBrowser:
    """An aiortc peer that behaves like the browser side of a call: it sends a pre-encoded
    file (MediaPlayer(decode=False)) on sendrecv audio and video transceivers, offers
    non-trickle, and decodes what it receives (frame sizes and pts are kept)."""

    def __init__(self, media_file=None):
        from aiortc import RTCPeerConnection
        from aiortc.contrib.media import MediaPlayer

        self.pc = RTCPeerConnection()
        self.player = MediaPlayer(str(media_file), decode=False) if media_file else None
        self.received = {"audio": [], "video": []}   # (monotonic, pts, width, height)
        self.tasks = []
        for kind in ("audio", "video"):
            track = getattr(self.player, kind) if self.player else None
            self.pc.addTransceiver(track or kind, direction="sendrecv")
        self.pc.on("track", self._on_track)

    def _on_track(self, track):
        self.tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track):
        from aiortc.mediastreams import MediaStreamError

        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.received[track.kind].append((time.monotonic(), frame.pts,
                                              getattr(frame, "width", 0),
                                              getattr(frame, "height", 0)))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, reply: dict):
        from aiortc import RTCSessionDescription

        assert reply and reply.get("ok"), reply
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))

    async def join(self, media: MediaProcess, room, conn, role, **extra):
        reply = await media.acall("join", timeout=20, room=room, conn=conn, role=role,
                                  sdp=await self.offer(), type="offer", **extra)
        await self.accept(reply)
        return reply

    def video_sender(self):
        return next(t.sender for t in self.pc.getTransceivers() if t.kind == "video")

    def video_receiver(self):
        return next(t.receiver for t in self.pc.getTransceivers() if t.kind == "video")

    async def wait_connected(self, timeout=15):
        deadline = time.monotonic() + timeout
        while self.pc.connectionState != "connected":
            if time.monotonic() > deadline:
                raise AssertionError(f"peer state {self.pc.connectionState}")
            await asyncio.sleep(0.05)

    async def close(self):
        for task in self.tasks:
            task.cancel()
        await self.pc.close()


async def wait_for(predicate, timeout=15.0, message="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(0.05)
