"""Frame geometry: a decoded frame of any size and rotation becomes the encoder's upright square (the paper's
crop-and-pad, or a centre crop)."""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .configuration_gestures import CROP_FRACTION, FRAME_GEOMETRIES


def square_frame(reformatter: VideoReformatter, frame: av.VideoFrame, size: int, geometry: str) -> np.ndarray:
    """One frame as an upright (display rotation applied, e.g. of phone videos) uint8 RGB ``(size, size, 3)`` square.

    - ``"crop_and_pad"`` (the paper's): remove ``CROP_FRACTION`` (5 %) of the displayed columns from each side, pad
      the shorter side with black to a square, resize to ``size`` (about 90 % of a 16:9 field of view is kept);
    - ``"center_crop"``: resize so the shorter side is ``size``, keep the central square (about 56 % of 16:9).

    The frame is resized once (area averaging) before cropping, so the crop and the padding fall on whole output
    pixels: positions agree with the exact arithmetic to within one pixel.
    """
    turns = round(frame.rotation / 90) % 4  # counter-clockwise quarter turns to display the frame upright
    width, height, cut = resized_layout(frame.width, frame.height, turns, size, geometry)
    # one swscale thread: 30% faster than "auto" for such small outputs, and the decoder has the cores
    rgb = reformatter.reformat(
        frame, width=width, height=height, format="rgb24", interpolation="AREA", threads=1
    ).to_ndarray()
    if geometry == "center_crop":
        return np.ascontiguousarray(np.rot90(_fit(rgb, size), turns))
    upright = np.rot90(rgb, turns)
    return _fit(upright[:, cut : upright.shape[1] - cut], size)


def resized_layout(width: int, height: int, turns: int, size: int, geometry: str) -> tuple[int, int, int]:
    """How :func:`square_frame` shapes a frame stored ``width`` x ``height`` and shown after ``turns`` counter-clockwise
    quarter turns: ``(width, height, cut)``, the size it is resized to (as stored) and the columns then cut off each
    side of the upright resized frame (0 for ``"center_crop"``), before :func:`_fit` makes it a square."""
    if geometry not in FRAME_GEOMETRIES:
        raise ValueError(f"geometry must be one of {', '.join(FRAME_GEOMETRIES)}, got {geometry!r}.")
    shown_width, shown_height = (height, width) if turns % 2 else (width, height)
    if geometry == "center_crop":
        scale = size / min(shown_width, shown_height)
        return max(size, round(width * scale)), max(size, round(height * scale)), 0
    margin = round(CROP_FRACTION * shown_width)
    scale = size / max(shown_width - 2 * margin, shown_height)
    return max(1, round(width * scale)), max(1, round(height * scale)), round(margin * scale)


def fit_span(length: int, size: int) -> tuple[int, int, int]:
    """Along one side of ``length`` pixels, what :func:`_fit` does: ``(first, count, pad)``, the first pixel kept, how
    many are kept, and the black pixels put before them."""
    return max(0, (length - size) // 2), min(length, size), max(0, (size - length) // 2)


def _fit(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop each side of ``rgb`` longer than ``size`` and pad each shorter one with black, centred."""
    square = np.zeros((size, size, 3), dtype=np.uint8)
    (top, rows, pad_top), (left, columns, pad_left) = (fit_span(length, size) for length in rgb.shape[:2])
    square[pad_top : pad_top + rows, pad_left : pad_left + columns] = rgb[top : top + rows, left : left + columns]
    return square
