"""An optional hardware decoder: torchcodec (NVDEC on a CUDA GPU), giving the frames :func:`iter_frames` gives.

:func:`iter_frames` yields what :func:`gestures_hub.model.video_reader.iter_frames` yields, ``(time, uint8 RGB (size,
size, 3))``, for a video decoded by torchcodec on a device: the same frames are selected (torchcodec's frame
timestamps go through the reader's own :func:`~gestures_hub.model.video_reader._retime` and
:func:`~gestures_hub.model.video_reader._resample`), and shaped by the same geometry
(:func:`~gestures_hub.model.frame_geometry.resized_layout`), computed with torch on the decoder's device (torchcodec
turns the frames upright; they are turned back to the stored picture, resized by :func:`resize_like_swscale`, turned,
cropped and padded as :func:`~gestures_hub.model.frame_geometry.square_frame` does); only the small squares cross to
the host, where ``snippet_batches`` normalises and batches them unchanged. Frames are decoded ``CHUNK_FRAMES`` at a
time, so memory stays flat whatever the video's length.

The pixels are not bit-identical to PyAV's (torchcodec converts the colours at full resolution and the frame is resized
afterwards, as swscale would have resized its luma and chroma; swscale does both in one fixed-point pass):
:func:`compare_decoders` measures the difference on a video's first frames, against ``MAX_MEAN_LEVELS`` and
``MAX_P99_LEVELS``. :func:`choose_decoder` picks torchcodec (``--decoder auto``) only on CUDA and only where that check
passes.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .model.configuration_gestures import GesturesConfig
from .model.frame_geometry import fit_span, resized_layout
from .model.video_reader import (
    DURATION_MARGIN,
    DecodeReport,
    SnippetBatch,
    VideoError,
    _resample,
    _retime,
    finish_decoding,
    prefetch,
    probe_video,
    snippet_batches,
)
from .model.video_reader import iter_frames as pyav_frames

DECODERS = ("auto", "pyav", "torchcodec")
CHUNK_FRAMES = 32
"""Source frames torchcodec decodes per call: at most two chunks are held (1080p: 2 x 32 x 6 MB)."""
RESIZE_ELEMENTS = 2**24
"""Float elements of full-resolution frames resized at once (64 MB): 18 frames of 640x480, 2 of 1080p."""
CHECK_FRAMES = 32
"""Frames :func:`compare_decoders` compares by default."""
MAX_MEAN_LEVELS = 1.5
MAX_P99_LEVELS = 8.0
"""Tolerance of :func:`compare_decoders`, in 0-255 levels of the uint8 RGB squares: the mean absolute difference over
every pixel and channel, and its 99th percentile; the frames must also come at exactly the same times. Measured on the
CPU between PyAV 18 (its own FFmpeg) and torchcodec 0.17 (Debian's FFmpeg 5.1), first 32 frames at 15 fps, 112 x 112:
on the package's H.264 test videos (640x480, 1280x720, 320x180, 64x48; 25-60 fps, variable frame rate, rotated) mean
0.46-0.64 with ``crop_and_pad``, 1.1-1.2 with ``center_crop`` (whose odd resized width makes swscale dither), 99th
percentile 2-4, maxima 3-42 (on saturated colour edges); on FFmpeg's testsrc2 as BT.709, full-range, 4:2:2 H.264 and
MPEG-4 Part 2: mean 0.3-1.0, 99th percentile 3-6. The full-resolution RGB frames are identical; what remains is
swscale's fixed-point arithmetic and dithering. Shifting the square by one pixel gives a 99th percentile of 19-91; a
video whose colours clip (tagged BT.709 but encoded as BT.601) 12, and ``auto`` keeps PyAV for it. NVDEC's colour
conversion on a GPU was not measured (no GPU was available)."""
INSTALL = "pip install 'gestures-hub[torchcodec]'"


@dataclass(frozen=True)
class Faithfulness:
    """How torchcodec's first ``frames`` frames of a video compare with PyAV's (:func:`compare_decoders`)."""

    path: str
    frames: int
    same_times: bool
    """Both decoders gave the same number of frames at exactly the same times."""
    mean: float
    """Mean absolute difference per pixel and channel, in 0-255 levels."""
    p99: float
    max: float

    @property
    def faithful(self) -> bool:
        return self.same_times and self.frames > 0 and self.mean <= MAX_MEAN_LEVELS and self.p99 <= MAX_P99_LEVELS

    def describe(self) -> str:
        if not self.same_times:
            return f"its first {self.frames} frames come at other times than PyAV's"
        return (f"mean {self.mean:.2f}, 99th percentile {self.p99:.1f}, max {self.max:.0f} levels over {self.frames} "
                f"frames (tolerance: mean {MAX_MEAN_LEVELS}, 99th percentile {MAX_P99_LEVELS})")


def torchcodec_problem() -> str | None:
    """Why torchcodec cannot decode videos here, with what to install; None when it can."""
    try:
        import torchcodec
    except ModuleNotFoundError as error:
        if error.name != "torchcodec":
            raise
        return f"torchcodec is not installed ({INSTALL})"
    except Exception as error:  # noqa: BLE001 - e.g. built for another torch: say so, decode with PyAV
        return f"torchcodec cannot be imported ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    if torchcodec.ffmpeg_major_version is None:
        return ("FFmpeg libraries for torchcodec are missing: install FFmpeg's shared libraries (versions 4 to 9), "
                "e.g. `apt-get install ffmpeg`")
    return None


def choose_decoder(
    requested: str, device: torch.device, probe_video_path: str | Path | None, *, fps: float = 15.0,
    size: int = 112, geometry: str = "crop_and_pad", decode_workers: int | None = None,
) -> tuple[str, str]:
    """``(decoder, why)``: ``"pyav"`` or ``"torchcodec"`` for ``requested`` (one of :data:`DECODERS`) on ``device``.

    ``"auto"`` takes torchcodec only where ``device`` is CUDA, torchcodec imports and finds FFmpeg, no PyAV decoder
    processes are asked for (``decode_workers`` > 0) and :func:`compare_decoders` finds it faithful on
    ``probe_video_path`` at ``fps``, ``size`` and ``geometry``; else PyAV, ``why`` telling why. ``"torchcodec"`` uses
    it on ``device`` (a CPU too), and raises ``ValueError`` saying what to do if it cannot be used.
    """
    if requested not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {requested!r}.")
    if requested == "pyav":
        return "pyav", "asked for (--decoder pyav)"
    if requested == "torchcodec":
        if decode_workers:
            raise ValueError(f"--decoder torchcodec decodes in this process, but --decode-workers {decode_workers} "
                             "asks for PyAV decoder processes: pass --decode-workers 0 with it, or --decoder pyav.")
        problem = torchcodec_problem()
        if problem is not None:
            raise ValueError(f"--decoder torchcodec cannot be used: {problem}. Or pass --decoder pyav.")
        return "torchcodec", f"asked for (--decoder torchcodec), decoding on {device}"
    if device.type != "cuda":  # checked first: on a CPU, torchcodec (and its FFmpeg) is not even imported
        return "pyav", "no CUDA device: PyAV decodes on the CPU"
    problem = torchcodec_problem()
    if problem is not None:
        return "pyav", problem
    if decode_workers:
        return "pyav", f"--decode-workers {decode_workers} asks for PyAV decoder processes"
    if probe_video_path is None:
        return "pyav", "no video to check torchcodec's frames on"
    name = Path(probe_video_path).name
    try:
        check = compare_decoders(probe_video_path, fps=fps, size=size, geometry=geometry, device=device)
    except (VideoError, RuntimeError) as error:
        return "pyav", f"torchcodec could not be checked on {name} ({error})"
    if not check.faithful:
        return "pyav", f"torchcodec's frames differ from PyAV's on {name}: {check.describe()}"
    return "torchcodec", f"decoding on {device}; its frames match PyAV's on {name}: {check.describe()}"


def compare_decoders(
    path: str | Path, *, fps: float, size: int, geometry: str, device: torch.device | str = "cpu",
    frames: int = CHECK_FRAMES,
) -> Faithfulness:
    """Decode the first ``frames`` frames of ``path`` with PyAV and with torchcodec on ``device``, and compare them."""
    with warnings.catch_warnings():  # damage is reported when the video is extracted, not by this check
        warnings.simplefilter("ignore")
        reference = list(itertools.islice(pyav_frames(path, fps=fps, size=size, geometry=geometry), frames))
        decoded = list(itertools.islice(iter_frames(path, fps=fps, size=size, geometry=geometry, device=device),
                                        frames))
    same_times = [time for time, _ in reference] == [time for time, _ in decoded]
    if not same_times or not reference:
        return Faithfulness(str(path), len(reference), False, float("inf"), float("inf"), float("inf"))
    difference = np.abs(np.stack([rgb for _, rgb in reference]).astype(np.int16)
                        - np.stack([rgb for _, rgb in decoded]).astype(np.int16))
    return Faithfulness(str(path), len(reference), True, float(difference.mean()),
                        float(np.percentile(difference, 99)), float(difference.max()))


def stream_snippets(
    path: str | Path, config: GesturesConfig, *, device: torch.device | str, stride: int | None = None,
    batch_size: int = 16, report: DecodeReport | None = None, prefetch_depth: int = 2,
) -> Iterator[SnippetBatch]:
    """The snippet batches of ``GesturesVideoProcessor(config).stream(path)``, from frames torchcodec decodes on
    ``device``, in a background thread ``prefetch_depth`` batches ahead. ``VideoError`` now if the file is unusable or
    shorter than a snippet."""
    probe_video(path, min_duration=config.snippet_duration)
    frames = iter_frames(path, fps=config.fps, size=config.image_size, geometry=config.frame_geometry, device=device,
                         report=report)
    batches = snippet_batches(frames, name=str(path), fps=config.fps, frames_per_snippet=config.frames_per_snippet,
                              stride=stride, mean=config.image_mean, std=config.image_std, batch_size=batch_size)
    return prefetch(batches, prefetch_depth) if prefetch_depth else batches


def iter_frames(
    path: str | Path, *, fps: float, size: int, geometry: str = "center_crop", device: torch.device | str = "cpu",
    report: DecodeReport | None = None, chunk_frames: int = CHUNK_FRAMES, threads: int = 0,
) -> Iterator[tuple[float, np.ndarray]]:
    """Like :func:`gestures_hub.model.video_reader.iter_frames` (same times, same geometry, pixels within
    :func:`compare_decoders`' tolerance), decoded by torchcodec on ``device``, ``chunk_frames`` frames at a time.

    The container is checked and described by PyAV first (the same ``VideoError`` for unusable files, the same
    announced frame rate and duration for the timestamp rules); torchcodec's own failures raise ``VideoError`` too.
    ``report`` is filled as for PyAV, except the corrupt packets and frames, which torchcodec does not count.
    ``threads``: FFmpeg's decoder threads on a CPU (0: its choice).
    """
    if not fps > 0 or size < 1:
        raise ValueError(f"fps and size must be positive, got fps={fps!r}, size={size!r}.")
    report = DecodeReport() if report is None else report
    info = probe_video(path)
    decoder = _open(path, device, threads)
    report.path, report.announced_seconds = info.path, info.duration
    report.announced_frames = decoder.metadata.num_frames_from_header or 0
    turns = round((decoder.metadata.rotation or 0) / 90) % 4
    color_space = decoder.metadata.color_space
    timed = _retime(_chunks(decoder, path, chunk_frames, report), info.fps, info.duration + DURATION_MARGIN, report)
    for chunk, selected in _by_chunk(_resample(timed, fps)):
        unique = sorted({index for _, index in selected})
        squares = square_frames(chunk[unique], size, geometry, turns, color_space).cpu().numpy()
        position = {index: place for place, index in enumerate(unique)}
        for time, index in selected:
            yield time, squares[position[index]]
    finish_decoding(path, report)


def _open(path: str | Path, device: torch.device | str, threads: int) -> Any:
    """torchcodec's ``VideoDecoder`` of ``path`` on ``device`` (exact seeking: one scan of the file indexes every
    frame's timestamp, so each chunk continues where the previous one ended)."""
    problem = torchcodec_problem()
    if problem is not None:
        raise RuntimeError(f"torchcodec cannot decode {path}: {problem}.")
    from torchcodec.decoders import VideoDecoder

    try:
        return VideoDecoder(str(path), device=str(device), seek_mode="exact", num_ffmpeg_threads=threads)
    except (RuntimeError, ValueError) as error:
        raise VideoError(path, f"torchcodec cannot open it ({str(error).splitlines()[0][:300]})",
                         "Decode it with PyAV (--decoder pyav), or re-encode it to H.264, e.g. "
                         "`ffmpeg -i IN -c:v libx264 OUT.mp4`.") from error


def _chunks(
    decoder: Any, path: str | Path, chunk_frames: int, report: DecodeReport
) -> Iterator[tuple[float, float | None, tuple[torch.Tensor, int]]]:
    """``(time, duration, (chunk, index))`` of every frame, in presentation order: ``chunk`` holds ``chunk_frames``
    decoded frames (uint8 ``(n, 3, H, W)`` on the decoder's device), ``index`` the frame's place in it."""
    total = len(decoder)
    for start in range(0, total, chunk_frames):
        try:
            batch = decoder.get_frames_in_range(start, min(total, start + chunk_frames))
        except RuntimeError as error:
            raise VideoError(path, f"torchcodec's decoding failed after {report.decoded_seconds:.2f} s "
                             f"({str(error).splitlines()[0][:300]})",
                             "Decode it with PyAV (--decoder pyav), or re-encode it to H.264.") from error
        times, durations = batch.pts_seconds.tolist(), batch.duration_seconds.tolist()
        for index, (time, duration) in enumerate(zip(times, durations, strict=True)):
            yield time, duration if duration > 0 else None, (batch.data, index)


def _by_chunk(
    frames: Iterable[tuple[float, tuple[torch.Tensor, int]]]
) -> Iterator[tuple[torch.Tensor, list[tuple[float, int]]]]:
    """Group the selected ``(time, (chunk, index))`` by chunk: ``(chunk, [(time, index), ...])``."""
    chunk: torch.Tensor | None = None
    selected: list[tuple[float, int]] = []
    for time, (data, index) in frames:
        if data is not chunk:
            if selected:
                yield chunk, selected
            chunk, selected = data, []
        selected.append((time, index))
    if selected:
        yield chunk, selected


def square_frames(frames: torch.Tensor, size: int, geometry: str, turns: int = 0,
                  color_space: str | None = None) -> torch.Tensor:
    """:func:`~gestures_hub.model.frame_geometry.square_frame` on the device of ``frames``: upright uint8
    ``(n, 3, H, W)`` frames, shown after ``turns`` counter-clockwise quarter turns of their stored picture, become uint8
    ``(n, size, size, 3)`` squares, resized (:func:`resize_like_swscale`), turned, cropped and padded as PyAV's are."""
    stored = torch.rot90(frames, -turns, dims=(2, 3)) if turns else frames
    height, width = stored.shape[-2:]
    resized_width, resized_height, cut = resized_layout(width, height, turns, size, geometry)
    step = max(1, RESIZE_ELEMENTS // (3 * height * width))
    with torch.inference_mode():
        resized = torch.cat([resize_like_swscale(part.float(), resized_height, resized_width, color_space)
                             for part in stored.split(step)])
        if geometry == "center_crop":  # PyAV fits the stored picture, then turns it upright
            square = torch.rot90(_fit(resized, size), turns, dims=(2, 3))
        else:
            upright = torch.rot90(resized, turns, dims=(2, 3))
            square = _fit(upright[..., cut : upright.shape[-1] - cut], size)
        return square.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


CHROMA_OFFSET = 0.25
"""Chroma pixels by which swscale places 4:2:0 chroma left of the centre of its two luma columns (MPEG-2 siting)."""
LUMA_WEIGHTS = {"bt709": (0.2126, 0.0722), "bt2020nc": (0.2627, 0.0593), "bt2020c": (0.2627, 0.0593)}
"""``(Kr, Kb)`` of the colour matrices other than BT.601's ``(0.299, 0.114)``, by FFmpeg's colour-space name."""


def resize_like_swscale(rgb: torch.Tensor, height: int, width: int, color_space: str | None = None) -> torch.Tensor:
    """Float RGB ``(n, 3, H, W)`` decoded from 4:2:0 video, resized to ``(n, 3, height, width)`` the way PyAV's
    ``reformat(format="rgb24", interpolation="AREA")`` of the YUV frame does it: swscale resizes the luma from full
    resolution and the chroma from half resolution (here: 2 x 2 means of the decoded RGB's chroma, sited as
    ``CHROMA_OFFSET`` says), each with the area filter (:func:`area_weights`), and writes one chroma sample for each
    horizontal pair of output pixels (for every pixel when the width is odd). Luma and chroma are separated with the
    video's colour matrix (``color_space``, BT.601 when unknown, as swscale assumes). Measured against PyAV, not
    derived from swscale's source; other chroma layouts (4:2:2, 4:4:4) are approximated, and the faithfulness check
    (:func:`compare_decoders`) judges them."""
    red, blue = LUMA_WEIGHTS.get(color_space or "", (0.299, 0.114))
    green = 1 - red - blue
    to_yuv = torch.tensor([[red, green, blue], [-red, -green, 1 - blue], [1 - red, -green, -blue]],
                          dtype=torch.float64)
    to_rgb = torch.linalg.inv(to_yuv).float().to(rgb.device)
    yuv = torch.einsum("ck,nkhw->nchw", to_yuv.float().to(rgb.device), rgb)
    source_height, source_width = rgb.shape[-2:]
    device = rgb.device
    luma = area_weights(source_height, height, device) @ yuv[:, :1] @ area_weights(source_width, width, device).T
    chroma = torch.nn.functional.avg_pool2d(yuv[:, 1:], 2, ceil_mode=True)
    chroma_height, chroma_width = chroma.shape[-2:]
    rows = area_weights(chroma_height, height, device)
    if width % 2:  # swscale then writes every pixel's chroma (and dithers)
        chroma = rows @ chroma @ area_weights(chroma_width, width, device, CHROMA_OFFSET).T
    else:
        chroma = (rows @ chroma @ area_weights(chroma_width, width // 2, device, CHROMA_OFFSET).T
                  ).repeat_interleave(2, dim=-1)
    return torch.einsum("ck,nkhw->nchw", to_rgb, torch.cat([luma, chroma], dim=1))


def _fit(frames: torch.Tensor, size: int) -> torch.Tensor:
    """``frames`` ``(n, 3, H, W)`` centre-cropped or padded with black to ``size`` squares, as the reader's ``_fit``."""
    (top, rows, pad_top), (left, columns, pad_left) = (fit_span(length, size) for length in frames.shape[-2:])
    kept = frames[..., top : top + rows, left : left + columns]
    return torch.nn.functional.pad(kept, (pad_left, size - columns - pad_left, pad_top, size - rows - pad_top))


@functools.lru_cache(maxsize=64)
def area_weights(source: int, target: int, device: torch.device, offset: float = 0.0) -> torch.Tensor:
    """float32 ``(target, source)`` weights resizing ``source`` pixels to ``target`` as swscale's ``SWS_AREA`` does
    (what PyAV's ``interpolation="AREA"`` uses): shrinking, each output pixel averages the source pixels under it,
    weighted by how much of each it covers; enlarging, it interpolates the two nearest source pixels linearly. Pixel
    centres are aligned (``offset``: source pixels to add to the output pixels' centres, for samples sited off-centre);
    taps past an edge fall on the edge pixel. The same as swscale's to rounding (measured on grey pictures, shrunk and
    enlarged, against PyAV)."""
    scale = source / target
    centres = (torch.arange(target, dtype=torch.float64) + 0.5) * scale - 0.5 + offset
    if scale > 1:
        distance = (torch.arange(source, dtype=torch.float64)[None, :] - centres[:, None]).abs()
        weights = ((scale + 1) / 2 - distance).clamp(0, 1)
    else:
        first = centres.floor()
        near = 1 - (centres - first)
        taps = torch.stack([first, first + 1], dim=1).clamp(0, source - 1).long()
        weights = torch.zeros(target, source, dtype=torch.float64).scatter_add_(
            1, taps, torch.stack([near, 1 - near], dim=1))
    return (weights / weights.sum(dim=1, keepdim=True)).float().to(device)


__all__ = ["DECODERS", "MAX_MEAN_LEVELS", "MAX_P99_LEVELS", "Faithfulness", "choose_decoder", "compare_decoders",
           "iter_frames", "square_frames", "stream_snippets", "torchcodec_problem", "area_weights"]
