"""Video snippets for end-to-end training (``gestures train --train-encoder``).

Each video of the manifest is decoded once (:func:`gestures_hub.model.video_reader.iter_frames`, at the encoder's
frame rate and image size) into a uint8 ``(frames, size, size, 3)`` array in a frame cache folder, keyed by the file
(path, size, modification time) and the decoding settings; later runs memory-map it. :class:`VideoBank` then serves
snippets to training like :class:`gestures_hub.training_data.FeatureBank` serves features: one snippet per start frame
(stride 1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import nn
from tqdm.auto import tqdm

from .extract import FAILURES_FILENAME, ManifestRow, read_manifest, write_failures
from .features import LABEL_NAMES, LabelledVideos, atomic_write
from .model.configuration_gestures import GesturesConfig
from .model.modeling_gestures import GesturesForVideoClassification
from .model.video_reader import iter_frames, normalisation
from .sampling import pad_features


def frame_cache_path(path: Path, config: GesturesConfig, folder: Path) -> Path:
    """Where the frames of video ``path`` decoded for ``config`` (fps, image size) are cached."""
    stat = path.stat()
    key = (f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{config.fps!r}|{config.image_size}|"
           f"{config.frame_geometry}")
    return folder / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"


def cached_frames(path: Path, config: GesturesConfig, folder: Path) -> np.ndarray:
    """The frames of a video, ``(frames, size, size, 3)`` uint8, memory-mapped; decoded and cached on first use."""
    cache = frame_cache_path(path, config, folder)
    if not cache.is_file():
        frames = np.stack([rgb for _, rgb in iter_frames(path, fps=config.fps, size=config.image_size,
                                                         geometry=config.frame_geometry)])
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda file: np.save(file, frames))
    return np.load(cache, mmap_mode="r")


@dataclass
class VideoBank(LabelledVideos):
    """The videos of a manifest as cached frames, one table row per video: the video counterpart of ``FeatureBank``
    (same ``table``, ``labels``, ``lengths`` and ``settings``), giving ``pixel_values`` instead of features."""

    frames: list[np.ndarray]  # per video, uint8 (num_frames, size, size, 3)
    table: pd.DataFrame  # video, patient, seizure, view, label, duration, onset_bilateral
    encoder: GesturesForVideoClassification  # the encoder to fine-tune; its config sets fps, size, normalisation
    settings: dict[str, Any]
    path: str
    dense_stride: int  # frames between snippet starts in dense evaluation
    dense_batch: int  # snippets per encoder call in dense evaluation

    @classmethod
    def load(cls, manifest: str | Path, encoder: GesturesForVideoClassification, *, cache: Path, output_dir: Path,
             accelerator: Accelerator, dense_stride: int, dense_batch: int) -> VideoBank:
        """Cache the frames of every video of ``manifest`` (each process its share), skipping unusable videos: they
        are listed in ``output_dir/failures.csv``."""
        config = encoder.config
        if config.encoder == "none":
            raise ValueError("The --encoder model has no encoder (encoder='none'): give one with an encoder.")
        rows = read_manifest(manifest)
        unlabelled = [row.video for row in rows if not row.label]
        if unlabelled:
            raise ValueError(f"{len(unlabelled)} video(s) of {manifest} have no label; training needs FOS or TCS on "
                             f"every video: {unlabelled[:10]}")
        failures: dict[str, str] = {}
        with accelerator.split_between_processes(rows) as mine:
            for row in tqdm(mine, desc="frame cache", unit="video", disable=not accelerator.is_local_main_process):
                try:
                    cached_frames(row.path, config, cache)
                except (OSError, RuntimeError, ValueError) as error:  # VideoError is a ValueError
                    failures[row.video] = str(error)
        failures = {video: reason for part in gather_object([failures]) for video, reason in part.items()}
        if accelerator.is_main_process:
            output_dir.mkdir(parents=True, exist_ok=True)
            write_failures(output_dir, failures)
            if failures:
                print(f"Leaving out {len(failures)} video(s) that cannot be read, listed in "
                      f"{output_dir / FAILURES_FILENAME}:", *(f"  {video}: {reason}" for video, reason in
                                                            sorted(failures.items())), sep="\n", file=sys.stderr)
        usable = [row for row in rows if row.video not in failures]
        if not usable:
            raise ValueError(f"None of the {len(rows)} video(s) of {manifest} can be read; see "
                             f"{output_dir / FAILURES_FILENAME}.")
        frames = [cached_frames(row.path, config, cache) for row in usable]
        settings = {"frames_per_snippet": config.frames_per_snippet, "stride": 1, "fps": config.fps,
                    "image_size": config.image_size, "geometry": config.frame_geometry,
                    "synthetic": any(row.synthetic for row in usable)}
        return cls(frames, _table(usable, frames, config.fps), encoder, settings, str(manifest), dense_stride,
                   dense_batch)

    @cached_property
    def lengths(self) -> np.ndarray:
        """Snippet start frames of each video (stride 1)."""
        return np.array([max(0, len(frames) - self.settings["frames_per_snippet"] + 1) for frames in self.frames])

    @property
    def feature_dim(self) -> int:
        return self.encoder.config.feature_dim

    def select(self, keep: np.ndarray) -> VideoBank:
        """The videos where ``keep`` is true."""
        videos = np.flatnonzero(keep)
        return dataclasses.replace(self, frames=[self.frames[video] for video in videos],
                                   table=self.table.iloc[videos].reset_index(drop=True))

    def snippets(self, videos: np.ndarray, indices: np.ndarray) -> torch.Tensor:
        """Normalised snippets starting at frames ``indices[..., s]`` of videos ``videos[...]``:
        ``(*indices.shape, 3, T, H, W)`` float32, as the video processor makes them."""
        length, config = self.settings["frames_per_snippet"], self.encoder.config
        owners = np.broadcast_to(np.asarray(videos)[..., None], indices.shape)
        clips = np.stack([self.frames[video][start:start + length]
                          for video, start in zip(owners.ravel(), indices.ravel(), strict=True)])
        scale, shift = (torch.from_numpy(v[..., None]) for v in normalisation(config.image_mean, config.image_std))
        pixels = torch.from_numpy(clips.reshape(*indices.shape, *clips.shape[1:])).movedim(-1, -4)
        return (pixels.float() * scale - shift).contiguous()

    def model_inputs(self, videos: np.ndarray, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """``pixel_values`` ``(len(videos), num_snippets, 3, T, H, W)`` of snippets ``indices`` (one row per video)."""
        return {"pixel_values": self.snippets(videos, indices)}

    def dense_starts(self, video: int) -> np.ndarray:
        """Start frames of the snippets of ``dense_inputs``: ``dense_stride`` frames apart."""
        return np.arange(0, self.lengths[video], self.dense_stride)

    def dense_times(self, video: int) -> np.ndarray:
        """Start times (seconds) of the snippets of ``dense_inputs``."""
        return self.snippet_times(self.dense_starts(video))

    @torch.no_grad()
    def dense_inputs(self, videos: np.ndarray, model: GesturesForVideoClassification) -> dict[str, torch.Tensor]:
        """Padded ``snippet_features`` and ``attention_mask`` of ``videos`` from all their snippets ``dense_stride``
        frames apart, encoded by ``model`` ``dense_batch`` snippets at a time."""
        sequences = []
        for video in videos:
            starts = self.dense_starts(video)
            sequences.append(torch.cat([
                model.gestures.encode_snippets(self.snippets(np.asarray(video), chunk).to(model.device)).float()
                for chunk in np.split(starts, range(self.dense_batch, len(starts), self.dense_batch))]))
        return pad_features(sequences)


def _table(rows: list[ManifestRow], frames: list[np.ndarray], fps: float) -> pd.DataFrame:
    return pd.DataFrame({
        "video": [row.video for row in rows], "patient": [row.patient for row in rows],
        "seizure": [row.seizure for row in rows], "view": [row.view for row in rows],
        "label": [LABEL_NAMES.index(row.label) for row in rows], "duration": [len(f) / fps for f in frames],
        "onset_bilateral": [np.nan if row.onset_bilateral is None else row.onset_bilateral for row in rows],
        "discarded": False,
    })


def freeze_batch_norm(model: nn.Module) -> None:
    """Put BatchNorm layers in eval mode: running statistics stay as pretrained (affine parameters still train), so
    micro-batches and gradient checkpointing give the same gradients as one pass over the whole batch."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
