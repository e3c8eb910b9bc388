"""Confidence intervals of the classification metrics: a bootstrap that resamples patients, with BCa intervals.

All of a patient's videos (or seizures) are drawn together: the videos of one patient are not independent, so
resampling them one by one would give intervals too narrow. One bootstrap draw is a ``(resamples, patients)`` table
of how often each patient is drawn (a multinomial of ``patients`` draws, seeded); each metric is then a weighted
count over the predictions, so thousands of resamples cost a few matrix products over per-patient sums
(:func:`weighted_metrics`).

Intervals are BCa (bias-corrected and accelerated, Efron 1987, as ``scipy.stats.bootstrap`` computes them), with the
acceleration from the leave-one-patient-out jackknife, adjusted for few patients (``C``): the replicates are spread
about the estimate by ``sqrt(C / (C - 1))`` (the bootstrap's variance is ``(C - 1) / C`` of the estimator's) and the
levels come from Student's t with ``C - 1`` degrees of freedom instead of the normal. With the 30-70 patients of a
seizure cohort the 95 % percentile interval covers the true accuracy in about 92 % of simulated cohorts, plain BCa
in 93-94 %, this one in 94-95 % (``tests/test_intervals.py`` simulates 400 cohorts). Undefined metrics of a
resample (AUROC with one class) are left out of it; an interval is ``None`` when the metric itself is undefined or
there is only one patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri
from scipy.stats import t as student

from .arguments import check_bootstrap

METHOD = ("BCa bootstrap resampling patients (all of a patient's videos and seizures together), t-adjusted for "
          "the number of patients")


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are computed: ``confidence`` level, number of ``resamples`` and the ``seed`` of the draws."""

    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        check_bootstrap(self.confidence, self.resamples)

    def draw(self, num_clusters: int) -> np.ndarray:
        """How often each of ``num_clusters`` patients is drawn in each resample: ``(resamples, num_clusters)``."""
        rng = np.random.default_rng([self.seed, num_clusters])
        return rng.multinomial(num_clusters, np.full(num_clusters, 1 / num_clusters), size=self.resamples).astype(
            float)

    def describe(self) -> dict[str, object]:
        """What reports record of the intervals: the method, the level, the resamples and the seed."""
        return {"method": METHOD, "confidence": self.confidence, "resamples": self.resamples, "seed": self.seed}


def cluster_codes(clusters: Sequence[str], order: Sequence[str] | None = None) -> tuple[np.ndarray, int]:
    """Index of each element's cluster (patient) in ``order`` (default: order of first appearance), and how many."""
    if order is None:
        codes, uniques = pd.factorize(np.asarray(clusters, dtype=str))
        return codes, len(uniques)
    codes = pd.Index(np.asarray(order, dtype=str)).get_indexer(np.asarray(clusters, dtype=str))
    if (codes < 0).any():
        raise ValueError("Every prediction's patient must be one of the resampled patients.")
    return codes, len(order)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0 (the metrics' convention for undefined ratios)."""
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _weighted_sums(weights: np.ndarray, groups: np.ndarray | None, values: np.ndarray) -> np.ndarray:
    """``(R, K)`` sums of ``values`` ``(N, K)`` under ``weights``: ``(R, N)``, one per prediction, or ``(R, G)`` one
    per group (patient) when ``groups`` gives each prediction's group (the values are summed per group first)."""
    if groups is None:
        return weights @ values
    members = np.zeros((weights.shape[1], len(groups)))
    members[groups, np.arange(len(groups))] = 1.0
    return weights @ (members @ values)


def weighted_curves(labels: Sequence[int], scores: Sequence[float], weights: np.ndarray,
                    groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """For each row of ``weights`` (see :func:`_weighted_sums`), the weighted true and false positive counts ``tp``,
    ``fp`` ``(R, U + 1)`` at every threshold, from above the highest score (nothing TCS) down through the ``U`` unique
    scores (``thresholds``, decreasing, ``inf`` first), and the class totals ``positives``, ``negatives`` ``(R,)``."""
    labels, scores = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    unique, tied = np.unique(-scores, return_inverse=True)  # decreasing scores
    onehot = np.zeros((len(scores), 2 * len(unique)))
    onehot[np.arange(len(scores)), tied + len(unique) * (labels == 0)] = 1.0  # TCS columns, then FOS columns
    counts = np.cumsum(_weighted_sums(weights, groups, onehot).reshape(weights.shape[0], 2, len(unique)), axis=2)
    counts = np.concatenate([np.zeros((weights.shape[0], 2, 1)), counts], axis=2)
    return {"tp": counts[:, 0], "fp": counts[:, 1], "positives": counts[:, 0, -1], "negatives": counts[:, 1, -1],
            "thresholds": np.concatenate([[np.inf], -unique])}


def weighted_auroc(curves: dict[str, np.ndarray]) -> np.ndarray:
    """AUROC of each row of :func:`weighted_curves`: the trapezoidal area under the ROC curve, i.e. the weighted
    share of (TCS, FOS) pairs ranked right, ties counting half; NaN where a row weighs one class only."""
    tp, fp = curves["tp"], curves["fp"]
    area = np.sum(np.diff(fp, axis=1) * (tp[:, 1:] + tp[:, :-1]) / 2, axis=1)
    pairs = curves["positives"] * curves["negatives"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, area / pairs, np.nan)


def weighted_metrics(labels: Sequence[int], scores: Sequence[float], weights: np.ndarray,
                     groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """:func:`gestures_hub.metrics.classification_metrics` (TCS when the probability is above 0.5) for each row of
    ``weights`` (see :func:`_weighted_sums`): each metric as an ``(R,)`` array."""
    labels, scores = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    predicted, actual = scores > 0.5, labels == 1
    cells = np.stack([predicted & actual, ~predicted & actual, predicted & ~actual, ~predicted & ~actual], axis=1)
    tp, fn, fp, tn = _weighted_sums(weights, groups, cells.astype(float)).T
    accuracy = (tp + tn) / (tp + fn + fp + tn)
    recall, specificity = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    both = (tp + fn > 0) & (tn + fp > 0)
    return {
        "accuracy": accuracy,
        "balanced_accuracy": np.where(both, (recall + specificity) / 2, accuracy),
        "precision": _ratio(tp, tp + fp),
        "recall": recall,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auroc": weighted_auroc(weighted_curves(labels, scores, weights, groups)),
    }


def jackknife_weights(num_clusters: int) -> np.ndarray:
    """Leave-one-patient-out weights per patient, ``(num_clusters, num_clusters)``: row ``c`` drops patient ``c``."""
    return 1.0 - np.eye(num_clusters)


def bca_interval(estimate: float, replicates: np.ndarray, jackknife: np.ndarray, confidence: float,
                 num_clusters: int | None = None) -> list[float]:
    """The BCa interval of ``estimate`` from its bootstrap ``replicates`` and leave-one-out ``jackknife`` values
    (NaN values left out), as ``scipy.stats.bootstrap(method="BCa")`` computes it; given ``num_clusters``, with the
    small-sample adjustment of the module's docstring."""
    replicates, jackknife = replicates[~np.isnan(replicates)], jackknife[~np.isnan(jackknife)]
    if num_clusters is not None:
        expansion = np.sqrt(num_clusters / (num_clusters - 1))
        replicates = np.clip(estimate + expansion * (replicates - estimate), 0.0, 1.0)  # every metric lies in [0, 1]
        confidence = 2 * float(ndtr(student.ppf((1 + confidence) / 2, num_clusters - 1))) - 1
    if np.ptp(replicates) == 0:
        return [float(replicates[0])] * 2
    # the share of replicates below the estimate, ties counting half (scipy's _percentile_of_score)
    share = (np.sum(replicates < estimate) + np.sum(replicates <= estimate)) / (2 * len(replicates))
    share = np.clip(share, 0.5 / len(replicates), 1 - 0.5 / len(replicates))
    bias = ndtri(share)
    deviations = jackknife.mean() - jackknife
    spread = np.sum(deviations ** 2) ** 1.5
    acceleration = np.sum(deviations ** 3) / (6 * spread) if spread > 0 else 0.0
    z = ndtri(np.array([(1 - confidence) / 2, (1 + confidence) / 2]))
    levels = ndtr(bias + (bias + z) / (1 - acceleration * (bias + z)))
    low, high = np.quantile(replicates, levels)
    return [float(low), float(high)]


def metric_intervals(clusters: Sequence[str], labels: Sequence[int], scores: Sequence[float], counts: np.ndarray,
                     confidence: float, order: Sequence[str] | None = None) -> dict[str, list[float] | None]:
    """The interval of every metric of :func:`weighted_metrics`, resampling the patients ``clusters`` of the
    predictions by ``counts`` (:meth:`Bootstrap.draw`, one column per patient of ``order``)."""
    codes, num_clusters = cluster_codes(clusters, order)
    if counts.shape[1] != num_clusters:
        raise ValueError(f"The bootstrap draws {counts.shape[1]} patients, the predictions have {num_clusters}.")
    estimates = weighted_metrics(labels, scores, np.ones((1, num_clusters)), codes)
    if num_clusters < 2:
        return dict.fromkeys(estimates)
    replicates = weighted_metrics(labels, scores, counts, codes)
    jackknife = weighted_metrics(labels, scores, jackknife_weights(num_clusters), codes)
    return {name: None if np.isnan(estimates[name][0])
            else bca_interval(float(estimates[name][0]), replicates[name], jackknife[name], confidence, num_clusters)
            for name in estimates}
