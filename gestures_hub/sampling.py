"""GESTURES segment sampling over per-snippet feature sequences, and batching.

The frames covered by a video's feature vectors are split into ``num_segments`` parts with
``numpy.array_split``; in each part one snippet start is drawn between the part's first frame
and its last frame minus ``frames_per_snippet - 1``, so that the snippet lies inside the part:

- ``gamma == 1``: uniform over those integer starts;
- ``gamma`` another positive number: ``Beta(gamma, gamma)`` scaled to the range, rounded half to
  even (the paper's best run used 4);
- ``gamma == "middle"`` (or ``inf``): the centre, ``round((first + last) / 2)`` half to even.

With stride 1 (one vector per start frame, as in the original code) the drawn start frame is the
vector index. With stride ``s`` (vector ``i`` covers frames ``[i*s, i*s + T)``) the segments are
cut from the ``(num_vectors - 1) * s + T`` frames the vectors cover, and vector ``i`` stands for
the ``s`` start frames of its window ``[i*s - s//2, i*s - s//2 + s)``: frame ``f`` maps to vector
``(f + s//2) // s``, a nearest one (a frame halfway between two starts goes to the later, so each
window holds exactly ``s`` frames). A segment's allowed vectors are those starting inside its
range ``[first, last]``, ``lowest..highest`` (all vectors when none does), and the random start
frame is drawn as above over the frames their windows cover: ``[first, last]`` cut to
``[lowest*s - s//2, highest*s - s//2 + s - 1]``. Under ``gamma == 1`` each allowed vector is thus
drawn with probability proportional to its window's overlap with ``[first, last]`` (``s`` frames
for interior vectors, fewer for boundary ones), as if the paper's draw were redrawn while it
lands outside every allowed window. A Beta draw is scaled to the same covered frames.
``"middle"`` is the allowed vector nearest to the middle frame, ties to even. Stride 1 gives the
paper's draws exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import datasets
import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from .features import dataset_settings

Gamma = float | Literal["middle"]


def parse_gamma(gamma: Gamma | str) -> float | None:
    """A positive concentration, or None for ``"middle"``/``inf``; accepts numeric strings."""
    if isinstance(gamma, str) and gamma.strip().lower() == "middle":
        return None
    try:
        value = float(gamma)
    except (TypeError, ValueError):
        raise ValueError(f"gamma must be a positive number or 'middle', got {gamma!r}") from None
    if math.isnan(value) or value <= 0:
        raise ValueError(f"gamma must be a positive number or 'middle', got {gamma!r}")
    return None if math.isinf(value) else value


def min_vectors(num_segments: int, frames_per_snippet: int, stride: int = 1) -> int:
    """Fewest feature vectors for which every segment is longer than one snippet."""
    _check_positive(num_segments=num_segments, frames_per_snippet=frames_per_snippet, stride=stride)
    frames_needed = num_segments * (frames_per_snippet + 1)
    return -(-(frames_needed - frames_per_snippet) // stride) + 1


def segment_ranges(
    num_vectors: int,
    *,
    num_segments: int,
    frames_per_snippet: int,
    stride: int = 1,
    video: str | None = None,
) -> list[tuple[int, int]]:
    """Per segment, the first and last allowed snippet start frame (inclusive)."""
    _check_positive(
        num_vectors=num_vectors,
        num_segments=num_segments,
        frames_per_snippet=frames_per_snippet,
        stride=stride,
    )
    num_frames = (num_vectors - 1) * stride + frames_per_snippet
    ranges = []
    for number, chunk in enumerate(np.array_split(np.arange(num_frames), num_segments)):
        if len(chunk) <= frames_per_snippet:
            where = f"video {video!r}" if video else "the sequence"
            raise ValueError(
                f"Segment {number} of {where} has {len(chunk)} frames, not more than "
                f"frames_per_snippet={frames_per_snippet}: {num_vectors} vectors (stride {stride}) cover "
                f"{num_frames} frames, and {num_segments} segments need at least "
                f"{min_vectors(num_segments, frames_per_snippet, stride)} vectors"
            )
        ranges.append((int(chunk[0]), int(chunk[-1]) - frames_per_snippet + 1))
    return ranges


def segment_indices(
    num_vectors: int,
    *,
    num_segments: int,
    frames_per_snippet: int,
    stride: int = 1,
    gamma: Gamma | str = "middle",
    rng: np.random.Generator | int | None = None,
    video: str | None = None,
) -> np.ndarray:
    """Indices of the ``num_segments`` feature vectors to use, one per segment, in time order.

    ``rng`` (a numpy Generator or a seed) drives the random draws; ``video`` names the
    sequence in errors.
    """
    ranges = segment_ranges(
        num_vectors,
        num_segments=num_segments,
        frames_per_snippet=frames_per_snippet,
        stride=stride,
        video=video,
    )
    first, last = np.array(ranges).T
    return draw_indices(first, last, num_vectors, stride=stride, gamma=gamma, rng=np.random.default_rng(rng))


def draw_indices(
    first: np.ndarray,
    last: np.ndarray,
    num_vectors: np.ndarray | int,
    *,
    stride: int = 1,
    gamma: Gamma | str = "middle",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Draw one snippet start per segment range ``[first, last]`` (frames, arrays of any shape) and map it to
    a vector of features at ``stride`` by the window rule of the module docstring; vectorised core of
    :func:`segment_indices`."""
    concentration = parse_gamma(gamma)
    if concentration is not None and rng is None:
        raise ValueError(f"gamma={gamma!r} draws at random: pass a numpy Generator.")
    first, last = np.asarray(first), np.asarray(last)
    lowest, highest = -(-first // stride), last // stride
    allowed = lowest <= highest
    if concentration is None:
        index = np.rint(np.rint((first + last) / 2) / stride)
        index = np.where(allowed, np.clip(index, lowest, highest), index)
    else:
        half = stride // 2
        low = np.where(allowed, np.maximum(first, lowest * stride - half), first)
        high = np.where(allowed, np.minimum(last, highest * stride - half + stride - 1), last)
        if concentration == 1:
            frames = rng.integers(low, high + 1)
        else:
            frames = np.rint(rng.beta(concentration, concentration, np.shape(low)) * (high - low) + low)
        index = (frames + half) // stride
    return np.clip(index, 0, np.asarray(num_vectors) - 1).astype(np.int64)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class SnippetSequenceDataset(torch.utils.data.Dataset):
    """Torch view of a features dataset: one sampled snippet sequence per video.

    Training: ``gamma=1`` or a Beta concentration (jittered draws, new ones every access, seeded
    from torch's global RNG so ``torch.manual_seed`` and DataLoader workers make them
    reproducible). Evaluation: ``gamma="middle"``. ``dense=True`` returns every snippet.
    ``frames_per_snippet`` and ``stride`` default to the dataset's extraction settings. Videos
    too short for ``num_segments`` segments are rejected up front (filter them first).
    Items: ``snippet_features`` (S, D) float32, ``snippet_indices`` (S,), ``start_times`` (S,),
    ``label`` (int, -1 unknown) and ``video``.
    """

    def __init__(
        self,
        features: datasets.Dataset,
        *,
        num_segments: int = 16,
        gamma: Gamma | str = "middle",
        dense: bool = False,
        frames_per_snippet: int | None = None,
        stride: int | None = None,
    ) -> None:
        if frames_per_snippet is None or stride is None:
            settings = dataset_settings(features)
            frames_per_snippet = (
                settings["frames_per_snippet"] if frames_per_snippet is None else frames_per_snippet
            )
            stride = settings["stride"] if stride is None else stride
        self.num_segments = num_segments
        self.gamma = gamma
        self._jittered = parse_gamma(gamma) is not None
        self.dense = dense
        self.frames_per_snippet = frames_per_snippet
        self.stride = stride
        if not dense:
            self._check_lengths(features)
        columns = ["video", "label", "start_times", "features"]
        self._rows = features.with_format("numpy", columns=columns)

    def _check_lengths(self, features: datasets.Dataset) -> None:
        needed = min_vectors(self.num_segments, self.frames_per_snippet, self.stride)
        meta = features.select_columns(["video", "num_snippets"]).with_format("numpy")[:]
        short = [str(v) for v, n in zip(meta["video"], meta["num_snippets"], strict=True) if n < needed]
        if short:
            raise ValueError(
                f"{len(short)} video(s) have fewer than {needed} snippets, too few for {self.num_segments} "
                f"segments: {short[:10]}{' ...' if len(short) > 10 else ''}. Filter them out first, e.g. "
                f"ds.filter(lambda n: n >= {needed}, input_columns='num_snippets')"
            )

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self._rows[index]
        num_vectors = row["features"].shape[0]
        if self.dense:
            indices = np.arange(num_vectors)
        else:
            seed = int(torch.randint(0, 2**62, ())) if self._jittered else None
            indices = segment_indices(
                num_vectors,
                num_segments=self.num_segments,
                frames_per_snippet=self.frames_per_snippet,
                stride=self.stride,
                gamma=self.gamma,
                rng=seed,
                video=str(row["video"]),
            )
        return {
            "snippet_features": torch.from_numpy(np.ascontiguousarray(row["features"][indices], np.float32)),
            "snippet_indices": torch.from_numpy(indices.astype(np.int64)),
            "start_times": torch.from_numpy(np.ascontiguousarray(row["start_times"][indices], np.float32)),
            "label": int(row["label"]),
            "video": str(row["video"]),
        }


@dataclass
class DataCollatorForSnippetFeatures:
    """Pads feature sequences of different lengths into model inputs, in transformers' data-collator convention
    (``DataLoader(dataset, collate_fn=DataCollatorForSnippetFeatures())``, or ``Trainer(data_collator=...)``).

    Examples are rows of a features dataset (``load_features(DIR).with_format("torch")``: ``features`` and ``label``)
    or items of :class:`SnippetSequenceDataset` (``snippet_features`` and ``label``). Returns exactly what
    ``GesturesForVideoClassification`` takes: ``snippet_features`` (B, S, D) float32 zero-padded, ``attention_mask``
    (B, S) long with 1 for real snippets, and ``labels`` (B,) long with unknown labels (-1) as -100, which the loss
    ignores. Padding changes no output of the model.
    """

    return_tensors: str = "pt"

    def __post_init__(self) -> None:
        if self.return_tensors != "pt":
            raise ValueError(f"Only return_tensors='pt' is supported, got {self.return_tensors!r}.")

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("DataCollatorForSnippetFeatures needs at least one example")
        key = "snippet_features" if "snippet_features" in examples[0] else "features"
        if any(key not in example or "label" not in example for example in examples):
            raise KeyError(f"Every example needs '{key}' and 'label' (rows of a features dataset, or items of "
                           "SnippetSequenceDataset); got keys " + ", ".join(sorted(examples[0])))
        sequences = [torch.as_tensor(example[key], dtype=torch.float32) for example in examples]
        dims = {tuple(seq.shape[1:]) for seq in sequences}
        if any(seq.ndim != 2 for seq in sequences) or len(dims) != 1:
            raise ValueError(
                f"Items must be (length, dim) with a common dim, got shapes {[tuple(s.shape) for s in sequences]}"
            )
        labels = torch.tensor([int(example["label"]) for example in examples], dtype=torch.long)
        return {**pad_features(sequences), "labels": labels.masked_fill(labels < 0, -100)}


def collate_sequences(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """:class:`DataCollatorForSnippetFeatures` plus what evaluation code wants next to the model inputs: ``lengths``
    (B,), ``video`` (list of ids), and ``start_times`` (padded with 0) and ``snippet_indices`` (padded with -1) when
    every item has them."""
    out: dict[str, Any] = DataCollatorForSnippetFeatures()(batch)
    out["lengths"] = out["attention_mask"].sum(dim=1)
    out["video"] = [item["video"] for item in batch]
    for key, pad_value, dtype in (("start_times", 0.0, torch.float32), ("snippet_indices", -1, torch.long)):
        if all(key in item for item in batch):
            values = [torch.as_tensor(item[key], dtype=dtype) for item in batch]
            out[key] = pad_sequence(values, batch_first=True, padding_value=pad_value)
    return out


def pad_features(sequences: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model inputs of ``(length, dim)`` sequences: ``snippet_features`` (B, S, D), zero-padded, and
    ``attention_mask`` (B, S), 1 for real snippets."""
    lengths = torch.tensor([len(seq) for seq in sequences])
    return {"snippet_features": pad_sequence(list(sequences), batch_first=True),
            "attention_mask": (torch.arange(int(lengths.max())) < lengths[:, None]).long()}
