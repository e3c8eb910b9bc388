"""Video processor of GESTURES models: a video file (or caller-decoded frames) in, normalised snippets out.

Every setting that shapes the pixels (frame rate, snippet length, image size, mean and std) is read from the model's
config, so it is stated once: ``video_preprocessor_config.json`` holds only what is the processor's own (the snippet
stride and the encoder batch size).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.image_processing_utils import BatchFeature
from transformers.video_processing_utils import BaseVideoProcessor

from .configuration_gestures import GesturesConfig, config_from_pretrained
from .video_reader import (
    DecodeReport,
    SnippetBatch,
    VideoError,
    iter_array_frames,
    iter_snippets,
    probe_video,
    snippet_batches,
)

HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies",
              "_commit_hash")
"""Keyword arguments of ``from_pretrained`` that say where files come from (also used to read ``config.json``)."""


@dataclass
class SnippetStream:
    """The snippets of one video, produced batch by batch as they are iterated (decoding never runs ahead by more
    than a couple of batches): only one batch of pixels is in memory at a time."""

    duration: float
    """Seconds: what the container announces, or frames / source fps."""
    batches: Iterator[SnippetBatch]
    report: DecodeReport
    """What decoding found (damage, timestamp jumps, ...), with the file's path (``"<frames>"`` for caller-decoded
    frames): complete once the batches are used up."""

    def __iter__(self) -> Iterator[SnippetBatch]:
        return self.batches


class GesturesVideoProcessor(BaseVideoProcessor):
    r"""Turns videos into the `pixel_values` of a GESTURES model.

    Frames are resampled by their timestamps to the model's `fps` (sample-and-hold, correct for variable frame rate),
    made `image_size` squares by the model's `frame_geometry` (the paper's crop-and-pad, or a centre crop), scaled to
    [0, 1] and normalised with the model's `image_mean` / `image_std`; snippets of `frames_per_snippet` frames start
    every `stride` frames.

    Args:
        config ([`GesturesConfig`] or `dict`, *optional*):
            The model's configuration (defaults to the paper's `gestures-blstm`). `from_pretrained` reads it from the
            same folder or repository.
        stride (`int`, *optional*):
            Frames between snippet starts; defaults to `frames_per_snippet` (non-overlapping snippets). 1 gives the
            paper's dense features.
        batch_size (`int`, *optional*, defaults to 16):
            Snippets per batch when streaming (:meth:`stream`); the pipeline encodes one such batch at a time.
    """

    model_input_names = ["pixel_values", "attention_mask"]

    def __init__(self, config: GesturesConfig | dict | None = None, stride: int | None = None, batch_size: int = 16,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = GesturesConfig.from_dict(config)
        self.config = config if config is not None else GesturesConfig()
        if stride is not None and (not isinstance(stride, int) or stride < 1):
            raise ValueError(f"stride must be a positive number of frames, got {stride!r}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive number of snippets, got {batch_size!r}.")
        self.stride = stride
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> GesturesVideoProcessor:
        """Load ``video_preprocessor_config.json`` and the model's ``config.json`` from a folder or Hub repository."""
        config = kwargs.pop("config", None)
        hub = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
        processor_dict, rest = cls.get_video_processor_dict(pretrained_model_name_or_path, **kwargs)
        if not isinstance(config, GesturesConfig):
            config = config_from_pretrained(pretrained_model_name_or_path, **hub)
        overrides = {key: rest[key] for key in ("stride", "batch_size") if key in rest}
        return cls(config=config, **{**processor_dict, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """What ``video_preprocessor_config.json`` holds: the processor's own settings, never the model config's."""
        output = {"video_processor_type": type(self).__name__, "stride": self.stride, "batch_size": self.batch_size}
        if getattr(self, "auto_map", None):
            output["auto_map"] = self.auto_map
        return output

    @property
    def snippet_stride(self) -> int:
        return self.stride or self.config.frames_per_snippet

    def stream(self, video: Any, *, stride: int | None = None, batch_size: int | None = None,
               video_fps: float | None = None) -> SnippetStream:
        """The snippets of one video, batch by batch, in flat memory whatever its length.

        ``video`` is a path, or frames the caller decoded (see :func:`iter_array_frames`) shown at ``video_fps``
        (default: the model's fps). Raises :class:`VideoError` for unusable videos and videos shorter than a snippet.
        """
        config = self.config
        settings = {"fps": config.fps, "frames_per_snippet": config.frames_per_snippet,
                    "stride": stride or self.snippet_stride, "mean": config.image_mean, "std": config.image_std,
                    "batch_size": batch_size or self.batch_size}
        report = DecodeReport(str(video) if isinstance(video, (str, Path)) else "<frames>")
        if isinstance(video, (str, Path)):
            duration = probe_video(video, min_duration=config.snippet_duration).duration
            batches = iter_snippets(video, size=config.image_size, geometry=config.frame_geometry, report=report,
                                    **settings)
            return SnippetStream(duration, batches, report)
        frames = _frame_sequence(video)
        name = "<frames>"
        duration = len(frames) / (video_fps or config.fps)
        if duration + 1e-9 < config.snippet_duration:
            raise VideoError(name, f"{len(frames)} frames last {duration:.2f} s, shorter than one snippet "
                             f"({config.snippet_duration:.2f} s)", "Give more frames.")
        timed = iter_array_frames(frames, fps=config.fps, size=config.image_size, geometry=config.frame_geometry,
                                  source_fps=video_fps, name=name)
        return SnippetStream(duration, snippet_batches(timed, name=name, **settings), report)

    def preprocess(self, videos: Any, *, stride: int | None = None, video_fps: float | None = None,
                   return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        """All snippets of one video or a list of videos, padded to the longest.

        Returns `pixel_values` `(batch, snippets, 3, frames, height, width)`, `attention_mask` `(batch, snippets)`
        (1 for real snippets) and `snippet_times` `(batch, snippets)` (start of each snippet in seconds; 0 at
        padding). This holds every snippet in memory: for long videos use :meth:`stream` (the pipeline does).
        """
        if kwargs:
            raise TypeError(f"Unexpected argument(s) {', '.join(kwargs)} for GesturesVideoProcessor.")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt' (or None), got {return_tensors!r}.")
        items = list(videos) if isinstance(videos, (list, tuple)) and not _is_one_video(videos) else [videos]
        if not items:
            raise ValueError("No video given.")
        clips = []
        for video in items:
            batches = list(self.stream(video, stride=stride, video_fps=video_fps))
            clips.append((torch.cat([b.pixel_values for b in batches]), torch.cat([b.start_times for b in batches])))
        longest = max(len(pixels) for pixels, _ in clips)
        pixel_values = clips[0][0].new_zeros((len(clips), longest, *clips[0][0].shape[1:]))
        attention_mask = torch.zeros(len(clips), longest, dtype=torch.long)
        snippet_times = torch.zeros(len(clips), longest, dtype=torch.float64)
        for row, (pixels, times) in enumerate(clips):
            pixel_values[row, : len(pixels)] = pixels
            attention_mask[row, : len(pixels)] = 1
            snippet_times[row, : len(pixels)] = times
        return BatchFeature({"pixel_values": pixel_values, "attention_mask": attention_mask,
                             "snippet_times": snippet_times})


def _is_one_video(videos: Any) -> bool:
    """A path, a 4-D array, or a list of frames is one video; a list of those is a batch."""
    if isinstance(videos, (str, Path)) or _is_frame_array(videos):
        return True
    first = videos[0] if isinstance(videos, (list, tuple)) and videos else None
    return hasattr(first, "convert") or (isinstance(first, (np.ndarray, torch.Tensor)) and first.ndim == 3)


def _is_frame_array(video: Any) -> bool:
    """One video given as a 4-D array or tensor (a list of videos is a list)."""
    return isinstance(video, (np.ndarray, torch.Tensor)) and video.ndim == 4


def _frame_sequence(video: Any) -> Any:
    if _is_frame_array(video) or (isinstance(video, (list, tuple)) and video):
        return video
    raise TypeError(f"A video is a file path, a (frames, height, width, 3) uint8 array or tensor, or a list of frames; "
                    f"got {type(video).__name__}.")


__all__ = ["GesturesVideoProcessor", "SnippetStream"]
