"""The training data of :mod:`gestures_hub.train`: the videos of a run in memory and the snippets drawn from them.

A bank holds the videos with one table row each: :class:`FeatureBank` the snippet features of a features dataset,
:class:`gestures_hub.finetune.VideoBank` (``--train-encoder``) the cached frames of a manifest. Every random choice
is a pure function of ``--seed`` and the epoch: the snippets drawn for each video (one draw of all videos per epoch,
:func:`epoch_draws`) and the order of the training videos (one permutation per fold and epoch, :func:`epoch_batches`).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from .arguments import TrainingArguments
from .features import LABEL_NAMES, UNKNOWN_LABEL, LabelledVideos, dataset_settings, load_features
from .finetune import VideoBank
from .model.modeling_gestures import GesturesForVideoClassification
from .presets import load_model
from .sampling import draw_indices, min_vectors, pad_features, segment_ranges

_DRAWS, _SHUFFLE = 0, 1  # independent random streams


@dataclass
class FeatureBank(LabelledVideos):
    """The snippet features of a features dataset in memory, concatenated, with one table row per video."""

    features: torch.Tensor  # (total snippets, feature_dim)
    offsets: np.ndarray  # (num_videos + 1,): video i is features[offsets[i]:offsets[i + 1]]
    table: pd.DataFrame  # video, patient, seizure, view, label, duration, onset_bilateral, discarded
    settings: dict[str, Any]
    path: str

    @classmethod
    def load(cls, path: str | Path) -> FeatureBank:
        """Read a features dataset (see :func:`gestures_hub.features.load_features`); every video needs a label."""
        dataset = load_features(path)
        settings = dataset_settings(dataset)
        table = dataset.select_columns(["video", "patient", "seizure", "view", "label", "duration", "onset_bilateral",
                                        *(["discarded"] if "discarded" in dataset.column_names else [])]).to_pandas()
        table["discarded"] = table.get("discarded", False)
        unlabelled = table.loc[table["label"] == UNKNOWN_LABEL, "video"].tolist()
        if unlabelled:
            raise ValueError(f"{len(unlabelled)} video(s) have no label; training needs FOS or TCS on every video: "
                             f"{unlabelled[:10]}")
        arrays = [batch for rows in dataset.select_columns(["features"]).with_format("numpy").iter(batch_size=16)
                  for batch in rows["features"]]
        offsets = np.concatenate([[0], np.cumsum([len(array) for array in arrays])])
        return cls(torch.from_numpy(np.concatenate(arrays).astype(np.float32, copy=False)), offsets, table, settings,
                   str(path))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def feature_dim(self) -> int:
        return self.features.shape[1]

    def sequence(self, video: int) -> torch.Tensor:
        """All snippet features of one video, ``(length, feature_dim)``."""
        return self.features[self.offsets[video]:self.offsets[video + 1]]

    def take(self, rows: np.ndarray) -> torch.Tensor:
        """Feature vectors at positions ``rows`` (any shape) of the concatenated features: ``(*rows.shape, dim)``."""
        flat = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64).ravel()).to(self.features.device)
        return self.features.index_select(0, flat).view(*rows.shape, self.features.shape[1])

    def gather(self, videos: np.ndarray, indices: np.ndarray) -> torch.Tensor:
        """Snippets ``indices[..., s]`` of videos ``videos[...]``: ``(*videos.shape, indices.shape[-1], dim)``."""
        return self.take(self.offsets[videos][..., None] + indices)

    def select(self, keep: np.ndarray) -> FeatureBank:
        """The videos where ``keep`` is true."""
        videos = np.flatnonzero(keep)
        sequences = [self.sequence(video) for video in videos]
        offsets = np.concatenate([[0], np.cumsum([len(sequence) for sequence in sequences])])
        return dataclasses.replace(self, features=torch.cat(sequences), offsets=offsets,
                                   table=self.table.iloc[videos].reset_index(drop=True))

    def model_inputs(self, videos: np.ndarray, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """Model inputs of snippets ``indices`` (one row per video) of ``videos``."""
        return {"snippet_features": self.gather(videos, indices)}

    def dense_inputs(self, videos: np.ndarray, model: GesturesForVideoClassification) -> dict[str, torch.Tensor]:
        """Model inputs of ``videos`` from all their snippets, padded (``model`` is for banks of videos)."""
        return pad_features([self.sequence(video) for video in videos])

    def dense_times(self, video: int) -> np.ndarray:
        """Start times (seconds) of the snippets of ``dense_inputs``."""
        return self.snippet_times(np.arange(self.lengths[video]))


Bank = FeatureBank | VideoBank


def drop_short_videos(bank: Bank, num_segments: int, drop: bool) -> Bank:
    """Fail naming the videos too short for ``num_segments`` segments, or leave them out when ``drop``."""
    needed = min_vectors(num_segments, bank.settings["frames_per_snippet"], bank.settings["stride"])
    short = bank.lengths < needed
    if not short.any():
        return bank
    names = bank.table.loc[short, "video"].tolist()
    message = (f"{len(names)} video(s) have fewer than {needed} snippets, too few for {num_segments} segments: "
               f"{names[:10]}{' ...' if len(names) > 10 else ''}")
    if not drop:
        raise ValueError(message + ". Pass --drop-short to leave them out, or use fewer segments.")
    print(f"Leaving out {message}.", file=sys.stderr)
    return bank.select(~short)


class SegmentSampler:
    """:func:`gestures_hub.sampling.segment_indices` for all videos of a bank at once (same ranges and rounding).

    ``draw(gamma, rng)`` returns the ``(num_videos, num_segments)`` snippet indices of one epoch; ``"middle"`` needs no
    generator.
    """

    def __init__(self, bank: Bank, num_segments: int) -> None:
        self.frames_per_snippet = bank.settings["frames_per_snippet"]
        self.stride = bank.settings["stride"]
        ranges = np.array([
            segment_ranges(int(length), num_segments=num_segments, frames_per_snippet=self.frames_per_snippet,
                           stride=self.stride, video=video)
            for length, video in zip(bank.lengths, bank.table["video"], strict=True)
        ])
        self.first, self.last = ranges[..., 0], ranges[..., 1]
        self.num_vectors = bank.lengths[:, None]

    def draw(self, gamma: float | str, rng: np.random.Generator | None = None) -> np.ndarray:
        return draw_indices(self.first, self.last, self.num_vectors, stride=self.stride, gamma=gamma, rng=rng)


def epoch_draws(sampler: SegmentSampler, gamma: float | str, seed: int, epoch: int) -> np.ndarray:
    """Snippet indices of every video for one training epoch."""
    return sampler.draw(gamma, np.random.default_rng([seed, _DRAWS, epoch]))


def epoch_batches(videos: np.ndarray, batch_size: int, seed: int, stream: int, epoch: int) -> list[np.ndarray]:
    """The training videos of one epoch, shuffled (one permutation per ``stream``, i.e. fold, and epoch), batched."""
    order = np.random.default_rng([seed, _SHUFFLE, stream, epoch]).permutation(videos)
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]



def load_bank(args: TrainingArguments, accelerator: Accelerator) -> Bank:
    """The features of ``--features``, or with ``--train-encoder`` the videos of ``--videos`` and the encoder."""
    if not args.train_encoder:
        return FeatureBank.load(args.features)
    set_seed(args.seed)  # an encoder preset without --encoder-weights is random: the same one in every run
    encoder, pretrained = load_model(args.encoder, weights=args.encoder_weights)
    if not pretrained and accelerator.is_main_process:
        print(f"Note: the encoder {args.encoder!r} has random weights (no --encoder-weights).", file=sys.stderr)
    output_dir = Path(args.output_dir)
    return VideoBank.load(args.videos, encoder, cache=Path(args.frame_cache or output_dir / "frame-cache"),
                          output_dir=output_dir, accelerator=accelerator,
                          dense_stride=args.dense_stride or encoder.config.frames_per_snippet,
                          dense_batch=args.eval_batch_size * args.num_segments)



def check_onsets(bank: Bank, verbose: bool) -> None:
    """``--timeline-weight`` learns from the ``onset_bilateral`` of TCS videos: fail if none has one, and say (when
    ``verbose``) which videos' snippets the timeline loss leaves out."""
    tcs = bank.labels == LABEL_NAMES.index("TCS")
    missing = bank.table.loc[tcs & np.isnan(bank.onsets), "video"].tolist()
    if len(missing) == tcs.sum():
        raise ValueError(f"--timeline-weight learns when TCS seizures spread, but none of the {len(missing)} TCS "
                         "videos has an onset_bilateral: add that column (seconds) to the manifest and extract again, "
                         "or use --timeline-weight 0.")
    if missing and verbose:
        print(f"Note: {len(missing)} TCS video(s) have no onset_bilateral; the timeline loss leaves them out: "
              f"{missing[:10]}{' ...' if len(missing) > 10 else ''}", file=sys.stderr)

