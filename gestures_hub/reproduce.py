"""The paper's ablation grid (aggregation x segments x gamma, all folds), trained as a few batched models.

::

    gestures reproduce --features DIR --output-dir runs/grid        # both protocols, 2 x 60 settings x 10 folds

Every model of the grid is trained exactly as ``gestures train`` would train it (same initialisation, the same
shuffles and snippet draws from ``--seed`` and the epoch, AdamW, best epoch by validation F1), but all models that
share an aggregation and a number of segments (every gamma and fold) form one :class:`StackedClassifier` whose weights
carry a leading model dimension: one batched matrix product computes all of their recurrent steps, and AdamW, being
elementwise, updates them as if they were separate. Each model sees its own batches of its own training fold (a
shorter last batch is padded and masked), so with ``--precision fp32`` a stack of M models gives the M single runs up
to float rounding (checked in ``tests/test_reproduce.py``).

Cost: matrix products dominate, about 150 TFLOP for one protocol's grid (48 settings x 10 folds x 400 epochs on
183 videos), mostly the LSTM input projections and their weight gradients, which no exact reformulation avoids. They
run as one batched product per stack and step (:class:`StackedLSTM` has a hand-written backward pass that leaves only
a few elementwise operations per time step), and mean pooling reads its snippets with ``embedding_bag``.
``--precision bf16`` runs the LSTM's matrix products (input projections, recurrent products and their gradients) on
bfloat16 features, weights and gradients with float32 accumulation, as autocast would (weights, states, gates and
optimiser stay float32): about twice as fast where the CPU has AVX-512 BF16/AMX, and on GPUs. ``auto`` (the default)
uses it only there, since emulated bfloat16 is much slower than float32. ``benchmarks/train_grid.py``
times the grid. ``--device`` runs the stacks on another torch device, e.g. ``cuda``.

``--loss original`` (the paper code's loss) is the default here, for an exact reproduction. Outputs:
``<protocol>/grid.json`` (per setting: the folds' metrics with middle and dense evaluation, per view and per seizure,
and their summary; the test between settings) and ``reproduce.md`` (one table per protocol, shaped like the paper's
ablation table, with the per-seizure consensus and a one-tailed Mann-Whitney U test, Bonferroni-corrected, of the best
setting against each other one).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import mannwhitneyu
from torch import nn
from tqdm.auto import tqdm

from .arguments import GRID_AGGREGATIONS, PROTOCOLS, ReproduceArguments, from_namespace
from .extract import native_bf16
from .features import write_json
from .metrics import SEIZURE_LEVEL, fold_metrics, format_value, markdown_table, summarize_folds
from .model.modeling_gestures import GesturesForVideoClassification
from .sampling import parse_gamma
from .splits import cross_validation_folds
from .train import (
    FeatureBank,
    SegmentSampler,
    drop_short_videos,
    epoch_batches,
    epoch_draws,
    loss_norms,
    loss_weights,
    new_model,
    sample_losses,
)

COMPARISON_METRIC, COMPARISON_EVALUATION = "f1", "middle" + SEIZURE_LEVEL
"""What the test between settings compares: per-fold F1 of the per-seizure consensus, the paper's headline level."""


# The stacked model ---------------------------------------------------------------------------------------------------


def _directions(aggregation: str) -> tuple[str, ...]:
    return {"mean": (), "lstm": ("",), "blstm": ("", "_reverse")}[aggregation]


def _gate_order(hidden_size: int) -> torch.Tensor:
    """PyTorch's LSTM gate rows (i, f, g, o) reordered to (i, f, o, g): one sigmoid, then one tanh."""
    i, f, g, o = torch.arange(4 * hidden_size).view(4, hidden_size)
    return torch.cat([i, f, o, g])


class Workspace:
    """Large buffers reused from batch to batch, by name. A fresh CPU allocation above glibc's mmap threshold (32 MiB at
    most) is new memory every time, and the page faults of its first writes cost more than the LSTM's elementwise
    work on it."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def empty(self, name: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised ``shape`` tensor in buffer ``name`` (grown when too small)."""
        size = math.prod(shape)
        buffer = self._buffers.get((name, dtype))
        if buffer is None or buffer.numel() < size or buffer.device != device:
            buffer = self._buffers[name, dtype] = torch.empty(size, dtype=dtype, device=device)
        return buffer[:size].view(*shape)


class StackedClassifier(nn.Module):
    """``M`` feature-input GESTURES classifiers (mean, LSTM or BLSTM, one layer, no dropout) as stacked tensors.

    Parameters are named after :class:`~gestures_hub.GesturesForVideoClassification`'s, with a leading model
    dimension and matrices stored transposed (inputs on the left); LSTM gates are stored as (i, f, o, g).
    """

    def __init__(self, models: Sequence[GesturesForVideoClassification]) -> None:
        super().__init__()
        config = models[0].config
        if config.aggregation not in GRID_AGGREGATIONS or config.num_layers != 1 or config.dropout:
            raise ValueError("StackedClassifier supports one-layer mean/lstm/blstm classifiers without dropout.")
        self.aggregation, self.hidden_size = config.aggregation, config.hidden_size
        self.workspace = Workspace()
        self.params = nn.ParameterDict({
            _stacked_name(name): nn.Parameter(torch.stack([self._to_stacked(name, m.state_dict()[name])
                                                           for m in models]))
            for name in models[0].state_dict()
        })

    def _to_stacked(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        if ".rnn." in name:
            tensor = tensor[_gate_order(self.hidden_size)]
        return tensor[None].clone() if _is_bias(name) else tensor.T.contiguous()

    def export(self, index: int) -> dict[str, torch.Tensor]:
        """The state dict of model ``index`` in :class:`GesturesForVideoClassification`'s layout."""
        state = {}
        for stacked, tensor in self.params.items():
            name = stacked.replace("__", ".")
            tensor = tensor[index, 0] if _is_bias(name) else tensor[index].T
            if ".rnn." in name:
                tensor = tensor[torch.argsort(_gate_order(self.hidden_size))]
            state[name] = tensor.detach().contiguous().clone()
        return state

    def __len__(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def forward(self, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Logits ``(M, B, 2)`` of equally long snippet sequences ``table[rows]``: ``rows`` ``(M, B, T)`` are positions
        in the ``(N, D)`` feature table. LSTM matrix products run in the table's dtype (float32 or bfloat16, with
        float32 weights and everything else in float32); mean pooling needs a float32 table."""
        models, batch, steps = rows.shape
        if self.aggregation == "mean":
            pooled = F.embedding_bag(rows.reshape(-1, steps), table, mode="mean").view(models, batch, -1)
        else:
            inputs = self.workspace.empty("inputs", (models, steps, batch, table.shape[1]), table.dtype, table.device)
            torch.index_select(table, 0, rows.transpose(1, 2).flatten(), out=inputs.view(-1, table.shape[1]))
            pooled = torch.cat([self._lstm(inputs, suffix) for suffix in _directions(self.aggregation)], dim=-1)
        return self.classify(pooled)

    def classify(self, pooled: torch.Tensor, models: torch.Tensor | None = None) -> torch.Tensor:
        """The classifier of each model (or of ``models``) on its ``(M, B, F)`` seizure representations."""
        weight, bias = self.params["classifier__weight"], self.params["classifier__bias"]
        return _project(pooled, weight if models is None else weight[models], bias if models is None else bias[models])

    def lstm_weights(self, suffix: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input weights, recurrent weights and summed biases of one LSTM direction (``""`` or ``"_reverse"``)."""
        prefix = "gestures__aggregator__rnn__"
        return (self.params[f"{prefix}weight_ih_l0{suffix}"], self.params[f"{prefix}weight_hh_l0{suffix}"],
                self.params[f"{prefix}bias_ih_l0{suffix}"] + self.params[f"{prefix}bias_hh_l0{suffix}"])

    def _lstm(self, inputs: torch.Tensor, suffix: str) -> torch.Tensor:
        weights = self.lstm_weights(suffix)
        if torch.is_grad_enabled():
            return StackedLSTM.apply(inputs, *weights, bool(suffix), self.workspace)
        return lstm_forward(inputs, *weights, reverse=bool(suffix), workspace=self.workspace)[0]


def lstm_step(gates: torch.Tensor, hidden: torch.Tensor | None, cell: torch.Tensor | None, weight_hh: torch.Tensor,
              out: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step for stacked models, in place on ``gates`` ``(M, B, 4H)``: the input part of the pre-activations
    (i, f, o, g) in, the gate activations out. Returns the hidden and cell states; ``None`` states are zeros.
    ``weight_hh`` may be bfloat16 (the recurrent product, accumulated in float32); states stay float32.
    ``out``: buffers for the new cell state, its tanh and the new hidden state."""
    if hidden is not None:  # the product in the weights' dtype; an in-place baddbmm_ on a strided view is slower
        gates += torch.bmm(hidden.to(weight_hh.dtype), weight_hh)
    size = weight_hh.shape[1]
    gates[..., :3 * size].sigmoid_()
    gates[..., 3 * size:].tanh_()
    in_gate, forget_gate, out_gate, candidate = gates.split(size, dim=-1)
    new_cell, tanh_cell, new_hidden = out or (None, None, None)
    new_cell = torch.mul(in_gate, candidate, out=new_cell)
    if cell is not None:
        new_cell.addcmul_(forget_gate, cell)
    return torch.mul(out_gate, torch.tanh(new_cell, out=tanh_cell), out=new_hidden), new_cell


def input_gates(inputs: torch.Tensor, weight_ih: torch.Tensor, bias: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """:func:`_project` of time-major ``inputs`` ``(M, T, B, D)`` into ``out`` ``(M, T, B, 4H)``."""
    models, steps, batch, dim = inputs.shape
    _project(inputs.reshape(models, steps * batch, dim), weight_ih, bias, out=out.view(models, steps * batch, -1))
    return out


def lstm_forward(inputs: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias: torch.Tensor,
                 reverse: bool = False, keep: bool = False,
                 workspace: Workspace | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Final hidden states ``(M, B, H)`` of one LSTM direction over time-major ``inputs`` ``(M, T, B, D)`` (matrix
    products in the inputs' dtype, see :func:`_project`; everything else in the weights'); with
    ``keep``, also the gate activations ``(M, T, B, 4H)`` and the cell states, their tanh and the hidden states
    ``(M, T, B, H)`` of every step. The gates go to ``workspace`` (one buffer per direction)."""
    models, steps, batch, _ = inputs.shape
    gates = (workspace or Workspace()).empty(f"gates{int(reverse)}", (models, steps, batch, weight_ih.shape[-1]),
                                             weight_ih.dtype, inputs.device)
    input_gates(inputs, weight_ih, bias, gates)
    weight_hh = weight_hh.to(inputs.dtype)
    saved = tuple(gates.new_empty(models, steps, batch, weight_hh.shape[1]) for _ in range(3)) if keep else ()
    hidden = cell = None
    for step in range(steps - 1, -1, -1) if reverse else range(steps):
        hidden, cell = lstm_step(gates[:, step], hidden, cell, weight_hh,
                                 tuple(buffer[:, step] for buffer in saved) if keep else None)
    return hidden, (gates, *saved)


class StackedLSTM(torch.autograd.Function):
    """:func:`lstm_forward` with a hand-written backward pass: what does not depend on the recurrence is computed for
    all steps at once, leaving a few elementwise operations and one small product per step; the weight gradients of
    all steps come from one batched product each. Inputs get no gradient."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias: torch.Tensor,
                reverse: bool, workspace: Workspace | None = None) -> torch.Tensor:
        hidden, saved = lstm_forward(inputs, weight_ih, weight_hh, bias, reverse, keep=True, workspace=workspace)
        ctx.save_for_backward(inputs, weight_hh, *saved)
        ctx.reverse, ctx.workspace = reverse, workspace or Workspace()
        return hidden.clone()  # not a view of the saved hidden states

    @staticmethod
    def backward(ctx, grad_hidden: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        inputs, weight_hh, gates, cells, tanh_cells, hiddens = ctx.saved_tensors
        models, steps, batch, size = hiddens.shape
        dtype, weight_hh_t = gates.dtype, weight_hh.to(inputs.dtype).transpose(1, 2)
        in_gate, forget_gate, out_gate, candidate = gates.view(models, steps, batch, 4, size).unbind(3)
        # Step t's recurrent inputs are the states of the step before it in the forward order (zeros for the first).
        first, previous = (steps - 1, slice(1, None)) if ctx.reverse else (0, slice(None, -1))
        later = slice(None, -1) if ctx.reverse else slice(1, None)
        # The pre-activation gradients are these factors times the gradient of the cell (i, f, g) or hidden state (o).
        grads = ctx.workspace.empty("grads", (models, steps, batch, 4, size), gates.dtype, gates.device)
        sigmoids = gates.view(models, steps, batch, 4, size)[..., :3, :]
        torch.addcmul(sigmoids, sigmoids, sigmoids, value=-1, out=grads[..., :3, :])  # sigmoid' = s - s^2
        grads[..., 0, :].mul_(candidate)
        grads[:, later, :, 1].mul_(cells[:, previous])
        grads[:, first, :, 1].zero_()
        grads[..., 2, :].mul_(tanh_cells)
        torch.addcmul(in_gate, in_gate * candidate, candidate, value=-1, out=grads[..., 3, :])
        through_cell = torch.addcmul(out_gate, out_gate * tanh_cells, tanh_cells, value=-1)
        low = torch.empty_like(grads, dtype=inputs.dtype)  # the gradients in the products' dtype
        grad_h, grad_c = grad_hidden, None
        for step in range(steps) if ctx.reverse else range(steps - 1, -1, -1):
            grad_cell = grad_h * through_cell[:, step] if grad_c is None else \
                torch.addcmul(grad_c, grad_h, through_cell[:, step])
            step_grads = grads[:, step]
            step_grads[:, :, :2].mul_(grad_cell[:, :, None])
            step_grads[:, :, 3].mul_(grad_cell)
            step_grads[:, :, 2].mul_(grad_h)
            low[:, step] = step_grads
            if step == first:
                break
            grad_c = grad_cell * forget_gate[:, step]
            grad_h = torch.bmm(low[:, step].view(models, batch, -1), weight_hh_t).to(dtype)
        flat = grads.view(models, steps * batch, -1)
        grad_ih = torch.bmm(inputs.reshape(models, steps * batch, -1).transpose(1, 2),
                            low.view(models, steps * batch, -1))
        grad_hh = torch.bmm(hiddens[:, previous].to(inputs.dtype).reshape(models, -1, size).transpose(1, 2),
                            low[:, later].reshape(models, -1, 4 * size))
        return None, grad_ih.to(dtype), grad_hh.to(dtype), flat.sum(1, keepdim=True), None, None


def _is_bias(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("bias")


def _stacked_name(name: str) -> str:
    return name.replace(".", "__")


def _project(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """``inputs @ weight + bias`` per model: ``(M or 1, R, D) x (M, D, G) -> (M, R, G)``, computed in the inputs' dtype
    (bfloat16 inputs: bfloat16 weights, float32 accumulation) and returned in the weights' (into ``out`` if given,
    for ``M`` inputs)."""
    dtype = weight.dtype
    weight, bias = weight.to(inputs.dtype), bias.to(inputs.dtype)
    if inputs.shape[0] == weight.shape[0]:
        if out is None:
            return torch.baddbmm(bias, inputs, weight).to(dtype)
        if out.dtype == inputs.dtype:
            return torch.baddbmm(bias, inputs, weight, out=out)
        return out.copy_(torch.baddbmm(bias, inputs, weight))
    models, dim, out = weight.shape
    shared = inputs[0] @ weight.permute(1, 0, 2).reshape(dim, models * out)
    return (shared.view(-1, models, out).transpose(0, 1) + bias).to(dtype)


# Training one stack --------------------------------------------------------------------------------------------------


@dataclass
class StackSpec:
    """The models of one stack: one aggregation and number of segments, every (gamma, fold) pair."""

    protocol: str
    aggregation: str
    num_segments: int
    gammas: list[float | str]  # per model
    folds: list[int]  # per model
    splits: list[tuple[np.ndarray, np.ndarray]]  # per fold: train, validation videos

    @property
    def cost(self) -> float:
        """Relative training cost, to balance workers."""
        return self.num_segments * len(self.gammas) * max(len(_directions(self.aggregation)), 0.1)


@dataclass
class StackResult:
    spec: StackSpec
    best_epochs: list[int]
    probabilities: list[dict[str, np.ndarray]]  # per model: middle (best epoch) and dense TCS probabilities
    seconds: dict[str, float]  # wall and CPU time of train_stack ("wall", "cpu"), and of its epochs alone
    model: StackedClassifier | None = None  # the last epoch's weights, when asked for


def f1_scores(labels: torch.Tensor, probabilities: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-model F1 (TCS positive, 0 when undefined) of ``(M, V)`` predictions, ``valid`` masking padding."""
    predicted, actual = (probabilities > 0.5) & valid, (labels == 1) & valid
    true_positives = (predicted & actual).sum(-1)
    denominator = predicted.sum(-1) + actual.sum(-1)
    return torch.where(denominator > 0, 2 * true_positives / denominator.clamp(min=1), 0.0)


def _padded(groups: Sequence[np.ndarray], fill: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stack ragged 1-d arrays into ``(len(groups), longest)`` with a validity mask."""
    width = max(len(group) for group in groups)
    out = np.full((len(groups), width), fill, dtype=np.int64)
    valid = np.zeros((len(groups), width), dtype=bool)
    for row, group in enumerate(groups):
        out[row, :len(group)], valid[row, :len(group)] = group, True
    return out, valid


class BestEpochs:
    """Per model of a stack: the best validation F1 so far, its epoch, weights and TCS probabilities."""

    def __init__(self, stack: StackedClassifier, num_val: int) -> None:
        self.f1 = torch.full((len(stack),), -1.0, device=stack.params["classifier__bias"].device)
        self.epochs = [0] * len(stack)
        self.weights = {name: value.detach().clone() for name, value in stack.params.items()}
        self.probabilities = torch.zeros(len(stack), num_val, device=self.f1.device)

    @torch.no_grad()
    def update(self, epoch: int, stack: StackedClassifier, f1: torch.Tensor, probabilities: torch.Tensor) -> None:
        improved = f1 > self.f1
        if improved.any():
            self.f1 = torch.where(improved, f1, self.f1)
            self.probabilities[improved] = probabilities[improved]
            for name, value in stack.params.items():
                self.weights[name][improved] = value[improved]
            self.epochs = [epoch if better else old for better, old in zip(improved.tolist(), self.epochs, strict=True)]


def train_stack(bank: FeatureBank, options: ReproduceArguments, spec: StackSpec,
                keep_model: bool = False) -> StackResult:
    """Train the models of ``spec`` together for ``options.epochs`` epochs; evaluate their best epochs."""
    started = time.perf_counter(), time.process_time()
    device = bank.features.device
    sampler = SegmentSampler(bank, spec.num_segments)
    labels = torch.as_tensor(bank.labels, device=device)
    train_sets, val_sets = ([spec.splits[fold][part] for fold in spec.folds] for part in (0, 1))
    init = new_model(bank, options.training_arguments(spec.aggregation, spec.num_segments, "middle", spec.protocol),
                     loss_weights(bank.labels, options.loss))
    stack = StackedClassifier([init] * len(spec.folds)).to(device)
    optimizer = torch.optim.AdamW(stack.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay,
                                  fused=True)
    weights = torch.stack([loss_weights(bank.labels[videos], options.loss) for videos in train_sets]).to(device)
    table = bank.features.to(compute_dtype(options.precision, device) if spec.aggregation != "mean" else torch.float32)
    val_videos, val_valid = _padded(val_sets)
    val_rows = snippet_rows(bank, val_videos, sampler.draw("middle")[val_videos])
    val_labels, val_valid = labels[val_videos], torch.from_numpy(val_valid).to(device)
    best = BestEpochs(stack, val_videos.shape[1])

    training_started = time.perf_counter(), time.process_time()
    for epoch in range(options.epochs):
        stack_epoch(bank, table, options, spec, stack, optimizer, sampler, weights, epoch)
        with torch.no_grad():
            probabilities = stack(table, val_rows).softmax(-1)[..., 1]
        best.update(epoch + 1, stack, f1_scores(val_labels, probabilities, val_valid), probabilities)
    seconds = {"train_wall": time.perf_counter() - training_started[0],
               "train_cpu": time.process_time() - training_started[1]}

    last = stack if keep_model else None
    if keep_model:
        stack = StackedClassifier([init] * len(spec.folds)).to(device)  # a copy for the best weights
    with torch.no_grad():
        for name, value in stack.params.items():
            value.copy_(best.weights[name])
    dense = dense_probabilities(bank, stack, spec.folds, [val for _, val in spec.splits], table=table)
    probabilities = [{"middle": best.probabilities[m, :len(val_sets[m])].cpu().numpy(), "dense": dense[m]}
                     for m in range(len(spec.folds))]
    seconds |= {"wall": time.perf_counter() - started[0], "cpu": time.process_time() - started[1]}
    return StackResult(spec, best.epochs, probabilities, seconds, last)


def snippet_rows(bank: FeatureBank, videos: np.ndarray, indices: np.ndarray) -> torch.Tensor:
    """Positions in ``bank.features`` of snippets ``indices[..., s]`` of ``videos[...]``."""
    return torch.from_numpy(bank.offsets[videos][..., None] + indices).to(bank.features.device)


def compute_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """The dtype of the LSTM's matrix products: ``bf16``, ``fp32``, or ``auto`` (bfloat16 where the hardware computes
    it natively, see :func:`gestures_hub.extract.native_bf16`)."""
    if precision == "auto":
        precision = "bf16" if native_bf16(torch.device(device)) else "fp32"
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]


def stack_epoch(bank: FeatureBank, table: torch.Tensor, options: ReproduceArguments, spec: StackSpec,
                stack: StackedClassifier, optimizer: torch.optim.Optimizer, sampler: SegmentSampler,
                weights: torch.Tensor, epoch: int) -> None:
    """One epoch of every model of the stack on its own shuffled batches of its own fold (padded to a common size);
    ``table``: the bank's features in the dtype of the LSTM's matrix products."""
    gammas = list(dict.fromkeys(spec.gammas))
    draws = {gamma: epoch_draws(sampler, gamma, options.seed, epoch) for gamma in gammas}
    batches = [epoch_batches(spec.splits[fold][0], options.batch_size, options.seed, fold, epoch)
               for fold in spec.folds]
    if len({len(model_batches) for model_batches in batches}) != 1:
        raise ValueError("The models of a stack need the same number of batches per epoch.")
    labels = torch.as_tensor(bank.labels, device=weights.device)
    for step in range(len(batches[0])):
        videos, valid = _padded([model_batches[step] for model_batches in batches])
        indices = np.stack([draws[gamma][row] for gamma, row in zip(spec.gammas, videos, strict=True)])
        batch_labels, valid = labels[videos], torch.from_numpy(valid).to(weights.device)
        logits = stack(table, snippet_rows(bank, videos, indices))
        terms = sample_losses(logits, batch_labels, options.loss, weights) * valid
        norms = loss_norms(batch_labels, options.loss, weights) * valid
        (terms.sum(-1) / norms.sum(-1)).sum().backward()  # each model's gradient is that of its own mean loss
        optimizer.step()
        optimizer.zero_grad()


@torch.no_grad()
def dense_probabilities(bank: FeatureBank, stack: StackedClassifier, folds: Sequence[int],
                        val_sets: Sequence[np.ndarray], chunk: int = 64,
                        table: torch.Tensor | None = None) -> list[np.ndarray]:
    """TCS probabilities of each model's validation videos (``val_sets[folds[m]]``) from all their snippets;
    ``table``: the bank's features in the dtype of the LSTM's matrix products (default: ``bank.features``).

    All models run together over time; each model's videos are sorted longest first, so that only the prefix of
    videos still running is computed at each step. The inputs of the models of one fold are projected together.
    """
    orders = {fold: np.argsort(-bank.lengths[val_sets[fold]], kind="stable") for fold in set(folds)}
    videos, valid = _padded([val_sets[fold][orders[fold]] for fold in folds])
    lengths = np.where(valid, bank.lengths[videos], 0)
    if stack.aggregation == "mean":
        means = torch.stack([bank.sequence(video).mean(0) for video in range(len(bank))])
        pooled = means[torch.from_numpy(videos)]
    else:
        table = bank.features if table is None else table
        pooled = torch.cat([_dense_lstm(bank, table, stack, suffix, folds, videos, lengths, chunk)
                            for suffix in _directions(stack.aggregation)], dim=-1)
    probabilities = stack.classify(pooled).softmax(-1)[..., 1].cpu().numpy()
    out = []
    for m, fold in enumerate(folds):
        values = np.empty(len(val_sets[fold]))
        values[orders[fold]] = probabilities[m, :len(values)]
        out.append(values)
    return out


def _dense_lstm(bank: FeatureBank, table: torch.Tensor, stack: StackedClassifier, suffix: str, folds: Sequence[int],
                videos: np.ndarray, lengths: np.ndarray, chunk: int) -> torch.Tensor:
    """Final hidden states ``(M, V, H)`` of one direction over whole videos (``lengths`` 0 marks padding)."""
    weight_ih, weight_hh, bias = stack.lstm_weights(suffix)
    recurrent = weight_hh.to(table.dtype)  # the recurrent product in the projections' dtype, as in training
    groups = {fold: torch.tensor([m for m, f in enumerate(folds) if f == fold]) for fold in set(folds)}
    active = (lengths[:, :, None] > np.arange(lengths.max())).sum(1).max(0)  # videos still running, per step
    device = bank.features.device
    final = torch.zeros(*videos.shape, weight_hh.shape[1], device=device)
    ends = {int(step): torch.from_numpy(np.stack(np.nonzero(lengths == step + 1))).to(device)
            for step in np.unique(lengths[lengths > 0] - 1)}  # (model, video) pairs whose last step this is
    hidden = cell = None
    for start in range(0, int(lengths.max()), chunk):
        steps = np.arange(start, min(start + chunk, int(lengths.max())))
        width = int(active[start])
        span = np.maximum(lengths[:, :width, None], 1)
        positions = np.minimum(steps, span - 1)
        if suffix:  # the reverse direction reads each video backwards from its own end
            positions = span - 1 - positions
        rows = bank.offsets[videos[:, :width], None] + positions
        gates = stack.workspace.empty("dense", (len(folds), width, len(steps), weight_ih.shape[-1]), bias.dtype,
                                      device)
        for models in groups.values():
            inputs = table[torch.from_numpy(rows[int(models[0])].ravel()).to(device)][None]
            gates[models] = _project(inputs, weight_ih[models], bias[models]).unflatten(1, (width, len(steps)))
        for offset, step in enumerate(steps):
            width = int(active[step])  # videos are sorted longest first: the running ones are a prefix
            hidden, cell = lstm_step(gates[:, :width, offset], None if hidden is None else hidden[:, :width],
                                     None if cell is None else cell[:, :width], recurrent)
            if int(step) in ends:
                model, video = ends[int(step)]
                final[model, video] = hidden[model, video]
    return final


# The grid ------------------------------------------------------------------------------------------------------------

_WORKER_BANK: dict[str, FeatureBank] = {}


def load_bank(options: ReproduceArguments) -> FeatureBank:
    """The features of ``options.features`` on ``options.device``, without videos too short for the grid."""
    bank = drop_short_videos(FeatureBank.load(options.features), max(options.segments), options.drop_short)
    return dataclasses.replace(bank, features=bank.features.to(options.device))


def _worker_init(options: ReproduceArguments, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER_BANK["bank"] = load_bank(options)


def _worker_train(options: ReproduceArguments, spec: StackSpec) -> StackResult:
    return train_stack(_WORKER_BANK["bank"], options, spec)


def plan_stacks(bank: FeatureBank, options: ReproduceArguments) -> list[StackSpec]:
    """One stack per protocol, aggregation and number of segments, with every gamma and fold in it."""
    specs = []
    for protocol in options.protocols:
        splits = cross_validation_folds(bank.table, options.folds, group_by=protocol, seed=options.seed,
                                        min_seizure_duration=options.min_seizure_duration,
                                        evaluate_discarded=options.evaluate_discarded)
        for aggregation in options.aggregations:
            for num_segments in options.segments:
                pairs = [(gamma, fold) for gamma in options.gammas for fold in range(options.folds)]
                by_batches: dict[int, list[tuple[float | str, int]]] = {}
                for gamma, fold in pairs:  # models of a stack must take the same number of steps per epoch
                    by_batches.setdefault(-(-len(splits[fold][0]) // options.batch_size), []).append((gamma, fold))
                specs += [StackSpec(protocol, aggregation, num_segments, [g for g, _ in group], [f for _, f in group],
                                    splits) for group in by_batches.values()]
    return specs


def run_grid(options: ReproduceArguments, bank: FeatureBank | None = None) -> list[StackResult]:
    """Train every stack of the grid, the most expensive first, on ``options.workers`` processes."""
    bank = load_bank(options) if bank is None else bank
    specs = sorted(plan_stacks(bank, options), key=lambda spec: -spec.cost)
    progress = tqdm(total=len(specs), desc="grid stacks", unit="stack")
    results = []
    if options.workers <= 1:
        for spec in specs:
            results.append(train_stack(bank, options, spec))
            progress.update()
    else:
        threads = max(1, (os.cpu_count() or 1) // options.workers)
        with ProcessPoolExecutor(options.workers, mp_context=get_context("spawn"), initializer=_worker_init,
                                 initargs=(options, threads)) as pool:
            for result in pool.map(_worker_train, [options] * len(specs), specs):
                results.append(result)
                progress.update()
    progress.close()
    return results


def grid_report(bank: FeatureBank, options: ReproduceArguments, results: list[StackResult]) -> dict[str, Any]:
    """Per protocol and setting: each fold's metrics (middle and dense, per view and per seizure), their summary, and
    the one-tailed Mann-Whitney U test of the best setting against each other one."""
    report: dict[str, Any] = {"settings": dataclasses.asdict(options), "protocols": {}}
    for protocol in options.protocols:
        rows = []
        for aggregation in options.aggregations:
            for num_segments in options.segments:
                for gamma in options.gammas:
                    models = [(result, m) for result in results if result.spec.protocol == protocol
                              and result.spec.aggregation == aggregation and result.spec.num_segments == num_segments
                              for m, g in enumerate(result.spec.gammas) if g == gamma]
                    rows.append(_setting_entry(bank, aggregation, num_segments, gamma, models))
        report["protocols"][protocol] = {"description": PROTOCOLS[protocol].format(k=options.folds),
                                         "comparison": compare_settings(rows), "settings": rows}
    return report


def _setting_entry(bank: FeatureBank, aggregation: str, num_segments: int, gamma: float | str,
                   models: list[tuple[StackResult, int]]) -> dict[str, Any]:
    folds = []
    for result, m in sorted(models, key=lambda item: item[0].spec.folds[item[1]]):
        fold = result.spec.folds[m]
        val = result.spec.splits[fold][1]
        rows = bank.table.iloc[val]
        folds.append({"fold": fold, "num_val": len(val), "best_epoch": result.best_epochs[m],
                      "patients": rows["patient"].to_numpy(), "seizures": rows["seizure"].to_numpy(),
                      "labels": bank.labels[val], "probabilities": result.probabilities[m],
                      **fold_metrics(rows["patient"], rows["seizure"], bank.labels[val], result.probabilities[m])})
    summary = summarize_folds(folds)
    return {"aggregation": aggregation, "num_segments": num_segments, "gamma": gamma,
            "folds": [{key: fold[key] for key in ("fold", "num_val", "best_epoch", *summary)} for fold in folds],
            "summary": summary}


def compare_settings(settings: Sequence[dict[str, Any]], metric: str = COMPARISON_METRIC,
                     evaluation: str = COMPARISON_EVALUATION) -> dict[str, Any]:
    """The paper's test between settings: the best setting (highest mean per-fold ``metric``) against each other
    one, a one-tailed Mann-Whitney U over their per-fold values (H1: the best is greater), Bonferroni-corrected for
    the number of comparisons (p x comparisons, at most 1). ``p_values`` follows the order of ``settings`` (None for
    the best itself)."""
    values = [[fold[evaluation][metric] for fold in entry["folds"]] for entry in settings]
    best = int(np.argmax([np.mean(v) for v in values]))
    comparisons = len(settings) - 1
    p_values: list[float | None] = [
        None if index == best else min(1.0, float(mannwhitneyu(values[best], other, alternative="greater").pvalue)
                                       * comparisons)
        for index, other in enumerate(values)]
    return {"metric": metric, "evaluation": evaluation, "best": best, "comparisons": comparisons,
            "p_values": p_values}


def grid_markdown(report: dict[str, Any]) -> str:
    """One table per protocol: a row per setting, like the paper's ablation table (TCS positive), with the
    per-seizure consensus, its pooled confusion counts and the test against the best setting."""
    titles = {"mean": "Mean", "lstm": "LSTM", "blstm": "BLSTM"}
    header = ["Aggregation", "Segments", "γ", "Accuracy", "Precision", "Recall", "F1", "F1 (pooled)",
              "F1 (all snippets)", "Seizure accuracy", "Seizure F1", "Seizures TP/TN/FP/FN", "p vs best"]
    lines = ["# GESTURES ablation grid", ""]
    for protocol in report["protocols"].values():
        comparison, rows = protocol["comparison"], []
        for index, entry in enumerate(protocol["settings"]):
            middle, dense = entry["summary"]["middle"], entry["summary"]["dense"]
            seizure = entry["summary"]["middle" + SEIZURE_LEVEL]
            (tn, fp), (fn, tp) = seizure["pooled"]["confusion_matrix"]
            gamma = "∞ (middle)" if parse_gamma(entry["gamma"]) is None else f"{float(entry['gamma']):g}"
            p_value = comparison["p_values"][index]
            rows.append([titles[entry["aggregation"]], entry["num_segments"], gamma,
                         *(format_value(middle["mean"][m], middle["std"][m])
                           for m in ("accuracy", "precision", "recall", "f1")),
                         format_value(middle["pooled"]["f1"]), format_value(dense["mean"]["f1"], dense["std"]["f1"]),
                         format_value(seizure["mean"]["accuracy"], seizure["std"]["accuracy"]),
                         format_value(seizure["mean"]["f1"], seizure["std"]["f1"]), f"{tp}/{tn}/{fp}/{fn}",
                         "best" if p_value is None else f"{p_value:.3g}"])
        lines += [f"## {protocol['description'].capitalize()}", "",
                  "Middle snippets, mean ± sd over folds unless stated. Per seizure: the mean of the views' TCS "
                  "probabilities, thresholded at 0.5 (the paper's headline numbers); TP/TN/FP/FN pooled over folds. "
                  f"p vs best: one-tailed Mann-Whitney U of the per-fold {comparison['evaluation'].replace('_', ' ')} "
                  f"{comparison['metric']} of the best setting against this one, Bonferroni-corrected for "
                  f"{comparison['comparisons']} comparisons.", "", markdown_table(header, rows), ""]
    return "\n".join(lines)


def reproduce(options: ReproduceArguments) -> dict[str, Any]:
    """Run the grid and write ``<protocol>/grid.json`` and ``reproduce.md``; returns the report."""
    bank = load_bank(options)
    started = time.perf_counter()
    results = run_grid(options, bank)
    report = grid_report(bank, options, results)
    report["seconds"] = time.perf_counter() - started
    output_dir = Path(options.output_dir)
    for name, protocol in report["protocols"].items():
        (output_dir / name).mkdir(parents=True, exist_ok=True)
        write_json(output_dir / name / "grid.json", protocol, indent=1)
    (output_dir / "reproduce.md").write_text(grid_markdown(report))
    return report


def run(args: argparse.Namespace) -> int:
    report = reproduce(from_namespace(ReproduceArguments, args))
    print(f"Trained the grid in {report['seconds']:.0f} s; see {Path(args.output_dir) / 'reproduce.md'}.")
    return 0
