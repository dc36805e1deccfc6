"""Upload benchmark, server side: time per page to store and render one phone photo.

    .venv/bin/python bench/uploads.py [--runs 30] [--root DIR]

For a 4 MB 12-megapixel JPEG (EXIF orientation 6 and GPS, like a phone's) and a 12-megapixel
HEIC, it times `store_upload`: the original streamed into a LocalStorage (hashed, fsynced,
linked), the type checked from the content, the web rendition and thumbnail made and stored.
Each run stores new content (the previous run's files are deleted), so nothing is skipped as
already stored. Target (issue 3): a 4 MB phone JPEG stored and thumbnailed in <= 250 ms.

The HTTP part (uploads per second with 20 clients, a worker's memory while receiving 20 MB)
is measured on top of this by the web benchmark.
"""
import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import PIL  # noqa: E402
import pillow_heif  # noqa: E402
from PIL import ExifTags, Image  # noqa: E402

from app.services import uploads  # noqa: E402
from app.services.storage import LocalStorage  # noqa: E402

TARGET_MS = 250
WIDTH, HEIGHT = 4032, 3024  # a 12-megapixel phone sensor
JPEG_TARGET_BYTES = 4_000_000


def phone_scene() -> Image.Image:
    """A 12-megapixel picture with a phone photo's entropy: gradients, shapes and sensor noise."""
    gradient = Image.linear_gradient("L").resize((WIDTH, HEIGHT))
    scene = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                                gradient.transpose(Image.Transpose.ROTATE_180)))
    card = Image.new("RGB", (2400, 1500), (235, 225, 200))  # an ID card on a table
    scene.paste(card, (800, 760))
    noise = Image.merge("RGB", [Image.effect_noise((WIDTH, HEIGHT), 40) for _ in range(3)])
    return Image.blend(scene, noise, 0.25)


def phone_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Benchphone"
    exif[ExifTags.Base.Orientation] = 6  # held upright: the sensor's picture is turned
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "S"
    gps[ExifTags.GPS.GPSLatitude] = (23.0, 33.0, 7.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (46.0, 38.0, 2.0)
    return exif


def phone_jpeg(scene: Image.Image) -> bytes:
    """The scene as a JPEG of about 4 MB (the quality is searched for)."""
    best = None
    for quality in range(80, 100):
        out = io.BytesIO()
        scene.save(out, "JPEG", quality=quality, exif=phone_exif())
        best = out.getvalue()
        if len(best) >= JPEG_TARGET_BYTES:
            break
    return best


def phone_heic(scene: Image.Image) -> bytes:
    """The scene as an iPhone writes it: HEVC in 512-pixel grid tiles, about 2 MB."""
    saved = pillow_heif.options.GRID_TILE_SIZE
    pillow_heif.options.GRID_TILE_SIZE = 512
    try:
        out = io.BytesIO()
        scene.save(out, "HEIF", quality=45, exif=phone_exif().tobytes())
        return out.getvalue()
    finally:
        pillow_heif.options.GRID_TILE_SIZE = saved


def measure(storage: LocalStorage, data: bytes, runs: int) -> tuple[list[float], object]:
    times = []
    result = None
    for _ in range(runs + 1):  # the first run warms caches and is not counted
        start = time.perf_counter()
        result = uploads.store_upload(io.BytesIO(data), storage)
        elapsed = time.perf_counter() - start
        times.append(elapsed * 1000)
        for blob in (result.original, result.renditions[0].web, result.renditions[0].thumbnail):
            storage.delete(blob.sha256)
    return times[1:], result


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--root", help="storage root (default: a new temporary directory)")
    args = parser.parse_args(argv)

    scene = phone_scene()
    samples = {"JPEG": phone_jpeg(scene), "HEIC": phone_heic(scene)}
    root = Path(args.root or tempfile.mkdtemp(prefix="videoar-bench-uploads-"))
    storage = LocalStorage(root)
    print(f"Python {platform.python_version()}, Pillow {PIL.__version__}, pillow-heif "
          f"{pillow_heif.__version__}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; storage {root}; {args.runs} runs each")
    print(f"{'input':<34} {'mean ms':>8} {'p95 ms':>8} {'min ms':>8} {'p95/target':>11}")
    for name, data in samples.items():
        times, result = measure(storage, data, args.runs)
        processed = result.processed
        label = (f"{name} {len(data) / 1e6:.1f} MB {WIDTH}x{HEIGHT}"
                 f" -> {processed.web.width}x{processed.web.height}")
        print(f"{label:<34} {statistics.mean(times):8.1f} {p95(times):8.1f} {min(times):8.1f}"
              f" {p95(times) / TARGET_MS:10.2f}x")
    print(f"target: a 4 MB phone JPEG stored and thumbnailed in <= {TARGET_MS} ms "
          "(p95/target <= 1.00 meets it)")


if __name__ == "__main__":
    main()
