"""The options of ``gestures train`` and ``gestures reproduce``, as dataclasses, and their ``--flags``.

Light on purpose: the command line builds every parser from here without importing torch, so ``--help`` answers at
once. ``AGGREGATIONS`` repeats the model config's list (the Hub unit cannot import the package); a test keeps them
equal.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

AGGREGATIONS = ("mean", "lstm", "blstm", "gru", "bgru")
LOSSES = ("weighted", "original")
SCHEDULERS = ("none", "cosine")
PROTOCOLS = {
    "patient": "patient-grouped stratified {k}-fold cross-validation",
    "seizure": "seizure-wise {k}-fold cross-validation as the paper's code deals it (id order, TCS first)",
    "seizure-duration": "seizure-wise {k}-fold cross-validation dealt by duration (the paper text's intent)",
}
MIXED_PRECISIONS = ("no", "bf16", "fp16", "auto")
BEST_MODEL_METRICS = ("f1", "balanced_accuracy", "loss")  # validation metrics; the lowest loss, the highest others


def gamma_type(value: str) -> float | str:
    """argparse type of ``--gamma``: a positive number or ``middle``."""
    from .sampling import parse_gamma  # at parse time only: --help stays free of torch

    concentration = parse_gamma(value)
    return "middle" if concentration is None else concentration


@dataclass
class TrainingArguments:
    """Options of ``gestures train``; each field is the ``--flag`` of the same name."""

    output_dir: str = field(metadata={"help": "where checkpoints, models and metrics go"})
    features: str | None = field(default=None, metadata={"help": "features dataset: a folder written by "
                                                                 "gestures_hub.features or a Hub id"})
    aggregation: str = field(default="blstm", metadata={
        "choices": AGGREGATIONS, "help": "how the snippet sequence becomes one seizure representation: mean pooling, "
        "(bidirectional) LSTM or GRU"})
    num_segments: int = field(default=16, metadata={"help": "snippets drawn per video (one per segment)"})
    gamma: float | str = field(default=4.0, metadata={"type": gamma_type,
                                                      "help": "Beta(gamma, gamma) jitter: 1 uniform, or 'middle'"})
    hidden_size: int = field(default=64, metadata={"help": "hidden units per direction"})
    num_layers: int = field(default=1, metadata={"help": "stacked recurrent layers"})
    dropout: float = field(default=0.0, metadata={"help": "dropout before the classifier"})
    folds: int = field(default=10, metadata={"help": "number of cross-validation folds"})
    fold: int | None = field(default=None, metadata={"help": "train only this fold; none: all folds, then the final "
                                                               "model"})
    group_by: str = field(default="patient", metadata={
        "choices": tuple(PROTOCOLS), "help": "patient: stratified folds grouped by patient; seizure: the paper code's "
        "seizure-wise folds (round-robin in id order, TCS first); seizure-duration: seizure-wise, dealt by duration"})
    min_seizure_duration: float | None = field(default=None, metadata={
        "help": "seconds; shorter seizures are left out of every fold and listed (none: 15 for the seizure-wise "
        "protocols, as in the paper's code, 0 for patient)"})
    evaluate_discarded: bool = field(default=False, metadata={
        "help": "validate on views marked discarded (patient out of view), never train on them, as the paper's text "
        "did; default: leave them out everywhere, as its code did"})
    epochs: int = field(default=400, metadata={"help": "training epochs per fold"})
    batch_size: int = field(default=64, metadata={"help": "global batch size (all processes together)"})
    learning_rate: float = field(default=1e-2, metadata={"help": "AdamW learning rate of the head (the paper's)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW decoupled weight decay (PyTorch's default)"})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW's epsilon (PyTorch's default); a larger one "
                                                                "damps the steps of parameters with tiny gradients"})
    scheduler: str = field(default="none", metadata={"choices": SCHEDULERS, "help": "learning-rate schedule per epoch"})
    patience: int | None = field(default=None, metadata={"help": "stop a fold after this many epochs without a "
                                                                   "better --metric-for-best-model; none: never"})
    loss: str = field(default="weighted", metadata={
        "choices": LOSSES, "help": "weighted: cross-entropy with balanced class weights; original: the paper code's "
        "BCE with one scalar pos_weight (weights FOS and TCS alike)"})
    timeline_weight: float = field(default=0.0, metadata={"help": "weight of a per-snippet loss that teaches the "
                                                                  "timeline when the seizure spread (TCS from the "
                                                                  "videos' onset_bilateral on); 0: the paper's "
                                                                  "seizure-level loss only"})
    metric_for_best_model: str = field(default="f1", metadata={
        "choices": BEST_MODEL_METRICS, "help": "validation metric (middle snippets) that picks each fold's best epoch: "
        "f1 (TCS positive) as in the paper, balanced_accuracy, or loss (with the timeline terms under "
        "--timeline-weight); ties go to the earlier epoch"})
    seed: int = field(default=0, metadata={"help": "seed of every random choice (folds, shuffles, snippet draws)"})
    mixed_precision: str | None = field(default=None, metadata={
        "choices": MIXED_PRECISIONS, "help": "autocast precision; auto: bf16 on GPUs that compute it natively, fp16 on "
        "other GPUs, no on CPUs (default: auto with --train-encoder, else no)"})
    eval_batch_size: int = field(default=16, metadata={"help": "videos per batch in evaluation"})
    drop_short: bool = field(default=False, metadata={"help": "leave out videos too short for --num-segments "
                                                              "instead of failing"})
    final_epochs: int | None = field(default=None, metadata={"help": "epochs of the final model; none: the median "
                                                                     "best epoch of the folds, rounded up"})
    no_final: bool = field(default=False, metadata={"help": "do not train the final model on all videos"})
    encoder: str | None = field(default=None, metadata={"help": "encoder (preset, folder or Hub id): the one to "
                                                                "fine-tune with --train-encoder; otherwise also export "
                                                                "final-video/: final/ behind this encoder"})
    encoder_weights: str | None = field(default=None, metadata={
        "help": "checkpoint for --encoder: a local .pth/.safetensors file or URL#sha256=<published SHA-256>"})
    train_encoder: bool = field(default=False, metadata={"help": "train the encoder end to end with the head, on the "
                                                                 "videos of --videos, instead of on --features"})
    videos: str | None = field(default=None, metadata={"help": "with --train-encoder: manifest CSV of the videos "
                                                               "(the one gestures extract reads)"})
    encoder_learning_rate: float = field(default=1e-4, metadata={"help": "learning rate of the encoder's parameters "
                                                                         "(--train-encoder)"})
    micro_batch_size: int = field(default=4, metadata={"help": "videos per forward/backward pass with "
                                                               "--train-encoder; gradients add up over the batch"})
    no_gradient_checkpointing: bool = field(default=False, metadata={"help": "keep the encoder's activations instead "
                                                                             "of recomputing them (--train-encoder: "
                                                                             "faster, more memory)"})
    frame_cache: str | None = field(default=None, metadata={"help": "folder of decoded frames, reused by later runs "
                                                                    "(--train-encoder); default: "
                                                                    "OUTPUT_DIR/frame-cache"})
    dense_stride: int | None = field(default=None, metadata={"help": "frames between snippets in dense evaluation "
                                                                     "(--train-encoder); default: frames per snippet"})
    init_head: str | None = field(default=None, metadata={"help": "a model trained on features whose aggregator and "
                                                                  "classifier initialise the head (--train-encoder)"})
    checkpoint_every: int = field(default=1, metadata={"help": "epochs between checkpoints (for --resume)"})
    resume: bool = field(default=False, metadata={"help": "continue from the checkpoints in --output-dir"})
    max_epochs_this_run: int | None = field(default=None, metadata={"help": "stop after this many epochs in this "
                                                                            "invocation (continue with --resume)"})
    confidence: float = field(default=0.95, metadata={"help": "level of the confidence intervals of the metrics "
                                                              "(bootstrap resampling patients)"})
    bootstrap: int = field(default=2000, metadata={"help": "bootstrap resamples of the confidence intervals"})
    calibrate: bool = field(default=False, metadata={
        "help": "fit a temperature on the out-of-fold predictions (all snippets, per view) and store it in the final "
        "models' config, so that they report calibrated probabilities"})

    # Options that may change between an interrupted run and its resumption.
    RUNTIME_OPTIONS = ("resume", "max_epochs_this_run", "fold", "eval_batch_size", "checkpoint_every", "frame_cache",
                       "micro_batch_size", "no_gradient_checkpointing", "confidence", "bootstrap")

    def __post_init__(self) -> None:
        self.gamma = gamma_type(str(self.gamma))
        for name in ("num_segments", "hidden_size", "num_layers", "folds", "epochs", "batch_size", "eval_batch_size",
                     "checkpoint_every", "micro_batch_size", "dense_stride"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        self.check_mode()
        if self.mixed_precision is None:
            self.mixed_precision = "auto" if self.train_encoder else "no"
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, got "
                             f"{self.mixed_precision!r}.")
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise ValueError(f"fold must be in [0, {self.folds - 1}], got {self.fold}.")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}.")
        if self.timeline_weight < 0:
            raise ValueError(f"timeline_weight must be >= 0, got {self.timeline_weight}.")
        check_bootstrap(self.confidence, self.bootstrap)
        if self.timeline_weight and self.num_layers > 1:
            raise ValueError("--timeline-weight needs per-snippet logits, which stacked RNNs (--num-layers > 1) do not "
                             "have: use one layer, or --timeline-weight 0.")

    def check_mode(self) -> None:
        """Exactly one of feature training (``--features``) and end-to-end training (``--train-encoder``)."""
        if self.train_encoder:
            if self.features is not None:
                raise ValueError("--features and --train-encoder exclude each other: --train-encoder trains on the "
                                 "videos of --videos.")
            missing = [flag for flag, value in (("--videos", self.videos), ("--encoder", self.encoder)) if not value]
            if missing:
                raise ValueError(f"--train-encoder needs {' and '.join(missing)}: the manifest of the videos and the "
                                 "encoder to fine-tune.")
        elif self.features is None:
            raise ValueError("Give --features (train on snippet features), or --train-encoder with --videos and "
                             "--encoder (train end to end on videos).")
        elif self.videos is not None or self.init_head is not None:
            raise ValueError("--videos and --init-head only apply with --train-encoder.")

    @property
    def micro_batch(self) -> int:
        """Videos per forward/backward pass: ``--micro-batch-size`` with ``--train-encoder``, else the whole batch."""
        return self.micro_batch_size if self.train_encoder else self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


GRID_AGGREGATIONS = ("mean", "lstm", "blstm")


@dataclass
class ReproduceArguments:
    """Options of ``gestures reproduce``; each field is the ``--flag`` of the same name."""

    features: str = field(metadata={"help": "features dataset: a folder written by gestures_hub.features or a Hub id"})
    output_dir: str = field(metadata={"help": "where grid.json and reproduce.md go"})
    protocols: list[str] = field(default_factory=lambda: ["seizure", "patient"],
                                 metadata={"nargs": "+", "choices": tuple(PROTOCOLS),
                                           "help": "cross-validation protocols (group by)"})
    aggregations: list[str] = field(default_factory=lambda: list(GRID_AGGREGATIONS),
                                    metadata={"nargs": "+", "choices": GRID_AGGREGATIONS,
                                              "help": "aggregations of the grid"})
    segments: list[int] = field(default_factory=lambda: [2, 4, 8, 16], metadata={
        "nargs": "+", "type": int, "help": "numbers of segments (snippets per video) of the grid"})
    gammas: list[float | str] = field(default_factory=lambda: [1.0, 1.25, 2.0, 4.0, "middle"],
                                      metadata={"nargs": "+", "type": gamma_type,
                                                "help": "Beta(gamma, gamma) jitters: the paper's uniform, near "
                                                        "semi-elliptic, parabolic, near Gaussian and Dirac delta"})
    folds: int = field(default=10, metadata={"help": "cross-validation folds"})
    epochs: int = field(default=400, metadata={"help": "training epochs of every model"})
    batch_size: int = field(default=64, metadata={"help": "videos per batch"})
    learning_rate: float = field(default=1e-2, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW decoupled weight decay"})
    hidden_size: int = field(default=64, metadata={"help": "hidden units per LSTM direction"})
    loss: str = field(default="original", metadata={"choices": LOSSES, "help": "original: the paper code's loss (an "
                                                                               "exact reproduction); weighted: "
                                                                               "balanced class weights"})
    seed: int = field(default=0, metadata={"help": "seed of every random choice"})
    drop_short: bool = field(default=False, metadata={"help": "leave out videos too short for the most segments"})
    min_seizure_duration: float | None = field(default=None, metadata={
        "help": "seconds; shorter seizures are left out and listed (none: 15 for the seizure-wise protocols, as in "
        "the paper's code, 0 for patient)"})
    evaluate_discarded: bool = field(default=False, metadata={
        "help": "validate on views marked discarded, never train on them (the paper's text); default: leave them out"})
    device: str = field(default="cpu", metadata={"help": "torch device of the stacks, e.g. cuda"})
    precision: str = field(default="auto", metadata={
        "choices": ("auto", "fp32", "bf16"),
        "help": "dtype of the LSTM's matrix products (float32 accumulation; weights, states and optimiser stay "
                "float32); auto: bf16 where the hardware computes it natively, else fp32"})
    workers: int = field(default=1, metadata={"help": "processes sharing the CPU cores (each trains whole stacks)"})
    confidence: float = field(default=0.95, metadata={"help": "level of the confidence intervals of each setting's "
                                                              "pooled metrics (bootstrap resampling patients)"})
    bootstrap: int = field(default=2000, metadata={"help": "bootstrap resamples of the confidence intervals"})

    def __post_init__(self) -> None:
        self.gammas = [gamma_type(str(gamma)) for gamma in self.gammas]
        check_bootstrap(self.confidence, self.bootstrap)

    def training_arguments(self, aggregation: str, num_segments: int, gamma: float | str,
                           group_by: str) -> TrainingArguments:
        """The ``gestures train`` arguments of one grid setting."""
        return TrainingArguments(
            features=self.features, output_dir=self.output_dir, aggregation=aggregation, num_segments=num_segments,
            gamma=gamma, hidden_size=self.hidden_size, folds=self.folds, group_by=group_by, epochs=self.epochs,
            batch_size=self.batch_size, learning_rate=self.learning_rate, weight_decay=self.weight_decay,
            loss=self.loss, seed=self.seed, min_seizure_duration=self.min_seizure_duration,
            evaluate_discarded=self.evaluate_discarded,
        )


def check_bootstrap(confidence: float, resamples: int) -> None:
    """``--confidence`` in (0, 1) and at least 100 ``--bootstrap`` resamples."""
    if not 0 < confidence < 1:
        raise ValueError(f"--confidence must be between 0 and 1 (e.g. 0.95), got {confidence}.")
    if resamples < 100:
        raise ValueError(f"--bootstrap needs at least 100 resamples (2000 is usual), got {resamples}.")


class UsageError(ValueError):
    """Options that do not fit together; the command line reports it as a usage error (exit code 2)."""


def from_namespace(cls: type, args: argparse.Namespace) -> Any:
    """The dataclass ``cls`` from parsed arguments; its validation errors become :class:`UsageError`."""
    names = {spec.name for spec in dataclasses.fields(cls)}
    try:
        return cls(**{key: value for key, value in vars(args).items() if key in names})
    except ValueError as error:
        raise UsageError(str(error)) from error


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--flag`` per field of the dataclass ``cls``: ``False`` defaults are switches, and the field's
    metadata gives ``help`` and may give ``type``, ``choices`` and ``nargs``. The help ends with the default, unless it
    already says it; fields without a default are required."""
    for spec in dataclasses.fields(cls):
        text = spec.metadata["help"]
        kwargs: dict[str, Any] = {"dest": spec.name}
        flag = "--" + spec.name.replace("_", "-")
        if spec.default is False:
            parser.add_argument(flag, action="store_true", help=text, **kwargs)
            continue
        if spec.default is not dataclasses.MISSING:
            kwargs["default"] = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            kwargs["default"] = spec.default_factory()
        else:
            kwargs |= {"required": True, "default": argparse.SUPPRESS}
            text += " (required)"
        if "default" in kwargs and kwargs["default"] is not argparse.SUPPRESS and "default" not in text:
            default = kwargs["default"]
            shown = "none" if default is None else " ".join(map(str, default)) if isinstance(default, list) else default
            text += f" (default: {shown})"
        value_type = spec.metadata.get("type") or {"int": int, "float": float}.get(str(spec.type).split(" |")[0], str)
        parser.add_argument(flag, type=value_type, choices=spec.metadata.get("choices"),
                            nargs=spec.metadata.get("nargs"), help=text.replace("%", "%%"), **kwargs)
