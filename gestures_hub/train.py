"""Train GESTURES on snippet features, or end to end on videos, with 🤗 Accelerate: cross-validation and export.

::

    gestures train --features DIR --output-dir runs/blstm                  # 10 patient-grouped folds, final model
    accelerate launch -m gestures_hub.train --features DIR --output-dir runs/blstm --fold 3
    accelerate launch --multi_gpu --num_processes 2 -m gestures_hub.train ...   # data parallel (gloo on CPU)
    gestures train --train-encoder --videos videos.csv --encoder gestures-blstm --encoder-weights ig65m.pth \
        --output-dir runs/end-to-end                                      # fine-tune the encoder too

``--output-dir`` holds::

    training_args.json            the arguments (a resumed run must use the same ones)
    metrics.json, metrics.md      per-fold and aggregated metrics (see :mod:`gestures_hub.training_report`): intervals,
                                  calibration (``--calibrate``: the temperature), operating points, per patient
    reliability.png, roc.png, pr.png, confusion.png   figures of the out-of-fold predictions, linked from metrics.md
    predictions.csv               validation TCS probability of every video, middle and dense
    patients.csv                  per patient: seizures, views, labels, mean TCS probability, errors
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

Timeline (``--timeline-weight``, default 0 as in the paper): a per-snippet loss on the ``snippet_logits`` of the
sampled snippets, towards when each TCS video's seizure spreads (:func:`gestures_hub.losses.timeline_losses`). The
validation loss includes it, and each fold's ``results.json`` (then ``metrics.json["timeline"]``, ``metrics.md``,
``predictions.csv``) reports the spread each dense timeline shows (:func:`gestures_hub.metrics.spread_metrics`).

The data (banks of features or videos, the snippet draws, the batches) is :mod:`gestures_hub.training_data`, the
losses (``--loss``, ``--timeline-weight``) :mod:`gestures_hub.losses`, the report and the files of ``--output-dir``
beside the models :mod:`gestures_hub.training_report`, the head put behind an encoder (``final-video/``,
``--train-encoder``) :mod:`gestures_hub.attach`.
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
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import gather_object, set_seed
from tqdm.auto import tqdm
from transformers.utils import logging as transformers_logging

from .arguments import TrainingArguments, from_namespace
from .attach import attach_encoder
from .denormals import flushed_denormals
from .features import read_json_state, write_json
from .finetune import VideoBank, freeze_batch_norm
from .losses import loss_norms, loss_terms, loss_weights
from .metrics import SEIZURE_LEVEL, classification_metrics, fold_metrics, spread_metrics
from .model import detect_spread
from .model.configuration_gestures import GesturesConfig
from .model.modeling_gestures import GesturesForVideoClassification
from .snippet_encoder import auto_precision
from .splits import DEFAULT_MIN_SEIZURE_DURATION, cross_validation_folds
from .training_data import (
    Bank,
    FeatureBank,
    SegmentSampler,
    check_onsets,
    drop_short_videos,
    epoch_batches,
    epoch_draws,
    load_bank,
)
from .training_report import FINAL_FEATURES, FINAL_VIDEO, cross_validation_report, report_left_out, write_report

TRAINER_STATE = "trainer_state.json"
ARGS_FILE = "training_args.json"


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

    @cached_property
    def feature_summary(self) -> dict[str, Any] | None:
        """The summary of the run's training features that exported models carry (``config.feature_summary``: all
        its usable videos, from 2 patients on), which flags videos unlike them; None for a video bank."""
        from .ensemble import summarize_bank  # it imports this module

        return summarize_bank(self.bank) if isinstance(self.bank, FeatureBank) else None


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
    """``save_pretrained`` plus the training arguments (main process). Trained on features, the model's config gets
    the summary of the run's training features (``feature_summary``: all its usable videos, from 2 patients on),
    which flags videos unlike them."""
    if run.is_main:
        if isinstance(run.bank, FeatureBank):
            model.config.feature_summary = run.feature_summary
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
    """Accelerate's ``mixed_precision``: ``auto`` is :func:`gestures_hub.snippet_encoder.auto_precision` on GPUs (bf16
    where native, else fp16) and ``no`` on CPUs, where oneDNN's bfloat16 Conv3d weight gradients are intermittently
    non-finite (seen with torch 2.14 on a CPU with native bf16). ``device``: by default the one Accelerate picks."""
    if mixed_precision != "auto":
        return mixed_precision
    device = device or PartialState().device
    return auto_precision(device) if device.type == "cuda" else "no"


@flushed_denormals()
def train(args: TrainingArguments, accelerator: Accelerator | None = None) -> dict[str, Any] | None:
    """Cross-validate, export the best model of each fold and a final model; returns ``metrics.json`` (None while
    folds are missing or the run was stopped early). Denormal floats are flushed to zero meanwhile
    (:func:`gestures_hub.denormals.flushed_denormals`)."""
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
    if complete and args.fold is None:
        from .ensemble import export_run_ensemble  # it imports this module

        export_run_ensemble(run)
    processes = {"process_index": accelerator.process_index, "num_processes": accelerator.num_processes,
                 "device": str(accelerator.device), "weights_sha256": digests}
    (run.output_dir / "processes").mkdir(parents=True, exist_ok=True)
    write_json(run.output_dir / "processes" / f"process-{accelerator.process_index}.json", processes)
    return report if complete else None


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
