"""Calibration of the TCS probabilities: expected calibration error, Brier score, log-loss, temperature scaling and
the reliability diagram.

ECE bins the TCS probability (not the confidence of the predicted class) into ``bins`` equal-width bins of [0, 1]
(10 by default; the last bin holds 1.0) and averages, weighted by how many predictions each bin holds, the gap
between the fraction of TCS and the mean probability in the bin. Log-loss is the mean negative log-likelihood of the
labels, in nats.

Temperature scaling (Guo et al., 2017) divides the logits by one number ``T`` fitted on out-of-fold predictions:
the stored TCS probability is ``softmax(logits)[TCS] = sigmoid(z)`` with ``z`` the logit difference, so the
calibrated one is ``sigmoid(z / T)``, the same as ``softmax(logits / T)``. ``T`` minimises the log-loss (bounded
search over ``log T``); it never changes which class is predicted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.metrics import brier_score_loss, log_loss

BINS = 10
TEMPERATURE_BOUNDS = (1e-2, 1e2)
_EPSILON = 1e-12  # probabilities of exactly 0 or 1 (float32 softmax) get a finite logit


def bin_table(labels: Sequence[int], probabilities: Sequence[float], bins: int = BINS) -> dict[str, np.ndarray]:
    """Per equal-width bin of the TCS probability: ``count``, mean ``probability`` and TCS ``fraction`` (NaN when
    empty), and the bin ``edges``."""
    labels, probabilities = np.asarray(labels, dtype=float), np.asarray(probabilities, dtype=float)
    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins).astype(float)
    with np.errstate(invalid="ignore"):
        return {"count": count, "probability": np.bincount(index, probabilities, bins) / count,
                "fraction": np.bincount(index, labels, bins) / count, "edges": np.linspace(0, 1, bins + 1)}


def expected_calibration_error(labels: Sequence[int], probabilities: Sequence[float], bins: int = BINS) -> float:
    """ECE over ``bins`` equal-width bins of the TCS probability (see the module docstring)."""
    table = bin_table(labels, probabilities, bins)
    full = table["count"] > 0
    gaps = np.abs(table["fraction"][full] - table["probability"][full])
    return float(np.sum(table["count"][full] * gaps) / table["count"].sum())


def calibration_metrics(labels: Sequence[int], probabilities: Sequence[float], bins: int = BINS) -> dict[str, float]:
    """``ece``, ``brier`` (mean squared error of the TCS probability) and ``log_loss`` (nats)."""
    labels, probabilities = np.asarray(labels, dtype=int), np.asarray(probabilities, dtype=float)
    return {"ece": expected_calibration_error(labels, probabilities, bins),
            "brier": float(brier_score_loss(labels, probabilities, pos_label=1)),
            "log_loss": float(log_loss(labels, np.clip(probabilities, _EPSILON, 1 - _EPSILON), labels=[0, 1]))}


def tcs_logits(probabilities: Sequence[float]) -> np.ndarray:
    """The logit difference ``z`` (TCS minus FOS) behind each TCS probability."""
    return logit(np.clip(np.asarray(probabilities, dtype=float), _EPSILON, 1 - _EPSILON))


def apply_temperature(probabilities: Sequence[float], temperature: float) -> np.ndarray:
    """The TCS probabilities after dividing the logits by ``temperature``."""
    return expit(tcs_logits(probabilities) / temperature)


def fit_temperature(labels: Sequence[int], probabilities: Sequence[float]) -> float:
    """The temperature that minimises the log-loss of ``probabilities`` (out-of-fold) on ``labels``, searched in
    log space within :data:`TEMPERATURE_BOUNDS`."""
    labels, z = np.asarray(labels, dtype=int), tcs_logits(probabilities)
    if len(np.unique(labels)) < 2:
        raise ValueError("Temperature scaling needs out-of-fold predictions of both classes (FOS and TCS).")
    signs = np.where(labels == 1, 1.0, -1.0)

    def loss(log_temperature: float) -> float:
        return float(np.mean(np.logaddexp(0.0, -signs * z / np.exp(log_temperature))))

    bounds = tuple(np.log(TEMPERATURE_BOUNDS))
    result = minimize_scalar(loss, bounds=bounds, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def temperature_report(labels: Sequence[int], probabilities: Sequence[float], evaluation: str) -> dict[str, Any]:
    """Fit a temperature on one evaluation's pooled out-of-fold predictions; calibration and accuracy before and
    after (on the same predictions it was fitted on)."""
    labels, probabilities = np.asarray(labels, dtype=int), np.asarray(probabilities, dtype=float)
    temperature = fit_temperature(labels, probabilities)
    calibrated = apply_temperature(probabilities, temperature)
    return {"temperature": temperature, "evaluation": evaluation,
            "at_bound": bool(np.isclose(temperature, TEMPERATURE_BOUNDS, rtol=1e-3).any()),
            "before": {**calibration_metrics(labels, probabilities),
                       "accuracy": float(np.mean((probabilities > 0.5) == labels))},
            "after": {**calibration_metrics(labels, calibrated),
                      "accuracy": float(np.mean((calibrated > 0.5) == labels))}}


def reliability_diagram(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], path: Path,
                        title: str, bins: int = BINS) -> Path:
    """A PNG of the reliability diagram: for each named set of ``(labels, probabilities)``, the TCS fraction against
    the mean probability of each bin, over a histogram of the predictions."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name, (labels, probabilities) in curves.items():
        table = bin_table(labels, probabilities, bins)
        full = table["count"] > 0
        ece = expected_calibration_error(labels, probabilities, bins)
        top.plot(table["probability"][full], table["fraction"][full], marker="o", label=f"{name} (ECE {ece:.3f})")
        bottom.stairs(table["count"], table["edges"], label=name)
    top.set(ylabel="fraction of TCS", title=title, xlim=(0, 1), ylim=(0, 1))
    top.legend(fontsize="small")
    bottom.set(xlabel=f"TCS probability ({bins} equal-width bins)", ylabel="predictions")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
