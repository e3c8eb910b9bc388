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
    if geometry not in FRAME_GEOMETRIES:
        raise ValueError(f"geometry must be one of {', '.join(FRAME_GEOMETRIES)}, got {geometry!r}.")
    turns = round(frame.rotation / 90) % 4  # counter-clockwise quarter turns to display the frame upright
    shown_width, shown_height = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
    if geometry == "center_crop":
        scale = size / min(shown_width, shown_height)
        width, height = max(size, round(frame.width * scale)), max(size, round(frame.height * scale))
    else:
        margin = round(CROP_FRACTION * shown_width)
        scale = size / max(shown_width - 2 * margin, shown_height)
        width, height = max(1, round(frame.width * scale)), max(1, round(frame.height * scale))
    # one swscale thread: 30% faster than "auto" for such small outputs, and the decoder has the cores
    rgb = reformatter.reformat(
        frame, width=width, height=height, format="rgb24", interpolation="AREA", threads=1
    ).to_ndarray()
    if geometry == "center_crop":
        return np.ascontiguousarray(np.rot90(_fit(rgb, size), turns))
    upright = np.rot90(rgb, turns)
    cut = round(margin * scale)
    return _fit(upright[:, cut : upright.shape[1] - cut], size)


def _fit(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop each side of ``rgb`` longer than ``size`` and pad each shorter one with black, centred."""
    square = np.zeros((size, size, 3), dtype=np.uint8)
    height, width = rgb.shape[:2]
    rows, columns = min(height, size), min(width, size)
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    pad_top, pad_left = max(0, (size - height) // 2), max(0, (size - width) // 2)
    square[pad_top : pad_top + rows, pad_left : pad_left + columns] = rgb[top : top + rows, left : left + columns]
    return square
