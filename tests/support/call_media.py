"""Fake camera and microphone files for Chromium, and checks of what was recorded.

Each participant gets its own 1280×720 `.y4m` (a flat colour of its own with a moving white
bar, so frames change) and its own `.wav` (a sine tone of its own frequency). Chromium plays
them as camera and microphone with `--use-file-for-fake-video-capture` and
`--use-file-for-fake-audio-capture`, looping.
"""
import math
import struct
import wave
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS = 1280, 720, 30
# RGB colours and tones of each side.
CLIENT_RGB, CLIENT_HZ = (30, 70, 200), 440
AGENT_RGB, AGENT_HZ = (220, 120, 20), 1000


def _yuv(rgb):
    r, g, b = rgb
    y = 0.257 * r + 0.504 * g + 0.098 * b + 16
    u = -0.148 * r - 0.291 * g + 0.439 * b + 128
    v = 0.439 * r - 0.368 * g - 0.071 * b + 128
    return int(round(y)), int(round(u)), int(round(v))


def write_y4m(path: Path, rgb, frames: int = 30) -> Path:
    y, u, v = _yuv(rgb)
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        chroma = bytes([u]) * (WIDTH // 2 * HEIGHT // 2) + bytes([v]) * (WIDTH // 2 * HEIGHT // 2)
        for i in range(frames):
            luma = np.full((HEIGHT, WIDTH), y, dtype=np.uint8)
            x = (i * WIDTH // frames) % (WIDTH - 80)
            luma[HEIGHT - 90:HEIGHT - 20, x:x + 80] = 235  # a bar moving along the bottom
            f.write(b"FRAME\n")
            f.write(luma.tobytes())
            f.write(chroma)
    return path


def write_wav(path: Path, hz: float, seconds: float = 2.0, rate: int = 48000) -> Path:
    samples = int(seconds * rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        amplitude = 0.5 * 32767
        w.writeframes(b"".join(struct.pack("<h", int(amplitude * math.sin(2 * math.pi * hz * n / rate)))
                               for n in range(samples)))
    return path


def colour_distance(rgb_a, rgb_b) -> float:
    return math.dist(rgb_a, rgb_b)


def mean_rgb(image: np.ndarray) -> tuple:
    """Mean colour of an RGB array (h, w, 3), ignoring the bottom band where the bar moves."""
    h = image.shape[0]
    return tuple(float(c) for c in image[: int(h * 0.75)].reshape(-1, 3).mean(axis=0))


def tone_strengths(samples: np.ndarray, rate: int, freqs) -> dict:
    """Magnitude at each frequency relative to the median magnitude of the spectrum."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    bins = np.fft.rfftfreq(len(samples), 1 / rate)
    median = float(np.median(spectrum)) or 1e-9
    out = {}
    for f in freqs:
        near = (bins > f - 15) & (bins < f + 15)
        out[f] = float(spectrum[near].max()) / median
    return out
