"""Recording processing benchmark: how long `recording.process` takes for a synthetic call,
against the call's length (target: <= 0.5x on one core for a 1280x720 two-participant call).

    .venv/bin/python bench/media_processing.py                    # 60 s calls, 1280x720 and 640x480
    .venv/bin/python bench/media_processing.py --seconds 120 --size 1280x720 --keep /tmp/calls

Each run writes a synthetic call in the media process's on-disk layout (docs/media-protocol.md):
two participants, each one series of VP8 + Opus WebM segments of 9 s, made with PyAV's libvpx
(realtime, a browser-like bitrate: 2 Mbit/s at 720p, 1 Mbit/s at 480p) from a panning noise
texture with a coloured marker, and a sine tone each. It then runs the processing (decode,
compose side by side, mix, H.264/AAC MP4, thumbnail, storage) in a fresh child process and
reports wall time / call length, CPU time (user + system, the process and its threads) and the
child's peak resident memory. The database is a throwaway SQLite file.

`write_series` and `write_call` are also what tests/test_recording_processing.py uses to make its
segments; `measure(call_seconds, width, height)` is for the media bench to reuse.
"""
import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import av  # noqa: E402
from av.audio.frame import AudioFrame  # noqa: E402
from av.video.frame import VideoFrame  # noqa: E402

MS = Fraction(1, 1000)
SAMPLE_RATE = 48000

# BT.601 limited-range YUV of the markers (red for the client, blue for the agent).
RED_YUV = (81, 90, 240)
BLUE_YUV = (41, 240, 110)
ROLE_LOOK = {"client": ("square", RED_YUV, 440), "agent": ("circle", BLUE_YUV, 1000)}


# --- synthetic media --------------------------------------------------------------------------

def tone_second(hz: int, amplitude: float = 0.3) -> bytes:
    """One second of a sine (s16, stereo, interleaved) that loops seamlessly for an integer hz."""
    samples = array("h")
    peak = int(32767 * amplitude)
    for i in range(SAMPLE_RATE):
        v = int(peak * math.sin(2 * math.pi * hz * i / SAMPLE_RATE))
        samples.append(v)
        samples.append(v)
    return samples.tobytes()


class _Picture:
    """Frames with a big marker in the middle (a square or a circle of one colour) over a
    background. "camera": a smooth texture panning 3 px a frame with a fine grain that changes
    every frame, something like a webcam's picture to encode at a browser's bitrate; "flat": a
    plain grey background with a small bar moving across it (cheap to encode, for tests)."""

    def __init__(self, width, height, shape, yuv, background="camera"):
        from PIL import Image, ImageChops, ImageDraw

        self.width, self.height = width, height
        self.background = background
        self.ImageChops = ImageChops
        y, u, v = yuv
        side = int(height * 0.45) // 2 * 2
        cx, cy = width // 2, height // 2
        box = (cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2)
        self.mask = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(self.mask)
        (draw.rectangle if shape == "square" else draw.ellipse)(
            (box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
        self.marker_y = Image.new("L", (width, height), y)
        small = self.mask.resize((width // 2, height // 2), Image.NEAREST)
        self.chroma = [Image.composite(Image.new("L", small.size, value),
                                       Image.new("L", small.size, 128), small).tobytes()
                       for value in (u, v)]
        if background == "camera":
            blobs = Image.effect_noise((width * 2 // 16, height // 16), 60)
            self.texture = blobs.resize((width * 2, height), Image.BICUBIC)
            self.grain = [Image.effect_noise((width, height), 4) for _ in range(6)]
        else:
            self.texture = Image.new("L", (width * 2, height), 96)
            self.grain = None

    def frame(self, index) -> VideoFrame:
        from PIL import Image, ImageDraw

        w, h = self.width, self.height
        off = (index * 3) % w
        if self.grain:
            base = self.texture.crop((off, 0, off + w, h))
            base = self.ImageChops.add(base, self.grain[index % len(self.grain)], 1, -128)
        else:
            base = self.texture.crop((0, 0, w, h))
            ImageDraw.Draw(base).rectangle((off, h - 40, off + 20, h - 10), fill=200)
        base.paste(self.marker_y, (0, 0), self.mask)
        frame = VideoFrame(w, h, "yuv420p")
        for plane, data, plane_w in zip(frame.planes, (base.tobytes(), *self.chroma),
                                        (w, w // 2, w // 2)):
            if plane.line_size != plane_w:
                step = plane.line_size - plane_w
                data = b"".join(data[i:i + plane_w] + b"\0" * step
                                for i in range(0, len(data), plane_w))
            plane.update(data)
        return frame


def _video_bitrate(width, height):
    return 2_000_000 if width * height >= 1280 * 720 else 1_000_000


def write_series(room_dir, role, conn, start, seconds, width=1280, height=720, *, fps=30,
                 segment_seconds=9.0, part_seconds=0.0, background="camera"):
    """Write one connection's series exactly as the media process does:
    `<room_dir>/<role>-<conn>/series.json`, then segments `00001.webm` (+ `00001.json`) of at
    most `segment_seconds`, each starting with a keyframe, VP8 stream 0 + Opus stream 1 (48 kHz
    stereo) with time base 1/1000 and pts in ms from the segment's `start`. With
    `part_seconds`, a further `.part` segment with no sidecar is left at the end, as a media
    process killed mid-segment leaves it. Returns the closed segments' paths."""
    shape, yuv, hz = ROLE_LOOK[role]
    series_dir = Path(room_dir) / f"{role}-{conn}"
    series_dir.mkdir(parents=True, exist_ok=True)
    (series_dir / "series.json").write_text(json.dumps(
        {"room": Path(room_dir).name, "conn": conn, "role": role, "started": start}))
    picture = _Picture(width, height, shape, yuv, background)
    tone = tone_second(hz)

    venc = av.CodecContext.create("libvpx", "w")
    venc.width, venc.height, venc.pix_fmt = width, height, "yuv420p"
    venc.time_base = Fraction(1, fps)
    venc.framerate = Fraction(fps)
    venc.bit_rate = _video_bitrate(width, height)
    venc.gop_size = 100000  # keyframes only when a segment starts (as the recorder asks for)
    venc.thread_count = 1
    # What libwebrtc does: realtime, no lag; the fastest setting for the tests' flat pictures.
    venc.options = {"deadline": "realtime", "lag-in-frames": "0", "error-resilient": "1",
                    "cpu-used": "8" if background == "camera" else "16"}
    aenc = av.CodecContext.create("libopus", "w")
    aenc.sample_rate, aenc.layout, aenc.format = SAMPLE_RATE, "stereo", "s16"
    aenc.bit_rate = 48000
    aenc.time_base = Fraction(1, SAMPLE_RATE)

    total = seconds + part_seconds
    n_frames = int(round(total * fps))
    per_segment = int(round(segment_seconds * fps))
    audio_frame = 960  # 20 ms, as browsers send
    # Encoded packets in time order: (time from start in s, kind, bytes, keyframe)
    video_packets, audio_packets = [], []
    for i in range(n_frames):
        frame = picture.frame(i)
        frame.pts = i
        if i % per_segment == 0:
            frame.pict_type = av.video.frame.PictureType.I
        for packet in venc.encode(frame):
            video_packets.append((packet.pts / fps, bytes(packet), packet.is_keyframe))
    for packet in venc.encode(None):
        video_packets.append((packet.pts / fps, bytes(packet), packet.is_keyframe))
    n_audio = int(total * SAMPLE_RATE) // audio_frame
    pos = 0
    for i in range(n_audio):
        frame = AudioFrame(format="s16", layout="stereo", samples=audio_frame)
        frame.sample_rate = SAMPLE_RATE
        chunk = bytearray()
        while len(chunk) < audio_frame * 4:
            take = min(audio_frame * 4 - len(chunk), len(tone) - pos)
            chunk += tone[pos:pos + take]
            pos = (pos + take) % len(tone)
        frame.planes[0].update(bytes(chunk))
        frame.pts = i * audio_frame
        frame.time_base = aenc.time_base
        for packet in aenc.encode(frame):
            audio_packets.append((max(0, packet.pts) / SAMPLE_RATE, bytes(packet), True))
    for packet in aenc.encode(None):
        audio_packets.append((max(0, packet.pts) / SAMPLE_RATE, bytes(packet), True))

    paths = []
    seq = 0
    for first in range(0, n_frames, per_segment):
        seg_start_rel = first / fps
        seg_end_rel = min(first + per_segment, n_frames) / fps
        closed = seg_end_rel <= seconds + 1e-9
        seq += 1
        name = series_dir / f"{seq:05d}.webm"
        part = name.with_name(name.name + ".part")
        video = [p for p in video_packets if seg_start_rel <= p[0] < seg_end_rel - 1e-9]
        audio = [p for p in audio_packets if seg_start_rel <= p[0] < seg_end_rel - 1e-9]
        _mux_segment(part, width, height, fps, seg_start_rel, video, audio)
        if not closed:
            # Killed mid-segment: cut the file short, no sidecar.
            data = part.read_bytes()
            part.write_bytes(data[: max(1024, len(data) // 2)])
            break
        os.replace(part, name)
        (series_dir / f"{seq:05d}.json").write_text(json.dumps({
            "seq": seq, "start": start + seg_start_rel,
            "duration": round(seg_end_rel - seg_start_rel, 3),
            "video_frames": len(video), "audio_packets": len(audio),
            "width": width, "height": height}))
        paths.append(name)
    return paths


def _mux_segment(path, width, height, fps, seg_start_rel, video, audio):
    out = av.open(str(path), "w", format="webm")
    v = out.add_stream("libvpx", rate=fps)
    v.width, v.height = width, height
    v.time_base = MS
    a = out.add_stream("libopus", rate=SAMPLE_RATE)
    a.layout = "stereo"
    a.time_base = MS
    events = [(t, 0, data, key) for t, data, key in video] + \
             [(t, 1, data, key) for t, data, key in audio]
    events.sort(key=lambda e: (e[0], e[1]))
    last = {0: -1, 1: -1}
    for t, index, data, key in events:
        packet = av.Packet(data)
        packet.stream = v if index == 0 else a
        packet.time_base = MS
        ms = max(int(round((t - seg_start_rel) * 1000)), last[index] + 1)
        last[index] = ms
        packet.pts = packet.dts = ms
        packet.is_keyframe = bool(key)
        out.mux(packet)
    out.close()


def write_call(room_dir, seconds, width=1280, height=720, *, start=1_750_000_000.0, fps=30,
               background="camera"):
    """A two-participant call: client and agent each one series from `start` to the end."""
    conns = {"client": "c1" + "0" * 30, "agent": "a1" + "0" * 30}
    for role, conn in conns.items():
        write_series(room_dir, role, conn, start, seconds, width, height, fps=fps,
                     background=background)
    return start, start + seconds


# --- measurement ------------------------------------------------------------------------------

_CHILD = r"""
import json, os, resource, sys, time
from datetime import datetime, timezone
sys.path.insert(0, sys.argv[1])
work, recordings, start, stop, threads = sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
from app import create_app
from app.config import Config

class C(Config):
    SQLALCHEMY_DATABASE_URI = "sqlite:///" + os.path.join(work, "bench.db")
    INSTANCE_DIR = work
    RECORDINGS_ROOT = recordings
    STORAGE_ROOT = os.path.join(work, "storage")
    RECORDING_DECODE_THREADS = threads
    SECRET_KEY = "bench"

app = create_app(C)
with app.app_context():
    from flask_migrate import upgrade
    upgrade()
    from app.extensions import db
    from app.models import Conference, utcnow
    from app.services import recording
    from app.services.requests import open_request
    from app.services import people, admin
    from app.models import Product
    admin.ensure_default_products()
    person = people.register_person("52998224725", name="Bench", email="b@example.com",
                                    phone="+5511987654321")
    product = db.session.query(Product).filter_by(code="enotariado").one()
    req = open_request(product=product, holder=person, company=None, origin="agent")
    conf = Conference(request=req, kind="instant", state="ended", opens_at=utcnow(),
                      code_nonce="0" * 32, recording_state="recording",
                      recording_started_at=datetime.fromtimestamp(start, timezone.utc),
                      recording_stopped_at=datetime.fromtimestamp(stop, timezone.utc))
    db.session.add(conf)
    db.session.flush()
    os.rename(os.path.join(recordings, "ROOM"), os.path.join(recordings, str(conf.id)))
    recording.ingest_segments(conf)
    conf.recording_state = "processing"
    db.session.commit()
    cid = conf.id
    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    rss_before = rss_mb()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    recording.process(cid)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    conf = db.session.get(Conference, cid)
    print(json.dumps({
        "wall_s": wall,
        "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        "peak_rss_mb": r1.ru_maxrss / 1024,
        "rss_before_mb": rss_before,
        "state": conf.recording_state,
        "duration_ms": conf.recording_duration_ms,
        "size_mb": conf.recording.size / 1e6 if conf.recording else None,
        "notes": conf.recording_notes,
    }))
"""


def measure(call_seconds: float, width: int, height: int, *, threads: int = 1,
            keep: str | os.PathLike | None = None) -> dict:
    """Write a synthetic two-participant call of `call_seconds` at `width`x`height`, process it
    in a fresh Python process and return its figures: wall and CPU seconds, their ratio to the
    call's length, the process's peak RSS, the output's size and duration."""
    cache = Path(keep) if keep else None
    work = Path(tempfile.mkdtemp(prefix="videoar-bench-media-"))
    try:
        name = f"call-{int(call_seconds)}s-{width}x{height}"
        source = (cache / name) if cache else (work / name)
        start = 1_750_000_000.0
        t0 = time.perf_counter()
        if not (source / "done").exists():
            shutil.rmtree(source, ignore_errors=True)
            write_call(source, call_seconds, width, height, start=start)
            (source / "done").write_text("")
        generate_s = time.perf_counter() - t0
        recordings = work / "recordings"
        shutil.copytree(source, recordings / "ROOM", ignore=shutil.ignore_patterns("done"))
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, str(ROOT), str(work), str(recordings), str(start),
             str(start + call_seconds), str(threads)],
            capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        if result.returncode != 0:
            raise RuntimeError(f"processing failed:\n{result.stderr[-4000:]}")
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        figures.update(call_s=call_seconds, width=width, height=height, threads=threads,
                       generate_s=generate_s,
                       ratio=figures["wall_s"] / call_seconds,
                       cpu_ratio=figures["cpu_s"] / call_seconds)
        return figures
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--size", action="append", help="WxH (repeatable); default 1280x720 "
                        "and 640x480")
    parser.add_argument("--threads", type=int, default=1, help="VP8 decoding threads")
    parser.add_argument("--keep", help="cache the synthetic calls in this folder")
    args = parser.parse_args(argv)
    sizes = args.size or ["1280x720", "640x480"]
    print(f"{platform.python_version()} av {av.__version__}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    print("| input | call | wall | wall / call | CPU | CPU / call | peak RSS (before) | output |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in sizes:
        w, h = (int(x) for x in size.split("x"))
        r = measure(args.seconds, w, h, threads=args.threads, keep=args.keep)
        print(f"| 2 × {w}×{h} VP8 30 fps | {r['call_s']:.0f} s | {r['wall_s']:.1f} s "
              f"| {r['ratio']:.2f}× | {r['cpu_s']:.1f} s | {r['cpu_ratio']:.2f}× "
              f"| {r['peak_rss_mb']:.0f} MB ({r['rss_before_mb']:.0f} MB) | {r['size_mb']:.1f} MB, "
              f"{r['duration_ms'] / 1000:.1f} s |", flush=True)
    print("target: wall / call <= 0.5 on one core")


if __name__ == "__main__":
    main()
