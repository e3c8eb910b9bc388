"""Streaming video reading: a video of any length becomes batches of encoder-ready snippets, in flat memory.

The video is decoded once, front to back, with PyAV. Only the frames the current snippet needs are held.

Resampling rule (sample-and-hold by timestamps, like FFmpeg's ``fps`` filter, correct for variable frame
rate): output frame ``k`` has time ``t_k = k / fps`` seconds after the first decoded frame and shows the
last source frame whose timestamp is ``<= t_k + TIME_EPS`` (``TIME_EPS`` absorbs timestamp rounding).
Output stops before the first ``t_k`` that is not earlier than the end of the last source frame (its
timestamp plus its duration), so a video of ``D`` seconds gives ``ceil(D * fps)`` frames (up to
``TIME_EPS``) whatever its own frame rate: a 60 fps and a 25 fps recording of the same scene give frames at
the same times.

Damaged timestamps (:func:`_retime`) never stretch a video: a step between consecutive frames' timestamps longer than
``max(JUMP_SECONDS, JUMP_FRAMES / fps)`` (``fps`` the announced average rate), forward or back, is a timestamp jump,
closed by starting the frame when the previous one ends (at ``1 / fps`` if its duration is absurd too); later frames
keep that shift. Decoding stops ``DURATION_MARGIN`` s past the duration the container announces. What decoding found
is a :class:`DecodeReport`.

Decoding time ranges of a video apart, in parallel, with identical frames: :mod:`.video_ranges`.
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from .configuration_gestures import KINETICS_MEAN, KINETICS_STD
from .frame_geometry import square_frame

if TYPE_CHECKING:
    from .video_ranges import FrameRange

TIME_EPS = 1e-3
"""Seconds of slack when comparing timestamps (source timestamps are rounded to their time base)."""
MAX_FPS = 1000.0
"""Average frame rates above this are treated as broken metadata."""
JUMP_SECONDS, JUMP_FRAMES = 1.0, 50
"""A step between consecutive frames' timestamps longer than both (the latter in frame intervals) is a jump."""
DURATION_MARGIN = 1.0
"""Seconds decoded past the announced duration before decoding stops: no video yields more than that allows."""
_NOT_VIDEO_FORMATS = ("tty", "image2", "image2pipe")  # .txt files are "tty" (ANSI art); images "*_pipe"

T = TypeVar("T")


class VideoError(ValueError):
    """A video that cannot be used: says which file, what is wrong and what to do."""

    def __init__(self, path: str | Path, problem: str, advice: str) -> None:
        super().__init__(str(path), problem, advice)
        self.path = str(path)
        self.problem = problem
        self.advice = advice

    def __str__(self) -> str:
        return f"Cannot use video '{self.path}': {self.problem}. {self.advice}"


class VideoWarning(UserWarning):
    """A video read only in part or with damage (truncated, corrupt packets or frames, broken timestamps); ``report``
    is its :class:`DecodeReport`."""

    def __init__(self, message: str, report: DecodeReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class DecodeReport:
    """What decoding one video found: every count is 0 for an intact video. Pass one to :func:`iter_frames` or
    :func:`iter_snippets` to have it filled; a ``VideoWarning`` carries it too."""

    path: str = ""
    announced_seconds: float = 0.0
    """The duration the container announces."""
    announced_frames: int = 0
    """The frame count the container announces; 0 when it does not say."""
    decoded_seconds: float = 0.0
    """From the first decoded frame's start to the last one's end, timestamp jumps closed."""
    decoded_frames: int = 0
    skipped_packets: int = 0
    """Packets the decoder rejected."""
    corrupt_frames: int = 0
    """Frames FFmpeg decoded but flagged corrupt (they are used)."""
    timestamp_jumps: int = 0
    jump_seconds: float = 0.0
    """Seconds the closed jumps would have added or taken back, in all."""
    overran: bool = False
    """The timestamps ran more than ``DURATION_MARGIN`` s past the announced duration; the rest was dropped."""

    def problems(self) -> list[str]:
        """What is wrong, in words; empty for an intact video. The one place that judges whether the decoded time and
        frames agree with what the container announces (within ``max(0.5 s, 5 %)``)."""
        found = []
        slack = max(0.5, 0.05 * self.announced_seconds)
        if self.overran:
            found.append(f"its timestamps run past the {self.announced_seconds:.2f} s it announces, so decoding "
                         f"stopped {DURATION_MARGIN:g} s after that")
        elif self.decoded_seconds < self.announced_seconds - slack:
            found.append(f"only {self.decoded_seconds:.2f} s of the {self.announced_seconds:.2f} s it announces "
                         "could be decoded")
        elif self.announced_frames and (  # in frames, the same slack as in seconds
            abs(self.decoded_frames - self.announced_frames) * self.announced_seconds > slack * self.announced_frames
        ):
            found.append(f"{self.decoded_frames} frames were decoded where it announces {self.announced_frames}")
        if self.timestamp_jumps:
            found.append(f"{self.timestamp_jumps} timestamp jump(s) ({self.jump_seconds:.1f} s in all) were closed: "
                         "the frame after a jump starts when the one before it ends")
        if self.skipped_packets:
            found.append(f"{self.skipped_packets} corrupt packet(s) were skipped")
        if self.corrupt_frames:
            found.append(f"{self.corrupt_frames} frame(s) were decoded with errors (FFmpeg flags them corrupt)")
        return found


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream."""

    path: str
    duration: float
    """Seconds."""
    fps: float
    """Average frame rate (frames / duration for variable frame rate)."""
    num_frames: int
    """Frame count from the container, or an estimate from duration and fps."""
    width: int
    height: int
    codec: str


@dataclass
class SnippetBatch:
    """Consecutive snippets of one video."""

    pixel_values: torch.Tensor
    """float32 (N, 3, T, H, W), normalised."""
    start_frames: torch.Tensor
    """int64 (N,): index of each snippet's first frame among the resampled frames."""
    start_times: torch.Tensor
    """float64 (N,): seconds from the first frame, ``start_frames / fps``."""

    def __len__(self) -> int:
        return len(self.start_frames)


def count_snippets(num_frames: int, frames_per_snippet: int, stride: int | None = None) -> int:
    """How many snippets ``iter_snippets`` cuts from ``num_frames`` resampled frames."""
    stride = frames_per_snippet if stride is None else stride
    return max(0, (num_frames - frames_per_snippet) // stride + 1)


def probe_video(path: str | Path, *, min_duration: float = 0.0) -> VideoInfo:
    """Read a video's metadata, raising ``VideoError`` if it is not a usable video of ``min_duration`` s."""
    with _open(path) as container:
        info = _describe(container, path)
    if info.duration + TIME_EPS < min_duration:
        raise VideoError(
            path,
            f"it lasts {info.duration:.2f} s but at least {min_duration:.2f} s are needed",
            "Use a longer recording, or a model with shorter snippets.",
        )
    return info


def iter_frames(
    path: str | Path, *, fps: float, size: int, geometry: str = "center_crop", report: DecodeReport | None = None,
    frame_range: FrameRange | None = None, threads: int = 0,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time, frame)``: frames resampled to ``fps`` (see the module docstring for the rule) and made
    ``size`` x ``size`` squares by ``geometry`` (:func:`~.frame_geometry.square_frame`), as uint8 RGB
    ``(size, size, 3)`` arrays.

    Raises ``VideoError`` for unusable files; warns with ``VideoWarning`` if only part could be decoded or the video
    is damaged. ``report`` (if given) is filled as decoding goes: complete once the frames are exhausted.
    ``frame_range`` (a :class:`~.video_ranges.FrameRange`): only those frames, decoded from the keyframe before them,
    identical to a whole decode's; their report counts the range's own source frames and never warns; raises
    :class:`~.video_ranges.RangeUnsafe` where the identity cannot be promised. ``threads``: decoder threads (0:
    FFmpeg's choice).
    """
    if not fps > 0 or size < 1:
        raise ValueError(f"fps and size must be positive, got fps={fps!r}, size={size!r}.")
    report = DecodeReport() if report is None else report
    with _open(path) as container:
        info = _describe(container, path)
        container.streams.video[0].thread_count = threads
        reformatter = VideoReformatter()
        if frame_range is None:
            frames = _resample(_decode(container, info, report), fps)
        else:  # imported here: range decoding builds on this module's decoding
            from .video_ranges import decode_range

            frames = decode_range(container, info, fps, frame_range, report)
        for time, frame in frames:
            yield time, square_frame(reformatter, frame, size, geometry)


def damage_warning(report: DecodeReport) -> VideoWarning | None:
    """The warning telling what ``report`` found, None for an intact video."""
    problems = report.problems()
    if not problems:
        return None
    return VideoWarning(
        f"Video '{report.path}': {', '.join(problems)}; it is probably truncated or damaged. Results cover what "
        "could be decoded; re-export the video to use all of it.",
        report,
    )


def iter_array_frames(
    frames: Any, *, fps: float, size: int, geometry: str = "center_crop", source_fps: float | None = None,
    name: str = "<frames>",
) -> Iterator[tuple[float, np.ndarray]]:
    """Like :func:`iter_frames`, for frames the caller decoded: a uint8 RGB array or tensor ``(T, H, W, 3)`` (or
    ``(T, 3, H, W)``), or a sequence of ``(H, W, 3)`` arrays or PIL images, frame ``i`` shown at ``i / source_fps``
    seconds (``source_fps`` None: the frames are already at ``fps``). Resampled and shaped exactly like a file's."""
    source_fps = fps if source_fps is None else float(source_fps)
    _check_fps(name, source_fps)
    if not fps > 0 or size < 1:
        raise ValueError(f"fps and size must be positive, got fps={fps!r}, size={size!r}.")
    reformatter = VideoReformatter()
    timed = ((i / source_fps, (i + 1) / source_fps, frame) for i, frame in enumerate(frames))
    for time, frame in _resample(timed, fps):
        rgb = av.VideoFrame.from_ndarray(_as_rgb24(frame, name), format="rgb24")
        yield time, square_frame(reformatter, rgb, size, geometry)


def _as_rgb24(frame: Any, name: str) -> np.ndarray:
    """One caller-given frame as a contiguous uint8 ``(H, W, 3)`` array."""
    if hasattr(frame, "convert"):  # a PIL image
        frame = frame.convert("RGB")
    array = frame.numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise VideoError(name, f"a frame has shape {array.shape} and dtype {array.dtype}",
                         "Give uint8 RGB frames of shape (height, width, 3) or (3, height, width).")
    return np.ascontiguousarray(array)


def iter_snippets(
    path: str | Path,
    *,
    fps: float = 15.0,
    frames_per_snippet: int = 8,
    stride: int | None = None,
    size: int = 112,
    geometry: str = "center_crop",
    mean: Sequence[float] = KINETICS_MEAN,
    std: Sequence[float] = KINETICS_STD,
    batch_size: int = 8,
    prefetch_depth: int = 2,
    report: DecodeReport | None = None,
) -> Iterator[SnippetBatch]:
    """Batches of snippets of ``frames_per_snippet`` resampled frames, snippet ``j`` starting at frame
    ``j * stride`` (``stride`` defaults to ``frames_per_snippet``: non-overlapping; 1 gives the paper's dense
    features). Pixels are RGB in [0, 1] normalised with ``mean`` and ``std``.

    The file is probed now (``VideoError`` if it is unusable or shorter than one snippet); it is decoded in
    a background thread ``prefetch_depth`` batches ahead of the consumer (0: in the consumer's thread). ``report``
    (a :class:`DecodeReport`) is complete once the batches are exhausted.
    """
    if prefetch_depth < 0:
        raise ValueError(f"prefetch_depth must be >= 0, got {prefetch_depth}.")
    _check_snippet_settings(fps, frames_per_snippet, stride, batch_size)
    probe_video(path, min_duration=frames_per_snippet / fps)
    frames = iter_frames(path, fps=fps, size=size, geometry=geometry, report=report)
    batches = snippet_batches(frames, name=str(path), fps=fps, frames_per_snippet=frames_per_snippet, stride=stride,
                              mean=mean, std=std, batch_size=batch_size)
    return prefetch(batches, prefetch_depth) if prefetch_depth else batches


def snippet_batches(
    frames: Iterable[tuple[float, np.ndarray]],
    *,
    name: str,
    fps: float,
    frames_per_snippet: int,
    stride: int | None,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
) -> Iterator[SnippetBatch]:
    """Normalise ``(time, uint8 RGB)`` frames at ``fps`` (from :func:`iter_frames` or :func:`iter_array_frames`) and
    cut them into batches of snippets as :func:`iter_snippets` does; ``name`` goes into errors."""
    stride = frames_per_snippet if stride is None else stride
    _check_snippet_settings(fps, frames_per_snippet, stride, batch_size)
    scale, shift = normalisation(mean, std)
    normalised = (_normalise(rgb, scale, shift) for _, rgb in frames)
    return _snippet_batches(name, normalised, fps=fps, frames_per_snippet=frames_per_snippet, stride=stride,
                            batch_size=batch_size)


def _check_snippet_settings(fps: float, frames_per_snippet: int, stride: int | None, batch_size: int) -> None:
    stride = frames_per_snippet if stride is None else stride
    if not fps > 0 or min(frames_per_snippet, stride, batch_size) < 1:
        raise ValueError(
            "fps must be > 0, frames_per_snippet, stride and batch_size >= 1, got "
            f"{fps}, {frames_per_snippet}, {stride} and {batch_size}."
        )


def prefetch(iterable: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``iterable`` in a background thread, at most ``depth`` items ahead of the consumer.

    Exceptions of the producer are raised in the consumer. When the consumer stops early (``break``,
    ``close()``, an exception) the producer stops after its current item, is closed, and its thread joined.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}.")
    items: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(iter(iterable), items, stop), daemon=True, name="prefetch")
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        while not items.empty():  # unblock a producer waiting on a full queue; it then sees ``stop``
            items.get_nowait()
        thread.join()


def _produce(iterator: Iterator[object], items: queue.Queue[tuple[str, object]], stop: threading.Event) -> None:
    try:
        for item in iterator:
            items.put(("item", item))
            if stop.is_set():
                return
        items.put(("done", None))
    except BaseException as error:  # handed to the consumer
        items.put(("error", error))
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


@contextmanager
def _open(path: str | Path) -> Iterator[av.container.InputContainer]:
    file = Path(path)
    if not file.exists():
        raise VideoError(path, "the file does not exist", "Check the path and the current directory.")
    if not file.is_file():
        raise VideoError(path, "it is not a regular file", "Give the path of a video file, not of a folder.")
    if file.stat().st_size == 0:
        raise VideoError(path, "the file is empty (0 bytes)", "Copy or export the video again.")
    try:  # tags that are not UTF-8 (damaged, or another encoding) are not needed: never let them stop a video
        container = av.open(str(file), metadata_errors="replace")
    except av.FFmpegError as error:
        raise VideoError(
            path,
            f"FFmpeg cannot read it ({error}): it is not a video, or it is damaged or truncated (an MP4 cut "
            "short loses its index)",
            "Check that it plays in a video player; copy or export it again.",
        ) from error
    try:
        yield container
    finally:
        container.close()


def _describe(container: av.container.InputContainer, path: str | Path) -> VideoInfo:
    """Check the container holds a usable video stream and describe it."""
    format_name = container.format.name
    if format_name in _NOT_VIDEO_FORMATS or format_name.endswith("_pipe"):
        streams = ", ".join(_codec_name(stream) for stream in container.streams) or "nothing"
        raise VideoError(
            path,
            f"it is not a video: FFmpeg reads it as format '{format_name}' ({streams}), e.g. an image or a "
            "text file with a video extension",
            "Give a video file.",
        )
    if not container.streams:
        raise VideoError(
            path,
            "no audio or video stream was found; the file is probably truncated (e.g. an MP4 cut before its "
            "'moov' index)",
            "Copy or export the video again.",
        )
    if not container.streams.video:
        found = ", ".join(f"{stream.type} ({_codec_name(stream)})" for stream in container.streams)
        raise VideoError(path, f"it has no video stream, only {found}", "Give a file with a video track.")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise VideoError(path, "FFmpeg has no decoder for its video stream (an unknown codec, or a damaged header)",
                         "Re-encode it to H.264, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`.")
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    _check_fps(path, fps)
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    else:
        duration = stream.frames / fps
    if not duration > 0:
        raise VideoError(
            path,
            "its duration is unknown or zero",
            "Remux it into an MP4 with timestamps, e.g. `ffmpeg -i IN -c copy OUT.mp4`.",
        )
    codec = stream.codec_context
    num_frames = stream.frames or round(duration * fps)
    return VideoInfo(str(path), duration, fps, num_frames, codec.width, codec.height, codec.name)


def _codec_name(stream: av.stream.Stream) -> str:
    context = getattr(stream, "codec_context", None)  # data streams (e.g. timecodes) have none
    return context.name if context is not None else "no codec"


def _check_fps(path: str | Path, fps: float) -> None:
    if not 0 < fps <= MAX_FPS:
        raise VideoError(
            path,
            f"its frame rate {fps:g} fps is unknown or absurd (expected between 0 and {MAX_FPS:g})",
            "The timestamps are probably broken; re-encode it, e.g. `ffmpeg -i IN -r 30 OUT.mp4`.",
        )


def _decode(
    container: av.container.InputContainer, info: VideoInfo, report: DecodeReport
) -> Iterator[tuple[float, float, av.VideoFrame]]:
    """Yield ``(start, end, frame)`` in presentation order, in seconds (timestamps checked by :func:`_retime`).

    Undecodable packets are skipped; a ``VideoWarning`` tells what ``report`` found (:meth:`DecodeReport.problems`).
    """
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    report.path, report.announced_seconds, report.announced_frames = info.path, info.duration, stream.frames
    try:
        yield from _retime(_frames(container, stream, report), info.fps, info.duration + DURATION_MARGIN, report)
    except av.FFmpegError as error:
        raise VideoError(
            info.path,
            f"decoding failed after {report.decoded_seconds:.2f} s ({error})",
            "Re-encode it to H.264, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`.",
        ) from error
    finish_decoding(info.path, report)


def finish_decoding(path: str | Path, report: DecodeReport) -> None:
    """After a whole decode of ``path``: ``VideoError`` if no frame came, a ``VideoWarning`` if ``report`` found
    damage."""
    if not report.decoded_frames:
        raise VideoError(path, "no frame could be decoded", "The file is truncated or damaged; re-export it.")
    warning = damage_warning(report)
    if warning is not None:
        warnings.warn(warning, stacklevel=3)


def _frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, report: DecodeReport
) -> Iterator[tuple[float | None, float | None, av.VideoFrame]]:
    """``(time, duration, frame)`` as decoded (seconds, None when unknown); counts skipped packets, corrupt frames."""
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.InvalidDataError:
            report.skipped_packets += 1
            continue
        for frame in frames:
            report.corrupt_frames += frame.is_corrupt
            yield frame.time, float(frame.duration * frame.time_base) if frame.duration > 0 else None, frame


def _retime(
    frames: Iterable[tuple[float | None, float | None, T]], fps: float, limit: float, report: DecodeReport,
    origin: float | None = None,
) -> Iterator[tuple[float, float, T]]:
    """``(start, end, item)`` from decoded ``(time, duration, item)``, none starting ``limit`` s after the first
    (``origin``, if given: the video's first frame, for a :class:`~.video_ranges.FrameRange`).

    A missing time continues from the previous end, a missing duration is the previous frame's; a small step back is
    clamped; a step longer than ``max(JUMP_SECONDS, JUMP_FRAMES / fps)``, forward or back, is a jump: the frame
    follows the previous one by that one's duration (``1 / fps`` if it is as long as a jump) and later frames keep that
    shift. Fills ``report``'s time, frames and jumps.
    """
    interval = 1.0 / fps
    jump = max(JUMP_SECONDS, JUMP_FRAMES * interval)
    previous: float | None = None
    first = shift = end = 0.0
    duration = interval
    for time, length, item in frames:
        start = end if time is None else time - shift
        if previous is None:
            first = start if origin is None else origin
        else:
            if abs(start - previous) > jump:
                step = duration if duration <= jump else interval
                report.timestamp_jumps += 1
                report.jump_seconds += abs(start - previous)
                shift += start - previous - step
                start = previous + step
            start = max(start, previous)
            duration = start - previous or duration
        if start - first >= limit:
            report.overran = True
            return
        duration = length or duration
        report.overran = start + duration - first > limit  # only the last frame's end is ever shown
        previous, end = start, min(start + duration, first + limit)
        report.decoded_frames += 1
        report.decoded_seconds = end - first
        yield start, end, item


def _resample(
    frames: Iterable[tuple[float, float, T]], fps: float, origin: float | None = None, first: int = 0
) -> Iterator[tuple[float, T]]:
    """Sample-and-hold ``(start, end, item)`` at ``k / fps`` s after the first start (module docstring), or after
    ``origin`` from ``k = first`` on (for a :class:`~.video_ranges.FrameRange`: the first item is not later than
    ``first / fps``).

    Items must not be None.
    """
    k = first
    start_of_video = origin
    end = 0.0
    held: T | None = None
    for start, stop, item in frames:
        if held is None:
            origin = start if start_of_video is None else start_of_video
        while held is not None and k / fps < start - origin - TIME_EPS:
            yield k / fps, held
            k += 1
        held, end = item, stop
    while held is not None and k / fps < end - origin - TIME_EPS:
        yield k / fps, held
        k += 1


def normalisation(mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``(scale, shift)`` of shape ``(3, 1, 1)``: ``rgb * scale - shift`` is ``(rgb / 255 - mean) / std``."""
    std_ = np.asarray(std, dtype=np.float64).reshape(3, 1, 1)
    scale = (1.0 / (255.0 * std_)).astype(np.float32)
    shift = (np.asarray(mean, dtype=np.float64).reshape(3, 1, 1) / std_).astype(np.float32)
    return scale, shift


def _normalise(rgb: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) to float32 (3, H, W) ``(rgb / 255 - mean) / std``.

    NumPy, not torch: torch's OpenMP threads on such small tensors fight the decoder's and the model's
    threads (measured 10-100x slower on 2 busy cores).
    """
    out = np.multiply(rgb.transpose(2, 0, 1), scale, dtype=np.float32)
    out -= shift
    return out


def _snippet_batches(
    path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float,
    frames_per_snippet: int,
    stride: int,
    batch_size: int,
) -> Iterator[SnippetBatch]:
    """Cut (3, H, W) frames into snippets, copied straight into batch arrays; holds ``frames_per_snippet``
    frames at most."""
    window: deque[np.ndarray] = deque(maxlen=frames_per_snippet)
    batch = np.empty(0)
    starts: list[int] = []
    produced = False
    for index, frame in enumerate(frames):
        window.append(frame)
        start = index - frames_per_snippet + 1
        if start < 0 or start % stride:
            continue
        if not starts:
            batch = np.empty((batch_size, frame.shape[0], frames_per_snippet, *frame.shape[1:]), np.float32)
        np.stack(window, axis=1, out=batch[len(starts)])
        starts.append(start)
        if len(starts) == batch_size:
            yield _batch(batch, starts, fps)
            starts, produced = [], True
    if starts:
        yield _batch(batch[: len(starts)], starts, fps)
    elif not produced:
        raise too_short(path, frames_per_snippet)


def too_short(path: str | Path, frames_per_snippet: int) -> VideoError:
    """The error for a video that gave fewer frames than one snippet needs."""
    return VideoError(path, f"fewer than {frames_per_snippet} frames could be decoded",
                      "Use a longer or undamaged video.")


def _batch(pixel_values: np.ndarray, starts: list[int], fps: float) -> SnippetBatch:
    start_frames = np.array(starts, dtype=np.int64)
    return SnippetBatch(
        torch.from_numpy(pixel_values), torch.from_numpy(start_frames), torch.from_numpy(start_frames / fps)
    )
