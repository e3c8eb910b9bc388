"""Test videos whose frames show their own index or time: encoded with PyAV, read back by the tests and benchmarks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

PTS_PER_SECOND = 90_000
"""Time base of the videos written by :func:`write_test_video`."""


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
    """
    times = [i / fps for i in range(round(duration * fps))] if vfr_timestamps is None else list(vfr_timestamps)
    pts = [round(t * PTS_PER_SECOND) for t in [*times, duration]]
    if pts[0] < 0 or any(b <= a for a, b in zip(pts, pts[1:], strict=False)):
        raise ValueError("Frame times must be >= 0, increasing and below the duration.")
    width, height = size
    paint = _painter(pattern, width, height)
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


def _painter(pattern: str, width: int, height: int) -> Callable[[int, float], np.ndarray]:
    """A function ``(index, time) -> uint8 (height, width, 3)`` drawing ``pattern``."""
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
    raise ValueError(f"Unknown pattern {pattern!r}; use 'index' or 'bar'.")
