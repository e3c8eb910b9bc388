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

Cost: for one protocol (60 settings x 10 folds x 400 epochs on the paper-shaped 366 streams of
``benchmarks/train_grid.py``) the LSTM stacks dominate. Their matrix products (input projections and their weight
gradients, which no exact reformulation avoids) run as one batched product per stack and step; their elementwise work
runs as one compiled step forward and one backward per time step (:mod:`gestures_hub.stacked_model`), and mean pooling
reads its snippets with ``embedding_bag``. AdamW is one compiled pass per tensor (:class:`StackedAdamW`), which also
rewrites the bfloat16 copies of the LSTM matrices; denormal floats are flushed to zero while a stack trains
(:func:`gestures_hub.denormals.flushed_denormals`). Dense evaluation runs the models longest video first, so that a
long recording's tail costs only the models still reading it. Measured: 980-1014 s for the whole grid, 400 epochs,
``--workers 2``, on 2 cores with native bfloat16 (README, Benchmarks).
``--precision bf16`` runs the LSTM's matrix products (input projections, recurrent products and their gradients) on
bfloat16 features, weights and gradients with float32 accumulation, as autocast would (weights, states, gates and
optimiser stay float32): about twice as fast where the CPU has AVX-512 BF16/AMX, and on GPUs. ``auto`` (the default)
uses it only there, since emulated bfloat16 is much slower than float32. ``benchmarks/train_grid.py``
times the grid. ``--device`` runs the stacks on another torch device, e.g. ``cuda``.

``--loss original`` (the paper code's loss) is the default here, for an exact reproduction. Outputs:
``<protocol>/grid.json`` (per setting: the folds' metrics with middle and dense evaluation, per view and per seizure,
and their summary with the pooled metrics' confidence intervals, calibration and operating points, see
:func:`gestures_hub.metrics.summarize_folds`; the test between settings) and ``reproduce.md`` (one table per
protocol, shaped like the paper's ablation table, with the per-seizure consensus, pooled F1 with its interval and a
one-tailed Mann-Whitney U test, Bonferroni-corrected, of the best setting against each other one).
"""

from __future__ import annotations

import argparse
import dataclasses
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
from scipy.stats import mannwhitneyu
from tqdm.auto import tqdm

from .arguments import PROTOCOLS, ReproduceArguments, from_namespace
from .denormals import flushed_denormals
from .features import write_json
from .intervals import Bootstrap
from .losses import loss_norms, loss_weights, sample_losses
from .metrics import SEIZURE_LEVEL, fold_metrics, format_estimate, format_value, markdown_table, summarize_folds
from .sampling import parse_gamma
from .snippet_encoder import native_bf16
from .splits import cross_validation_folds
from .stacked_model import StackedAdamW, StackedClassifier, forward_step, fused, hidden_state, lstm_directions
from .train import new_model
from .training_data import FeatureBank, SegmentSampler, drop_short_videos, epoch_batches, epoch_draws

COMPARISON_METRIC, COMPARISON_EVALUATION = "f1", "middle" + SEIZURE_LEVEL
"""What the test between settings compares: per-fold F1 of the per-seizure consensus, the paper's headline level."""


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
        return self.num_segments * len(self.gammas) * max(len(lstm_directions(self.aggregation)), 0.1)


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


@flushed_denormals()  # an epoch took 1.25-1.45x longer without (BLSTM-16: 1.54 vs 1.23 s, BLSTM-2: 0.45 vs 0.31)
def train_stack(bank: FeatureBank, options: ReproduceArguments, spec: StackSpec,
                keep_model: bool = False) -> StackResult:
    """Train the models of ``spec`` together for ``options.epochs`` epochs; evaluate their best epochs."""
    started = _clocks()
    device = bank.features.device
    sampler = SegmentSampler(bank, spec.num_segments)
    labels = torch.as_tensor(bank.labels, device=device)
    train_sets, val_sets = ([spec.splits[fold][part] for fold in spec.folds] for part in (0, 1))
    init = new_model(bank, options.training_arguments(spec.aggregation, spec.num_segments, "middle", spec.protocol),
                     loss_weights(bank.labels, options.loss))
    dtype = compute_dtype(options.precision, device) if spec.aggregation != "mean" else torch.float32
    stack = StackedClassifier([init] * len(spec.folds), dtype).to(device)
    optimizer = StackedAdamW(stack, lr=options.learning_rate, weight_decay=options.weight_decay)
    weights = torch.stack([loss_weights(bank.labels[videos], options.loss) for videos in train_sets]).to(device)
    table = bank.features.to(dtype)
    val_videos, val_valid = _padded(val_sets)
    val_rows = snippet_rows(bank, val_videos, sampler.draw("middle")[val_videos])
    val_labels, val_valid = labels[val_videos], torch.from_numpy(val_valid).to(device)
    best = BestEpochs(stack, val_videos.shape[1])

    training_started, first_epoch_done = _clocks(), None
    for epoch in range(options.epochs):
        stack_epoch(bank, table, options, spec, stack, optimizer, sampler, weights, epoch)
        with torch.no_grad():
            probabilities = stack(table, val_rows).softmax(-1)[..., 1]
        best.update(epoch + 1, stack, f1_scores(val_labels, probabilities, val_valid), probabilities)
        first_epoch_done = first_epoch_done or _clocks()
    # the first epoch also compiles the fused steps (once per process) and touches new buffers: apart from the others
    training_done = _clocks()
    seconds = {}
    for k, kind in enumerate(("wall", "cpu")):
        seconds[f"train_{kind}"] = training_done[k] - training_started[k]
        seconds[f"first_epoch_{kind}"] = (first_epoch_done or training_done)[k] - training_started[k]

    last = stack if keep_model else None
    if keep_model:
        stack = StackedClassifier([init] * len(spec.folds), dtype).to(device)  # a copy for the best weights
    with torch.no_grad():
        for name, value in stack.params.items():
            value.copy_(best.weights[name])
    dense = dense_probabilities(bank, stack, spec.folds, [val for _, val in spec.splits], table=table)
    probabilities = [{"middle": best.probabilities[m, :len(val_sets[m])].cpu().numpy(), "dense": dense[m]}
                     for m in range(len(spec.folds))]
    seconds |= {"wall": time.perf_counter() - started[0], "cpu": time.process_time() - started[1]}
    return StackResult(spec, best.epochs, probabilities, seconds, last)


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def snippet_rows(bank: FeatureBank, videos: np.ndarray, indices: np.ndarray) -> torch.Tensor:
    """Positions in ``bank.features`` of snippets ``indices[..., s]`` of ``videos[...]``."""
    return torch.from_numpy(bank.offsets[videos][..., None] + indices).to(bank.features.device)


def compute_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """The dtype of the LSTM's matrix products: ``bf16``, ``fp32``, or ``auto`` (bfloat16 where the hardware computes
    it natively, see :func:`gestures_hub.snippet_encoder.native_bf16`)."""
    if precision == "auto":
        precision = "bf16" if native_bf16(torch.device(device)) else "fp32"
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]


def stack_epoch(bank: FeatureBank, table: torch.Tensor, options: ReproduceArguments, spec: StackSpec,
                stack: StackedClassifier, optimizer: StackedAdamW, sampler: SegmentSampler,
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
                            for suffix in lstm_directions(stack.aggregation)], dim=-1)
    probabilities = stack.classify(pooled).softmax(-1)[..., 1].cpu().numpy()
    out = []
    for m, fold in enumerate(folds):
        values = np.empty(len(val_sets[fold]))
        values[orders[fold]] = probabilities[m, :len(values)]
        out.append(values)
    return out


def _dense_lstm(bank: FeatureBank, table: torch.Tensor, stack: StackedClassifier, suffix: str, folds: Sequence[int],
                videos: np.ndarray, lengths: np.ndarray, chunk: int) -> torch.Tensor:
    """Final hidden states ``(M, V, H)`` of one direction over whole videos (``lengths`` 0 marks padding).

    Models run longest video first (a model's videos are sorted longest first), so that the models and videos still
    running at a step are a prefix of each: a long recording's tail costs one model's work, not the stack's. The
    models of one fold (same videos) sit side by side and project their inputs in one product, into the input
    gates in the products' dtype, as in training."""
    order = np.lexsort((folds, -lengths[:, 0]))
    lengths, videos, folds = lengths[order], videos[order], np.asarray(folds)[order]
    weight_ih, weight_hh, bias = (weight[torch.from_numpy(order)] for weight in stack.lstm_weights(suffix))
    recurrent, width_ih = weight_hh.to(table.dtype), weight_ih.shape[1]
    firsts = [0, *(np.flatnonzero(np.diff(folds)) + 1)]
    # per fold: its first and end model, and their input weights side by side (D, models x 4H)
    groups = [(first, end, weight_ih[first:end].to(table.dtype).flatten(0, 1).T)
              for first, end in zip(firsts, [*firsts[1:], len(folds)], strict=True)]
    running = (lengths[:, :, None] > np.arange(lengths.max()))
    active, models_active = running.sum(1).max(0), running[:, 0].sum(0)  # videos and models still running, per step
    device = bank.features.device
    final = torch.zeros(*videos.shape, weight_hh.shape[1], device=device)
    ends = {int(step): torch.from_numpy(np.stack(np.nonzero(lengths == step + 1))).to(device)
            for step in np.unique(lengths[lengths > 0] - 1)}  # (model, video) pairs whose last step this is
    cell = torch.zeros(*videos.shape, weight_hh.shape[1], device=device)
    low = None
    for start in range(0, int(lengths.max()), chunk):
        steps = np.arange(start, min(start + chunk, int(lengths.max())))
        count, width = int(models_active[start]), int(active[start])
        span = np.maximum(lengths[:count, :width, None], 1)
        positions = np.minimum(steps, span - 1)
        if suffix:  # the reverse direction reads each video backwards from its own end
            positions = span - 1 - positions
        rows = bank.offsets[videos[:count, :width], None] + positions
        projected = stack.workspace.empty("dense", (count, width, len(steps), width_ih), table.dtype, device)
        for first, end, weights in groups:
            if first < count:  # a fold's models finish together
                inputs = table[torch.from_numpy(rows[first].ravel()).to(device)]
                projected[first:end] = (inputs @ weights).view(width, len(steps), end - first, -1).permute(2, 0, 1, 3)
        for offset, step in enumerate(steps):
            count, width = int(models_active[step]), int(active[step])
            inputs = projected[:count, :width, offset]
            products = (torch.zeros(inputs.shape, dtype=recurrent.dtype, device=device) if low is None else
                        torch.bmm(low[:count, :width], recurrent[:count]))
            lstm_step = fused("forward_step", forward_step)
            gates, cell, tanh_cell, low = lstm_step(inputs, products, cell[:count, :width], bias[:count])
            if int(step) in ends:
                model, video = ends[int(step)]
                final[model, video] = hidden_state(gates[model, video], tanh_cell[model, video])
    out = torch.empty_like(final)
    out[torch.from_numpy(order)] = final
    return out


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
    """Per protocol and setting: each fold's metrics (middle and dense, per view and per seizure), their summary with
    the intervals of the pooled metrics (one bootstrap of patients per setting), and the one-tailed Mann-Whitney U
    test of the best setting against each other one."""
    report: dict[str, Any] = {"settings": dataclasses.asdict(options), "protocols": {}}
    bootstrap = Bootstrap(options.confidence, options.bootstrap, options.seed)
    for protocol in options.protocols:
        rows = []
        for aggregation in options.aggregations:
            for num_segments in options.segments:
                for gamma in options.gammas:
                    models = [(result, m) for result in results if result.spec.protocol == protocol
                              and result.spec.aggregation == aggregation and result.spec.num_segments == num_segments
                              for m, g in enumerate(result.spec.gammas) if g == gamma]
                    rows.append(_setting_entry(bank, aggregation, num_segments, gamma, models, bootstrap))
        report["protocols"][protocol] = {"description": PROTOCOLS[protocol].format(k=options.folds),
                                         "intervals": bootstrap.describe(), "comparison": compare_settings(rows),
                                         "settings": rows}
    return report


def _setting_entry(bank: FeatureBank, aggregation: str, num_segments: int, gamma: float | str,
                   models: list[tuple[StackResult, int]], bootstrap: Bootstrap) -> dict[str, Any]:
    folds = []
    for result, m in sorted(models, key=lambda item: item[0].spec.folds[item[1]]):
        fold = result.spec.folds[m]
        val = result.spec.splits[fold][1]
        rows = bank.table.iloc[val]
        folds.append({"fold": fold, "num_val": len(val), "best_epoch": result.best_epochs[m],
                      "patients": rows["patient"].to_numpy(), "seizures": rows["seizure"].to_numpy(),
                      "labels": bank.labels[val], "probabilities": result.probabilities[m],
                      **fold_metrics(rows["patient"], rows["seizure"], bank.labels[val], result.probabilities[m])})
    summary = summarize_folds(folds, bootstrap)
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
    per-seizure consensus, its pooled confusion counts and F1 with their confidence intervals, and the test against
    the best setting."""
    titles = {"mean": "Mean", "lstm": "LSTM", "blstm": "BLSTM"}
    header = ["Aggregation", "Segments", "γ", "Accuracy", "Precision", "Recall", "F1", "F1 (pooled)",
              "F1 (all snippets)", "Seizure accuracy", "Seizure F1", "Seizure F1 (pooled)", "Seizures TP/TN/FP/FN",
              "p vs best"]
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
                         format_estimate(middle["pooled"]["f1"], middle["interval"]["f1"]),
                         format_value(dense["mean"]["f1"], dense["std"]["f1"]),
                         format_value(seizure["mean"]["accuracy"], seizure["std"]["accuracy"]),
                         format_value(seizure["mean"]["f1"], seizure["std"]["f1"]),
                         format_estimate(seizure["pooled"]["f1"], seizure["interval"]["f1"]), f"{tp}/{tn}/{fp}/{fn}",
                         "best" if p_value is None else f"{p_value:.3g}"])
        bootstrap = protocol["intervals"]
        lines += [f"## {protocol['description'].capitalize()}", "",
                  "Middle snippets, mean ± sd over folds unless stated. Per seizure: the mean of the views' TCS "
                  "probabilities, thresholded at 0.5 (the paper's headline numbers); TP/TN/FP/FN pooled over folds. "
                  f"Pooled F1 with its {bootstrap['confidence']:.0%} confidence interval: {bootstrap['method']} "
                  f"({bootstrap['resamples']} resamples, seed {bootstrap['seed']}). "
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
