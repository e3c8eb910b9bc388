"""Test videos whose frames show their own index or time, and videos unlike the synthetic seizure cohort: encoded with
PyAV, read back by the tests and benchmarks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

PTS_PER_SECOND = 90_000
"""Time base of the videos written by :func:`write_test_video`."""
UNLIKE_PATTERNS = ("texture", "shapes", "camera", "noise")
"""Scenes made differently from :mod:`gestures_hub.synthetic`'s (no figure, no bed; other content, colours, motion and
camera), for testing whether a model notices a video is unlike its training data."""


def write_test_video(
    path: str | Path,
    *,
    duration: float,
    fps: float,
    size: tuple[int, int] = (64, 48),
    pattern: str = "index",
    vfr_timestamps: Sequence[float] | None = None,
    rotation: int = 0,
    crf: int = 16,
    seed: int = 0,
) -> Path:
    """Encode an H.264 video (container from the suffix, e.g. ``.mp4``, ``.mkv``) whose frames show their time.

    Frames are at ``i / fps`` for ``i < round(duration * fps)``, or at ``vfr_timestamps`` (seconds,
    increasing, below ``duration``; B-frames are then disabled so that MP4 keeps each frame's duration).
    The last frame lasts until ``duration``. ``size`` is (width, height) as stored; ``rotation`` (degrees
    counter-clockwise) is written as display metadata, like phones do. ``crf`` is x264's quality (lower is
    better; the default keeps the "index" colours). x264 runs on one thread, so the same frames always give the same
    bitstream. Patterns:

    - ``"index"``: each frame is one flat colour encoding its index; read it back with ``read_frame_index``.
    - ``"bar"``: a bright vertical bar sweeps left to right once per second over a textured, slightly
      noisy background (realistic bit rate); its centre is at ``x = round((t % 1) * width)``.
    - ``"texture"``, ``"shapes"``, ``"camera"``, ``"noise"`` (:data:`UNLIKE_PATTERNS`, drawn from ``seed``): a
      drifting natural-image-like (1/f) texture; saturated shapes bouncing over a flat background; a camera panning
      and zooming over a large 1/f scene; temporally correlated 1/f noise. Nothing like a figure in bed.
    """
    times = [i / fps for i in range(round(duration * fps))] if vfr_timestamps is None else list(vfr_timestamps)
    pts = [round(t * PTS_PER_SECOND) for t in [*times, duration]]
    if pts[0] < 0 or any(b <= a for a, b in zip(pts, pts[1:], strict=False)):
        raise ValueError("Frame times must be >= 0, increasing and below the duration.")
    width, height = size
    paint = _painter(pattern, width, height, seed)
    options = {"crf": str(crf), "preset": "veryfast", "threads": "1",
               **({"bf": "0"} if vfr_timestamps is not None else {})}
    durations = {a: b - a for a, b in zip(pts, pts[1:], strict=False)}
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001), options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, PTS_PER_SECOND)
        if rotation:
            stream.set_display_rotation(rotation)  # PyAV >= 18

        def mux(packets: list[av.Packet]) -> None:
            for packet in packets:
                packet.duration = durations[packet.pts]
                container.mux(packet)

        for index, (time, stamp) in enumerate(zip(times, pts, strict=False)):
            frame = av.VideoFrame.from_ndarray(paint(index, time), format="rgb24")
            frame.pts, frame.time_base = stamp, Fraction(1, PTS_PER_SECOND)
            mux(stream.encode(frame))
        mux(stream.encode(None))
    return Path(path)


def read_frame_index(rgb: np.ndarray) -> int:
    """The frame index encoded by ``write_test_video(pattern="index")`` in an RGB frame (any size)."""
    levels = np.rint((rgb.reshape(-1, 3).mean(axis=0) - 8.0) / 16.0).astype(int).clip(0, 15)
    return int(levels[0] + 16 * levels[1] + 256 * levels[2])


def _painter(pattern: str, width: int, height: int, seed: int = 0) -> Callable[[int, float], np.ndarray]:
    """A function ``(index, time) -> uint8 (height, width, 3)`` drawing ``pattern``."""
    if pattern in UNLIKE_PATTERNS:
        return _unlike_painter(pattern, width, height, np.random.default_rng([seed, UNLIKE_PATTERNS.index(pattern)]))
    if pattern == "index":
        return lambda index, _: np.broadcast_to(
            np.array([index % 16, index // 16 % 16, index // 256 % 16], dtype=np.uint8) * 16 + 8, (height, width, 3)
        ).copy()
    if pattern == "bar":
        rng = np.random.default_rng(0)
        coarse = rng.integers(40, 160, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        background = np.kron(coarse, np.ones((16, 16, 1), dtype=np.uint8))[:height, :width]
        noises = rng.integers(0, 6, size=(4, height, width, 1), dtype=np.uint8)
        bar = max(2, width // 20)

        def paint(index: int, time: float) -> np.ndarray:
            image = background + noises[index % len(noises)]
            centre = round((time % 1.0) * width)
            image[:, max(0, centre - bar // 2) : centre + bar // 2 + 1] = 240
            return image

        return paint
    raise ValueError(f"Unknown pattern {pattern!r}; use 'index', 'bar' or one of {', '.join(UNLIKE_PATTERNS)}.")


def natural_image(rng: np.random.Generator, height: int, width: int, exponent: float = 1.6) -> np.ndarray:
    """A colour image whose spectrum falls as ``1 / f**exponent`` (like photographs), uint8 ``(height, width, 3)``."""
    fy, fx = np.meshgrid(np.fft.fftfreq(height), np.fft.rfftfreq(width), indexing="ij")
    falloff = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(height, width)) ** exponent
    spectrum = (rng.normal(size=(3, *falloff.shape)) + 1j * rng.normal(size=(3, *falloff.shape))) * falloff
    planes = np.fft.irfft2(spectrum, s=(height, width))
    planes = (planes - planes.mean(axis=(1, 2), keepdims=True)) / planes.std(axis=(1, 2), keepdims=True)
    mixed = np.einsum("chw,cd->hwd", planes, rng.normal(size=(3, 3)) * 0.6) + rng.uniform(-1, 1, size=3)
    return (128 + 55 * mixed).clip(0, 255).astype(np.uint8)


def _unlike_painter(pattern: str, width: int, height: int, rng: np.random.Generator
                    ) -> Callable[[int, float], np.ndarray]:
    if pattern == "texture":
        scene = natural_image(rng, 2 * height, 2 * width)
        velocity = rng.uniform(-1, 1, size=2) * (height / 3, width / 3)  # pixels per second

        def texture(_: int, time: float) -> np.ndarray:
            y, x = (np.array([height, width]) // 2 + velocity * time).astype(int)
            return np.roll(scene, (-y, -x), axis=(0, 1))[:height, :width].copy()

        return texture
    if pattern == "shapes":
        background = rng.integers(0, 256, size=3).astype(np.uint8)
        count = int(rng.integers(3, 7))
        colours = rng.integers(0, 2, size=(count, 3)) * 255  # saturated primaries and their mixes
        colours[(colours == background).all(1)] = 255 - background
        starts = rng.uniform(0, 1, size=(count, 2)) * (height, width)
        speeds = rng.uniform(-1, 1, size=(count, 2)) * (height, width)
        radii = rng.uniform(0.08, 0.2, size=count) * min(height, width)
        rows, cols = np.mgrid[:height, :width]

        def shapes(_: int, time: float) -> np.ndarray:
            image = np.broadcast_to(background, (height, width, 3)).copy()
            span = np.array([height, width])
            centres = np.abs((starts + speeds * time) % (2 * span) - span)  # bouncing between the edges
            for (y, x), radius, colour, square in zip(centres, radii, colours, range(count), strict=True):
                inside = (np.maximum(abs(rows - y), abs(cols - x)) if square % 2 else np.hypot(rows - y, cols - x))
                image[inside < radius] = colour
            return image

        return shapes
    if pattern == "camera":
        scene = natural_image(rng, 3 * height, 3 * width)
        pan = rng.uniform(0.3, 1.0, size=2) * rng.choice([-1, 1], size=2)  # scene fractions per second
        zoom_rate = rng.uniform(0.5, 1.5)

        def camera(_: int, time: float) -> np.ndarray:
            zoom = 1.0 + 0.5 * np.sin(zoom_rate * time)  # 1 to 1.5 x the frame
            centre = (np.array([1.5 * height, 1.5 * width]) + pan * time * (height, width)) % (3 * height, 3 * width)
            ys = (centre[0] + (np.arange(height) - height / 2) * zoom).astype(int) % (3 * height)
            xs = (centre[1] + (np.arange(width) - width / 2) * zoom).astype(int) % (3 * width)
            return scene[np.ix_(ys, xs)]

        return camera
    frames = [natural_image(rng, height, width, exponent=1.2) for _ in range(8)]

    def noise(index: int, time: float) -> np.ndarray:  # crossfades between 8 noise images, a new one every 0.5 s
        phase = time * 2.0
        first, weight = int(phase) % len(frames), phase % 1.0
        mixed = (1 - weight) * frames[first] + weight * frames[(first + 1) % len(frames)]
        return mixed.astype(np.uint8)

    return noise
