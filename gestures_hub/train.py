"""Train GESTURES on snippet features, or end to end on videos, with 🤗 Accelerate: cross-validation and export.

::

    gestures train --features DIR --output-dir runs/blstm                  # 10 patient-grouped folds, final model
    accelerate launch -m gestures_hub.train --features DIR --output-dir runs/blstm --fold 3
    accelerate launch --multi_gpu --num_processes 2 -m gestures_hub.train ...   # data parallel (gloo on CPU)
    gestures train --train-encoder --videos videos.csv --encoder gestures-blstm --encoder-weights ig65m.pth \
        --output-dir runs/end-to-end                                      # fine-tune the encoder too

``--output-dir`` holds::

    training_args.json            the arguments (a resumed run must use the same ones)
    metrics.json, metrics.md      per-fold and aggregated metrics (see ``cross_validation_report``)
    predictions.csv               validation TCS probability of every video, middle and dense
    fold-<i>/log.csv              one row per epoch
    fold-<i>/checkpoint/          ``accelerator.save_state`` + ``trainer_state.json``, for ``--resume``
    fold-<i>/best/                epoch with the best ``--metric-for-best-model`` (validation F1, TCS positive, by
                                  default): ``save_pretrained`` weights, ``training_args.json`` and ``cv_metrics.json``
    fold-<i>/results.json         evaluation of ``best/`` with middle snippets and with all snippets (dense)
    final-features/               model trained on all videos for the median best epoch of the folds (rounded up),
                                  taking snippet features; final-video/ with --train-encoder, or it behind --encoder
    processes/process-<r>.json    world size and a digest of the trained weights, written by every process
    frame-cache/, failures.csv    with ``--train-encoder``: decoded frames (``--frame-cache``), unreadable videos

Every random choice is a pure function of ``--seed`` and the epoch: the order of the training videos (one
permutation per fold and epoch) and the snippets drawn for each video (one draw of all videos per epoch). A global
batch of ``--batch-size`` videos is dealt across processes and the loss is normalised by the global batch, so one
process and several give the same updates (up to float summation order), and ``--resume`` continues a run exactly.
Dropout draws from torch's generator, which ``accelerator.save_state`` keeps; with dropout each process draws its
own masks, so multi-process runs then match single-process ones only in distribution.

End to end (``--train-encoder``): the videos of the ``--videos`` manifest are decoded once into the frame cache
(:mod:`gestures_hub.finetune`); the model is ``--encoder`` (weights, frame rate, image size, normalisation) with the
head of these arguments, optionally initialised from ``--init-head``. The encoder learns at
``--encoder-learning-rate``; its BatchNorm layers stay in eval mode (running statistics frozen as pretrained, affine
parameters trained), so micro-batches of ``--micro-batch-size`` videos with gradient checkpointing (on unless
``--no-gradient-checkpointing``) give the updates of one pass over the batch. Dense evaluation encodes snippets
``--dense-stride`` frames apart. ``--mixed-precision`` defaults to ``auto`` (bf16 on GPUs that have it). Exported models
take ``pixel_values``.

Timeline (``--timeline-weight``, default 0 as in the paper): a per-snippet cross-entropy on the ``snippet_logits`` of
the sampled snippets, whose target is TCS from a TCS video's ``onset_bilateral`` on and FOS before it and in FOS
videos; each video's mean term is weighted like its seizure loss (:func:`timeline_losses`). TCS videos without
``onset_bilateral`` are left out of it. The validation loss includes it, and each fold's ``results.json`` (then
``metrics.json["timeline"]``, ``metrics.md``, ``predictions.csv``) reports the spread each dense timeline shows
(:func:`gestures_hub.metrics.spread_metrics`).

Losses (``--loss``):

- ``weighted`` (default): cross-entropy with balanced class weights ``w_c = N / (2 N_c)`` of the training videos,
  i.e. proportional to one over each class's fraction (stored as ``config.class_weights``);
- ``original``: the paper code's loss, ``binary_cross_entropy_with_logits`` on the two-column one-hot target with
  the scalar ``pos_weight = N / N_TCS``. It multiplies the positive entry of both columns, so it weights FOS and TCS
  videos alike.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import hashlib
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from accelerate.utils import gather_object, set_seed
from tqdm.auto import tqdm
from transformers.utils import logging as transformers_logging

from .arguments import LOSSES, PROTOCOLS, TrainingArguments, from_namespace
from .extract import auto_precision
from .features import (
    LABEL_NAMES,
    UNKNOWN_LABEL,
    LabelledVideos,
    dataset_settings,
    load_features,
    read_json_state,
    write_json,
)
from .finetune import VideoBank, freeze_batch_norm
from .metrics import (
    SEIZURE_LEVEL,
    classification_metrics,
    fold_metrics,
    metrics_markdown,
    spread_metrics,
    summarize_folds,
)
from .model import detect_spread
from .model.configuration_gestures import GesturesConfig
from .model.modeling_gestures import GesturesForVideoClassification
from .presets import load_model
from .sampling import draw_indices, min_vectors, pad_features, segment_ranges
from .splits import DEFAULT_MIN_SEIZURE_DURATION, cross_validation_folds, short_seizures

EVALUATIONS = ("middle", "dense")
TRAINER_STATE = "trainer_state.json"
ARGS_FILE = "training_args.json"
CV_METRICS_FILE = "cv_metrics.json"
FINAL_FEATURES, FINAL_VIDEO = "final-features", "final-video"
"""The models trained on all videos, named by what they take: snippet features, or video (``pixel_values``)."""
_DRAWS, _SHUFFLE = 0, 1  # independent random streams


# Data -----------------------------------------------------------------------------------------------------------------


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


# Loss -----------------------------------------------------------------------------------------------------------------


def loss_weights(labels: np.ndarray, loss: str) -> torch.Tensor:
    """Weights of ``loss`` for a training set: ``[N / N_TCS]`` (original) or ``[N / (2 N_FOS), N / (2 N_TCS)]``."""
    counts = np.bincount(labels, minlength=2)
    if (counts == 0).any():
        raise ValueError(f"The training videos need both classes, got {counts[0]} FOS and {counts[1]} TCS.")
    if loss == "original":
        return torch.tensor([len(labels) / counts[1]], dtype=torch.float32)
    if loss == "weighted":
        return torch.tensor(len(labels) / (2 * counts), dtype=torch.float32)
    raise ValueError(f"Unknown loss {loss!r}: choose one of {', '.join(LOSSES)}.")


def sample_losses(logits: torch.Tensor, labels: torch.Tensor, loss: str, weights: torch.Tensor) -> torch.Tensor:
    """Per-video loss terms, ``(..., batch)``; leading dimensions (if any) index models, as in ``weights``.

    The mean loss of a batch is ``sample_losses(...).sum(-1) / loss_norms(...).sum(-1)``.
    """
    if loss == "original":
        target = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        terms = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weights[..., None, :], reduction="none")
        return terms.sum(-1)
    terms = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="none").view(labels.shape)
    return loss_norms(labels, loss, weights) * terms


def loss_norms(labels: torch.Tensor, loss: str, weights: torch.Tensor) -> torch.Tensor:
    """What each video adds to the denominator of the mean: the paper's BCE averages over both columns of every
    video (2), the weighted cross-entropy over the class weights of the labels (PyTorch's ``weight=`` mean)."""
    if loss == "original":
        return torch.full(labels.shape, 2.0, device=labels.device)
    return torch.gather(weights, -1, labels)


def timeline_losses(snippet_logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor,
                    norms: torch.Tensor) -> torch.Tensor:
    """Per-video timeline terms: the mean cross-entropy of the sampled snippets' logits ``(batch, snippets, 2)``
    against their spread ``targets``, times each video's share ``norms`` of the seizure loss's mean (so both losses
    weigh videos alike); zero where the targets are not ``known``."""
    terms = F.cross_entropy(snippet_logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
    return torch.where(known, norms * terms.mean(-1), 0.0)


def loss_terms(run: Run, logits: torch.Tensor, snippet_logits: torch.Tensor | None, labels: torch.Tensor,
               weights: torch.Tensor, videos: np.ndarray, indices: np.ndarray) -> torch.Tensor:
    """Per-video terms of the training loss of ``videos`` from snippets ``indices``: the seizure loss, plus the
    timeline terms under ``--timeline-weight``. Their sum over ``loss_norms`` is the mean loss."""
    args = run.args
    terms = sample_losses(logits.float(), labels, args.loss, weights)
    if args.timeline_weight:
        targets, known = (torch.as_tensor(a, device=logits.device) for a in run.bank.spread_targets(videos, indices))
        terms = terms + args.timeline_weight * timeline_losses(snippet_logits.float(), targets, known,
                                                               loss_norms(labels, args.loss, weights))
    return terms


# Training -------------------------------------------------------------------------------------------------------------


@dataclass
class TrainerState:
    """What a checkpoint adds to ``accelerator.save_state``: progress and the best epoch so far."""

    epoch: int = 0  # completed epochs
    best_metric: float | None = None  # of --metric-for-best-model
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)

    def save(self, path: Path) -> None:
        write_json(path, dataclasses.asdict(self), indent=1)

    @classmethod
    def load(cls, path: Path) -> TrainerState:
        return cls(**read_json_state(path, "the trainer state of a checkpoint"))


@dataclass
class Run:
    """One training invocation: arguments, processes and data."""

    args: TrainingArguments
    accelerator: Accelerator
    bank: Bank
    sampler: SegmentSampler
    middle: np.ndarray
    output_dir: Path

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def min_seizure_duration(self) -> float:
        """``--min-seizure-duration``, or the protocol's default (15 s seizure-wise, as the paper's code)."""
        given = self.args.min_seizure_duration
        return DEFAULT_MIN_SEIZURE_DURATION[self.args.group_by] if given is None else given

    def write_json(self, path: Path, data: Any) -> None:
        """Write ``data`` atomically (main process only)."""
        if self.is_main:
            write_json(path, data)


def build_config(bank: Bank, args: TrainingArguments, class_weights: list[float] | None) -> GesturesConfig:
    settings = bank.settings
    return GesturesConfig(
        encoder="none", feature_dim=int(bank.feature_dim), frames_per_snippet=settings["frames_per_snippet"],
        fps=settings["fps"], image_size=settings.get("image_size", 112),
        frame_geometry=settings.get("geometry", "center_crop"), num_segments=args.num_segments,
        gamma=args.gamma, aggregation=args.aggregation, hidden_size=args.hidden_size, num_layers=args.num_layers,
        dropout=args.dropout, class_weights=class_weights,
        trained_on_synthetic_data=bool(settings.get("synthetic", False)),
    )


def new_model(bank: Bank, args: TrainingArguments, weights: torch.Tensor) -> GesturesForVideoClassification:
    """A freshly initialised classifier (behind the encoder with ``--train-encoder``); the same for every fold given
    ``--seed``."""
    set_seed(args.seed)
    head = GesturesForVideoClassification(build_config(bank, args, weights.tolist() if args.loss == "weighted"
                                                       else None))
    return video_model(head, bank, args) if args.train_encoder else head


def video_model(head: GesturesForVideoClassification, bank: VideoBank,
                args: TrainingArguments) -> GesturesForVideoClassification:
    """``head`` behind the encoder of ``bank``, trainable end to end: the aggregator and classifier optionally from
    ``--init-head``, gradient checkpointing unless ``--no-gradient-checkpointing``."""
    if args.init_head:
        trained = GesturesForVideoClassification.from_pretrained(args.init_head)
        differ = {name: (getattr(trained.config, name), getattr(head.config, name))
                  for name in ("feature_dim", "frames_per_snippet", "fps", "image_size", "frame_geometry",
                               "aggregation", "hidden_size", "num_layers")
                  if getattr(trained.config, name) != getattr(head.config, name)}
        if differ:
            raise ValueError(f"--init-head {args.init_head} does not fit this head (its value, this run's): {differ}.")
        head.gestures.aggregator.load_state_dict(trained.gestures.aggregator.state_dict())
        head.classifier.load_state_dict(trained.classifier.state_dict())
    model = attach_encoder(head, bank.encoder, freeze_encoder=False)
    if not args.no_gradient_checkpointing:  # earlier transformers 5 releases only have the deprecated name
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    return model


def parameter_groups(model: GesturesForVideoClassification, args: TrainingArguments) -> list[dict[str, Any]]:
    """AdamW parameter groups: the head at ``--learning-rate``, the encoder (if trained) at
    ``--encoder-learning-rate``."""
    if not args.train_encoder:
        return [{"params": list(model.parameters())}]
    encoder = list(model.gestures.encoder.parameters())
    encoder_ids = {id(parameter) for parameter in encoder}
    return [{"params": [parameter for parameter in model.parameters() if id(parameter) not in encoder_ids]},
            {"params": encoder, "lr": args.encoder_learning_rate}]


@torch.no_grad()
def predict_logits(run: Run, model: GesturesForVideoClassification, videos: np.ndarray,
                   indices: np.ndarray | None = None) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """Logits of ``videos`` from snippets ``indices`` (one row per video), or from all snippets when ``None``, and
    with ``--timeline-weight`` each video's ``snippet_logits`` ``(snippets, 2)`` (else None).

    The videos are split across processes and the results gathered, in the order of ``videos``.
    """
    accelerator, bank = run.accelerator, run.bank
    model.eval()
    order = np.argsort(-bank.lengths[videos], kind="stable") if indices is None else np.arange(len(videos))
    with accelerator.split_between_processes(order.tolist()) as local:
        results = []
        for start in range(0, len(local), run.args.eval_batch_size):
            positions = local[start:start + run.args.eval_batch_size]
            with accelerator.autocast():
                inputs = (bank.model_inputs(videos[positions], indices[positions]) if indices is not None
                          else bank.dense_inputs(videos[positions], model))
                outputs = model(**to_device(inputs, accelerator.device))
            snippets = [None] * len(positions)
            if run.args.timeline_weight:
                masks = inputs.get("attention_mask", torch.ones(outputs.snippet_logits.shape[:2])).bool()
                snippets = [logits[mask].tolist() for logits, mask in zip(outputs.snippet_logits.float().cpu(), masks,
                                                                            strict=True)]
            results += list(zip(positions, outputs.logits.float().cpu().tolist(), snippets, strict=True))
    results = sorted(gather_object(results), key=lambda result: result[0])
    snippet_logits = [logits for _, _, logits in results]
    return (torch.tensor([logits for _, logits, _ in results]),
            None if None in snippet_logits else [torch.tensor(logits) for logits in snippet_logits])


def to_device(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: value.to(device) for name, value in inputs.items()}


def tcs_probabilities(logits: torch.Tensor) -> np.ndarray:
    return logits.softmax(-1)[:, 1].numpy()


def train_epoch(run: Run, model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_videos: np.ndarray,
                weights: torch.Tensor, stream: int, epoch: int) -> float:
    """One pass over the training videos; returns the mean training loss.

    Each process takes its share of every global batch in micro-batches of ``args.micro_batch`` videos; each
    micro-batch adds its summed loss over the global batch's norm, so the gradient is that of the whole batch.
    """
    args, accelerator, bank = run.args, run.accelerator, run.bank
    draws = epoch_draws(run.sampler, args.gamma, args.seed, epoch)
    rank, world = accelerator.process_index, accelerator.num_processes
    weights = weights.to(accelerator.device)
    model.train()
    freeze_batch_norm(model)
    loss_sum = torch.zeros((), device=accelerator.device)
    norm_sum = 0.0
    for batch in epoch_batches(train_videos, args.batch_size, args.seed, stream, epoch):
        labels = torch.as_tensor(bank.labels[batch], device=accelerator.device)
        norm = loss_norms(labels, args.loss, weights).sum()
        local, share = np.arange(rank, len(batch), world), 1.0
        if len(local) == 0:  # fewer videos than processes: run one with no weight to keep the processes in step
            local, share = np.arange(1), 0.0
        micro_batches = np.split(local, range(args.micro_batch, len(local), args.micro_batch))
        for number, micro in enumerate(micro_batches, start=1):
            # DDP averages gradients over processes once, at the last backward pass of the batch
            with accelerator.no_sync(model) if number < len(micro_batches) else contextlib.nullcontext():
                videos, indices = batch[micro], draws[batch[micro]]
                outputs = model(**to_device(bank.model_inputs(videos, indices), accelerator.device))
                terms = loss_terms(run, outputs.logits, outputs.snippet_logits, labels[micro], weights, videos, indices)
                loss = share * terms.sum() / norm
                accelerator.backward(loss * world)
            loss_sum += loss.detach() * norm
        optimizer.step()
        optimizer.zero_grad()
        norm_sum += float(norm)
    return float(accelerator.reduce(loss_sum, "sum")) / norm_sum


def evaluate(run: Run, model: GesturesForVideoClassification, videos: np.ndarray) -> tuple[dict[str, np.ndarray],
                                                                                          list[float | None] | None]:
    """TCS probabilities of ``videos`` with middle snippets and with all snippets; with ``--timeline-weight``, also
    the spread time each video's timeline shows (:func:`gestures_hub.model.detect_spread`; None: no spread)."""
    probabilities = {"middle": tcs_probabilities(predict_logits(run, model, videos, run.middle[videos])[0])}
    logits, snippet_logits = predict_logits(run, model, videos)
    probabilities["dense"] = tcs_probabilities(logits)
    if snippet_logits is None:
        return probabilities, None
    return probabilities, [detect_spread(run.bank.dense_times(video), tcs_probabilities(timeline))
                           for video, timeline in zip(videos, snippet_logits, strict=True)]


def find_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a fold (``trainer_state.json`` is written last)."""
    return next((path for name in ("checkpoint.tmp", "checkpoint")
                 if (path := run_dir / name / TRAINER_STATE).is_file()), None)


def save_checkpoint(run: Run, run_dir: Path, state: TrainerState) -> None:
    accelerator, staging, target = run.accelerator, run_dir / "checkpoint.tmp", run_dir / "checkpoint"
    if run.is_main:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if run.is_main:
        state.save(staging / TRAINER_STATE)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    accelerator.wait_for_everyone()


def write_log(run: Run, run_dir: Path, state: TrainerState) -> None:
    if run.is_main and state.log:
        with open(run_dir / "log.csv", "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(state.log[0]))
            writer.writeheader()
            writer.writerows(state.log)


def export(run: Run, model: GesturesForVideoClassification, directory: Path) -> None:
    """``save_pretrained`` plus the training arguments (main process)."""
    if run.is_main:
        model.save_pretrained(directory)
        run.write_json(directory / ARGS_FILE, run.args.to_dict())


def validate(run: Run, model: GesturesForVideoClassification, videos: np.ndarray,
             weights: torch.Tensor) -> dict[str, float]:
    """Validation loss (the training loss: with the timeline terms under ``--timeline-weight``) and metrics with
    middle snippets: the ``val_*`` columns of the log."""
    logits, snippet_logits = predict_logits(run, model, videos, run.middle[videos])
    labels = torch.as_tensor(run.bank.labels[videos])
    scores = classification_metrics(labels.numpy(), tcs_probabilities(logits))
    terms = loss_terms(run, logits, snippet_logits and torch.stack(snippet_logits), labels, weights, videos,
                       run.middle[videos])
    return {"val_loss": float(terms.sum() / loss_norms(labels, run.args.loss, weights).sum()),
            **{f"val_{name}": value for name, value in scores.items() if name != "confusion_matrix"}}


def prepare_training(run: Run, run_dir: Path, weights: torch.Tensor, epochs: int) -> tuple[Any, Any, Any, TrainerState]:
    """A new model, AdamW and the optional schedule, prepared by Accelerate; restored from the fold's checkpoint
    with ``--resume``."""
    args, accelerator = run.args, run.accelerator
    model = new_model(run.bank, args, weights)
    optimizer = torch.optim.AdamW(parameter_groups(model, args), lr=args.learning_rate, weight_decay=args.weight_decay,
                                  eps=args.adam_epsilon)
    schedulers = []
    if args.scheduler == "cosine":
        schedulers.append(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs))
    model, optimizer, *schedulers = accelerator.prepare(model, optimizer, *schedulers)
    state, checkpoint = TrainerState(), find_checkpoint(run_dir) if args.resume else None
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint.parent))
        state = TrainerState.load(checkpoint)
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"{run_dir} is not empty: pass --resume to continue it, or choose another --output-dir.")
    if run.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    return model, optimizer, (schedulers[0] if schedulers else None), state


def fit(run: Run, run_dir: Path, train_videos: np.ndarray, val_videos: np.ndarray | None, epochs: int, stream: int,
        export_dir: Path) -> tuple[TrainerState, GesturesForVideoClassification, bool]:
    """Train one model; with validation videos keep the best epoch in ``export_dir``, else the last one.

    Returns the state, the trained model (last epoch) and whether training is over (False when stopped by
    ``--max-epochs-this-run``).
    """
    args, accelerator = run.args, run.accelerator
    weights = loss_weights(run.bank.labels[train_videos], args.loss)
    model, optimizer, scheduler, state = prepare_training(run, run_dir, weights, epochs)
    patience = args.patience or math.inf
    stop = min(epochs, state.epoch + (args.max_epochs_this_run or epochs))
    bar = tqdm(total=epochs, initial=state.epoch, desc=run_dir.name, disable=not accelerator.is_local_main_process)
    while state.epoch < stop and state.epochs_without_improvement < patience:
        started = time.perf_counter()
        row: dict[str, Any] = {"epoch": state.epoch + 1, "learning_rate": optimizer.param_groups[0]["lr"],
                               "train_loss": train_epoch(run, model, optimizer, train_videos, weights, stream,
                                                         state.epoch)}
        if scheduler is not None:
            scheduler.step()
        state.epoch += 1
        if val_videos is not None:
            row |= validate(run, accelerator.unwrap_model(model), val_videos, weights)
            state.epochs_without_improvement += 1
            value = row[f"val_{args.metric_for_best_model}"]
            if state.best_metric is None or (value < state.best_metric if args.metric_for_best_model == "loss"
                                             else value > state.best_metric):
                state.best_metric, state.best_epoch, state.epochs_without_improvement = value, state.epoch, 0
                export(run, accelerator.unwrap_model(model), export_dir)
        state.log.append(row | {"seconds": round(time.perf_counter() - started, 4)})
        last = state.epoch == stop or state.epochs_without_improvement >= patience
        if last or state.epoch % args.checkpoint_every == 0:
            save_checkpoint(run, run_dir, state)
            write_log(run, run_dir, state)
        bar.update()
        bar.set_postfix({name: f"{row[key]:.3f}" for name, key in (("loss", "train_loss"), ("f1", "val_f1"))
                         if key in row} | ({"best": f"{state.best_metric:.3f}"} if val_videos is not None else {}))
    bar.close()
    finished = state.epoch >= epochs or state.epochs_without_improvement >= patience
    model = accelerator.unwrap_model(model)
    if val_videos is None and finished:
        export(run, model, export_dir)
    accelerator.free_memory()
    accelerator.wait_for_everyone()
    return state, model, finished


def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_fold(run: Run, fold: int, train_videos: np.ndarray, val_videos: np.ndarray) -> tuple[dict | None, str]:
    """Train and evaluate fold ``fold``; returns its results (None if interrupted) and the digest of its weights."""
    run_dir = run.output_dir / f"fold-{fold}"
    results_path = run_dir / "results.json"
    if run.args.resume and results_path.is_file():
        results = read_json_state(results_path, f"the evaluation of fold {fold}")
        return results, results["weights_sha256"]
    state, model, finished = fit(run, run_dir, train_videos, val_videos, run.args.epochs, fold, run_dir / "best")
    digest = weights_digest(model)
    if not finished:
        return None, digest
    best = GesturesForVideoClassification.from_pretrained(run_dir / "best").to(run.accelerator.device)
    probabilities, spreads = evaluate(run, best, val_videos)
    labels = run.bank.labels[val_videos]
    rows = run.bank.table.iloc[val_videos]
    results = {
        "fold": fold, "num_val": len(val_videos), "best_epoch": state.best_epoch,
        **fold_metrics(rows["patient"], rows["seizure"], labels, probabilities),
        "videos": rows["video"].tolist(), "patients": rows["patient"].tolist(), "seizures": rows["seizure"].tolist(),
        "labels": labels.tolist(), "probabilities": {name: values.tolist() for name, values in probabilities.items()},
        "weights_sha256": digest,
    }
    if spreads is not None:
        results["onsets"] = [None if np.isnan(onset) else float(onset) for onset in run.bank.onsets[val_videos]]
        results["spread_times"] = spreads
        results["spread"] = spread_metrics(labels, results["onsets"], spreads)
    run.write_json(results_path, results)
    return results, digest


def cross_validation_report(run: Run, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``metrics.json`` report of the finished folds."""
    args, table = run.args, run.bank.table
    timeline = all("spread" in fold for fold in results)
    evaluations = [name + level for name in EVALUATIONS for level in ("", SEIZURE_LEVEL)]
    folds = [{key: fold[key] for key in ("fold", "num_val", "best_epoch", *evaluations, *(("spread",) * timeline))}
             for fold in results]
    labels = np.concatenate([fold["labels"] for fold in results])
    dropped = short_seizures(table, run.min_seizure_duration)
    return {
        "protocol": {"group_by": args.group_by, "folds": args.folds, "seed": args.seed,
                     "description": PROTOCOLS[args.group_by].format(k=args.folds),
                     "min_seizure_duration": run.min_seizure_duration, "evaluate_discarded": args.evaluate_discarded,
                     "short_seizures": [f"{patient}/{seizure}" for patient, seizure in
                                        zip(dropped["patient"], dropped["seizure"], strict=True)],
                     "discarded_views": table.loc[table["discarded"], "video"].tolist()},
        "dataset": {"path": run.bank.path, "num_videos": len(table), "num_patients": int(table["patient"].nunique()),
                    "synthetic": bool(run.bank.settings.get("synthetic", False))},
        "settings": args.to_dict(),
        "folds": folds,
        "summary": summarize_folds(results),
        **({"timeline": spread_metrics(labels, *([value for fold in results for value in fold[key]]
                                                 for key in ("onsets", "spread_times")))} if timeline else {}),
    }


OUTPUT_README = """# {title}

Written by `gestures train` (gestures-hub {version}). What each entry holds:

| entry | what it is |
|---|---|
| `metrics.md`, `metrics.json` | cross-validation results, per view and per seizure (names defined in metrics.md) |
| `predictions.csv` | the validation TCS probability of every video, per fold |
| `training_args.json` | the options of this run (`--resume` needs the same) |
| `fold-<i>/best/` | the best epoch of fold i: a model folder (`from_pretrained`) that takes {best_input} |
| `fold-<i>/checkpoint/`, `fold-<i>/log.csv` | the state `--resume` continues from; one row per epoch |
| `final-features/` | the model trained on all usable videos, on features: takes snippet features, not video |
| `final-video/` | the final model that takes video (`pixel_values`: the pipeline, `gestures predict`) |
| `final-run/` | the state of the final model's training, for `--resume` |
| `processes/` | which processes ran and a digest of the weights each trained |

Models that take snippet features need features extracted as the training data was (see its settings); models that
take video read files through their video processor (`AutoVideoProcessor`, the pipeline, `gestures predict`).
"""


def write_output_readme(run: Run) -> None:
    """``OUTPUT_DIR/README.md``: what each folder and file of the run holds, and which models take video."""
    from . import __version__

    video = run.args.train_encoder
    best_input = "video (`pixel_values`)" if video else "snippet features (`snippet_features`), not video"
    title = "GESTURES training run" + (" (SYNTHETIC data)" if run.bank.settings.get("synthetic") else "")
    (run.output_dir / "README.md").write_text(OUTPUT_README.format(title=title, version=__version__,
                                                                   best_input=best_input))


def write_report(run: Run, report: dict[str, Any], results: list[dict[str, Any]]) -> None:
    if not run.is_main:
        return
    write_output_readme(run)
    run.write_json(run.output_dir / "metrics.json", report)
    (run.output_dir / "metrics.md").write_text(metrics_markdown(report))
    rows = [{"fold": fold["fold"], "video": video, "patient": fold["patients"][i], "seizure": fold["seizures"][i],
             "label": label,
             **{f"tcs_probability_{name}": fold["probabilities"][name][i] for name in EVALUATIONS},
             **({"onset_bilateral": fold["onsets"][i], "spread_time": fold["spread_times"][i]} if "spread" in fold
                else {})}
            for fold in results for i, (video, label) in enumerate(zip(fold["videos"], fold["labels"], strict=True))]
    pd.DataFrame(rows).to_csv(run.output_dir / "predictions.csv", index=False)
    exports = [run.output_dir / f"fold-{fold['fold']}" / "best" for fold in results] + [
        run.output_dir / name for name in (FINAL_FEATURES, FINAL_VIDEO)]
    for directory in exports:
        if directory.is_dir():
            run.write_json(directory / CV_METRICS_FILE, report)


def final_epochs(args: TrainingArguments, results: list[dict[str, Any]]) -> int:
    """``--final-epochs``, else the median best epoch of the folds, rounded up."""
    return args.final_epochs or math.ceil(float(np.median([fold["best_epoch"] for fold in results])))


def check_arguments(run: Run) -> None:
    """Write ``training_args.json``; a resumed run must match the saved arguments (missing ones: their defaults)."""
    path = run.output_dir / ARGS_FILE
    current = {k: v for k, v in run.args.to_dict().items() if k not in TrainingArguments.RUNTIME_OPTIONS}
    if path.is_file():
        saved = {k: v for k, v in read_json_state(path, "the arguments of this run").items()
                 if k not in TrainingArguments.RUNTIME_OPTIONS}
        defaults = {spec.name: spec.default for spec in dataclasses.fields(TrainingArguments)}
        changed = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k, defaults[k]) != v}
        if changed:
            raise ValueError(f"{run.output_dir} was trained with other arguments (saved, now): {changed}. Use the same "
                             "arguments, or another --output-dir.")
    run.write_json(path, run.args.to_dict())


def resolve_mixed_precision(mixed_precision: str, device: torch.device | None = None) -> str:
    """Accelerate's ``mixed_precision``: ``auto`` is :func:`gestures_hub.extract.auto_precision` on GPUs (bf16 where
    native, else fp16) and ``no`` on CPUs, where oneDNN's bfloat16 Conv3d weight gradients are intermittently
    non-finite (seen with torch 2.14 on a CPU with native bf16). ``device``: by default the one Accelerate picks."""
    if mixed_precision != "auto":
        return mixed_precision
    device = device or PartialState().device
    return auto_precision(device) if device.type == "cuda" else "no"


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


def report_left_out(run: Run) -> None:
    """Say which seizures are too short for the protocol and which views are discarded (main process)."""
    if not run.is_main:
        return
    table = run.bank.table
    short = short_seizures(table, run.min_seizure_duration)
    if len(short):
        listed = ", ".join(f"{p}/{s} ({d:.1f} s)" for p, s, d in zip(short["patient"], short["seizure"],
                                                                   short["duration"], strict=True))
        print(f"Leaving out {len(short)} seizure(s) shorter than {run.min_seizure_duration:g} s "
              f"(--min-seizure-duration): {listed}", file=sys.stderr)
    discarded = table.loc[table["discarded"], "video"].tolist()
    if discarded:
        use = "validated on, never trained on" if run.args.evaluate_discarded else "left out (--evaluate-discarded " \
              "validates on them)"
        print(f"{len(discarded)} view(s) marked discarded are {use}: {', '.join(discarded)}", file=sys.stderr)


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


def train(args: TrainingArguments, accelerator: Accelerator | None = None) -> dict[str, Any] | None:
    """Cross-validate, export the best model of each fold and a final model; returns ``metrics.json`` (None while
    folds are missing or the run was stopped early)."""
    accelerator = accelerator or Accelerator(mixed_precision=resolve_mixed_precision(args.mixed_precision),
                                             step_scheduler_with_optimizer=False)
    bank = drop_short_videos(load_bank(args, accelerator), args.num_segments, args.drop_short)
    if args.timeline_weight:
        check_onsets(bank, accelerator.is_main_process)
    sampler = SegmentSampler(bank, args.num_segments)
    run = Run(args, accelerator, bank, sampler, sampler.draw("middle"), Path(args.output_dir))
    check_arguments(run)
    folds = cross_validation_folds(bank.table, args.folds, group_by=args.group_by, seed=args.seed,
                                   min_seizure_duration=run.min_seizure_duration,
                                   evaluate_discarded=args.evaluate_discarded)
    report_left_out(run)
    digests: dict[str, str] = {}
    for fold in range(args.folds) if args.fold is None else [args.fold]:
        results, digests[f"fold-{fold}"] = train_fold(run, fold, *folds[fold])
        if results is None:
            break
    accelerator.wait_for_everyone()
    done = [read_json_state(path, f"the evaluation of fold {fold}") for fold in range(args.folds)
            if (path := run.output_dir / f"fold-{fold}" / "results.json").is_file()]
    report = cross_validation_report(run, done) if done else None
    complete = len(done) == args.folds
    if complete and not args.no_final and args.fold is None:
        trainable = np.unique(np.concatenate([train_videos for train_videos, _ in folds]))  # no short, no discarded
        final = FINAL_VIDEO if args.train_encoder else FINAL_FEATURES
        _, model, finished = fit(run, run.output_dir / "final-run", trainable, None, final_epochs(args, done),
                                 args.folds, run.output_dir / final)
        digests["final"] = weights_digest(model)
        if finished and args.encoder and not args.train_encoder and run.is_main:
            export(run, attach_encoder(model, args.encoder, encoder_weights=args.encoder_weights),
                   run.output_dir / FINAL_VIDEO)
    if report is not None:
        write_report(run, report, done)
    processes = {"process_index": accelerator.process_index, "num_processes": accelerator.num_processes,
                 "device": str(accelerator.device), "weights_sha256": digests}
    (run.output_dir / "processes").mkdir(parents=True, exist_ok=True)
    write_json(run.output_dir / "processes" / f"process-{accelerator.process_index}.json", processes)
    return report if complete else None


# Export ---------------------------------------------------------------------------------------------------------------

HEAD_OPTIONS = ("aggregation", "hidden_size", "num_layers", "dropout", "num_segments", "gamma", "class_weights",
                "id2label", "label2id")


def attach_encoder(
    feature_model: GesturesForVideoClassification | str | Path,
    encoder: GesturesForVideoClassification | str | Path,
    *,
    encoder_weights: str | Path | None = None,
    freeze_encoder: bool | None = None,
) -> GesturesForVideoClassification:
    """Put the aggregator and classifier of a model trained on features behind a snippet encoder.

    ``encoder`` is a model with an encoder, or a preset name, folder or Hub id for
    :func:`gestures_hub.presets.load_model` (``encoder_weights``: a checkpoint for the importers). The result takes
    ``pixel_values`` (videos in, FOS/TCS out) and gives the same logits as ``feature_model`` on the encoder's features.
    ``freeze_encoder`` overrides the encoder config's.
    """
    if not isinstance(feature_model, GesturesForVideoClassification):
        feature_model = GesturesForVideoClassification.from_pretrained(str(feature_model))
    if not isinstance(encoder, GesturesForVideoClassification):
        encoder, _ = load_model(encoder, weights=encoder_weights)
    elif encoder_weights is not None:
        raise ValueError("encoder_weights only applies when the encoder is given by name or path.")
    head, base = feature_model.config, encoder.config
    if base.encoder == "none":
        raise ValueError("The encoder model has no encoder (encoder='none').")
    for name in ("feature_dim", "frames_per_snippet", "fps", "image_size", "frame_geometry"):
        if getattr(head, name) != getattr(base, name):
            raise ValueError(f"The features were made with {name}={getattr(head, name)}, the encoder uses "
                             f"{getattr(base, name)}.")
    frozen = {} if freeze_encoder is None else {"freeze_encoder": freeze_encoder}
    synthetic = head.trained_on_synthetic_data or base.trained_on_synthetic_data  # either part's weights
    config = GesturesConfig.from_dict({**base.to_dict(), **{name: getattr(head, name) for name in HEAD_OPTIONS},
                                       **frozen, "trained_on_synthetic_data": synthetic})
    model = GesturesForVideoClassification(config)
    model.gestures.encoder.load_state_dict(encoder.gestures.encoder.state_dict())
    model.gestures.aggregator.load_state_dict(feature_model.gestures.aggregator.state_dict())
    model.classifier.load_state_dict(feature_model.classifier.state_dict())
    return model.eval()


# Command line ---------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    options = from_namespace(TrainingArguments, args)
    transformers_logging.disable_progress_bar()  # one bar per fold is enough
    report = train(options)
    if report is not None:
        middle, seizure = report["summary"]["middle"], report["summary"]["middle" + SEIZURE_LEVEL]
        print(f"Validation F1 (middle snippets: the centre snippet of each segment): {middle['mean']['f1']:.3f} "
              f"mean over folds, {middle['pooled']['f1']:.3f} pooled over them; per seizure (the views' mean "
              f"probability) {seizure['mean']['f1']:.3f}. See {Path(args.output_dir) / 'metrics.md'}.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import run_command
    from .commands import standalone_parser

    return run_command(standalone_parser("train", "gestures_hub.train").parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
