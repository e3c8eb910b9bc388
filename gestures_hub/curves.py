"""ROC and precision-recall curves with patient-resampled bootstrap bands, operating points, confusion matrices.

A threshold ``t`` calls a video TCS when its TCS probability is at least ``t`` (scikit-learn's convention). The
operating point at a specificity target is the threshold with the highest sensitivity among those whose
specificity reaches the target; its interval is the BCa interval (:mod:`gestures_hub.intervals`) of that
sensitivity over bootstrap resamples of patients, each resample picking its own threshold. The bands of the figures
are pointwise percentile bands of the resampled curves: at each false-positive rate the resampled ROC curves' true
positive rates (their upper envelope at that rate), at each recall the interpolated precision (the best precision at
that recall or above).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from .intervals import Bootstrap, bca_interval, cluster_codes, jackknife_weights, weighted_curves

SPECIFICITIES = (0.9, 0.95)
GRID = np.linspace(0, 1, 101)


@dataclass
class Predictions:
    """Pooled out-of-fold predictions of one evaluation: the patient, label, TCS probability and fold of each."""

    patients: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    folds: np.ndarray


def _rates(curves: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates ``(R, U + 1)`` (NaN rows where a resample lacks a class)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (curves["fp"] / curves["negatives"][:, None], curves["tp"] / curves["positives"][:, None])


def sensitivity_at(fpr: np.ndarray, tpr: np.ndarray, specificity: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the highest true positive rate whose false positive rate is at most ``1 - specificity``, and the
    index of that threshold (NaN rate where the row is NaN)."""
    allowed = fpr <= 1 - specificity + 1e-12
    index = np.where(allowed, np.arange(fpr.shape[1]), 0).max(1)  # rates grow with the index: the last allowed
    rows = np.arange(fpr.shape[0])
    return np.where(np.isnan(fpr[:, 0]), np.nan, tpr[rows, index]), index


def operating_points(predictions: Predictions, bootstrap: Bootstrap | None = None,
                     counts: np.ndarray | None = None, order: Sequence[str] | None = None,
                     specificities: Sequence[float] = SPECIFICITIES) -> list[dict[str, float | list | None]]:
    """Sensitivity at each specificity target, its threshold and the specificity it reaches; with ``bootstrap`` and
    its patient ``counts`` (columns: the patients of ``order``), the interval of the sensitivity. Empty when the
    predictions hold one class."""
    labels, scores = predictions.labels, predictions.scores
    if len(np.unique(labels)) < 2:
        return []
    point = weighted_curves(labels, scores, np.ones((1, len(labels))))
    fpr, tpr = _rates(point)
    if bootstrap is not None:
        codes, num_clusters = cluster_codes(predictions.patients, order)
        resampled = _rates(weighted_curves(labels, scores, counts, codes))
        jackknife = _rates(weighted_curves(labels, scores, jackknife_weights(num_clusters), codes))
    points = []
    for specificity in specificities:
        sensitivity, index = sensitivity_at(fpr, tpr, specificity)
        threshold = point["thresholds"][index[0]]
        entry = {"specificity_target": specificity, "sensitivity": float(sensitivity[0]),
                 "threshold": None if np.isinf(threshold) else float(threshold),
                 "specificity": float(1 - fpr[0, index[0]])}
        if bootstrap is not None:
            entry["interval"] = bca_interval(float(sensitivity[0]), sensitivity_at(*resampled, specificity)[0],
                                             sensitivity_at(*jackknife, specificity)[0], bootstrap.confidence,
                                             num_clusters)
        points.append(entry)
    return points


def _row_lookup(values: np.ndarray, grid: np.ndarray, side: str) -> np.ndarray:
    """Per row of ``values`` (nondecreasing, in [0, 1]), the index of ``grid`` in it (``np.searchsorted`` on each row
    at once: rows are shifted apart by 2)."""
    offsets = 2.0 * np.arange(values.shape[0])[:, None]
    flat = np.searchsorted((values + offsets).ravel(), (grid[None, :] + offsets).ravel(), side=side)
    return flat.reshape(values.shape[0], len(grid)) - (np.arange(values.shape[0]) * values.shape[1])[:, None]


def curve_bands(predictions: Predictions, counts: np.ndarray, confidence: float,
                order: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Pointwise percentile bands ``(2, len(GRID))`` of the resampled ROC (``roc``: TPR at each FPR of ``GRID``) and
    precision-recall curves (``pr``: interpolated precision at each recall of ``GRID``)."""
    codes, _ = cluster_codes(predictions.patients, order)
    curves = weighted_curves(predictions.labels, predictions.scores, counts, codes)
    valid = (curves["positives"] > 0) & (curves["negatives"] > 0)
    curves = {name: value[valid] for name, value in curves.items() if name != "thresholds"}
    fpr, tpr = _rates(curves)
    roc = np.take_along_axis(tpr, _row_lookup(fpr, GRID, "right") - 1, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(curves["tp"] + curves["fp"] > 0, curves["tp"] / (curves["tp"] + curves["fp"]), 1.0)
    best_above = np.flip(np.maximum.accumulate(np.flip(precision, 1), axis=1), 1)
    index = np.minimum(_row_lookup(tpr, GRID, "left"), tpr.shape[1] - 1)
    pr = np.take_along_axis(best_above, index, axis=1)
    levels = [(1 - confidence) / 2, (1 + confidence) / 2]
    return {"roc": np.quantile(roc, levels, axis=0), "pr": np.quantile(pr, levels, axis=0)}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def curve_figures(evaluations: Mapping[str, Predictions], titles: Mapping[str, str], directory: Path,
                  bootstrap: Bootstrap, order: Sequence[str], note: str = "") -> dict[str, str]:
    """``roc.png`` and ``pr.png``: one panel per evaluation with each fold's curve, the pooled curve and its band
    (``bootstrap`` over the patients of ``order``), and ``confusion.png``: the confusion matrix of each fold and
    pooled (rows: evaluations); ``note`` (e.g. that the data are synthetic) heads each figure. Returns the file
    names by figure."""
    plt = _pyplot()
    counts = bootstrap.draw(len(order))
    figures = {name: plt.subplots(1, len(evaluations), figsize=(4 * len(evaluations), 4), squeeze=False)
               for name in ("roc", "pr")}
    for column, (evaluation, predictions) in enumerate(evaluations.items()):
        bands = curve_bands(predictions, counts, bootstrap.confidence, order)
        roc_axis, pr_axis = figures["roc"][1][0, column], figures["pr"][1][0, column]
        for fold in np.unique(predictions.folds):
            mine = predictions.folds == fold
            if len(np.unique(predictions.labels[mine])) == 2:
                fpr, tpr, _ = roc_curve(predictions.labels[mine], predictions.scores[mine])
                precision, recall, _ = precision_recall_curve(predictions.labels[mine], predictions.scores[mine])
                roc_axis.plot(fpr, tpr, color="grey", alpha=0.4, linewidth=0.8)
                pr_axis.plot(recall, precision, color="grey", alpha=0.4, linewidth=0.8)
        fpr, tpr, _ = roc_curve(predictions.labels, predictions.scores)
        precision, recall, _ = precision_recall_curve(predictions.labels, predictions.scores)
        band = f"{bootstrap.confidence:.0%} band, patients resampled"
        roc_axis.fill_between(GRID, *bands["roc"], step="post", alpha=0.25, label=band)
        roc_axis.plot(fpr, tpr, color="C0", label="pooled (grey: folds)")
        roc_axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
        roc_axis.set(title=titles.get(evaluation, evaluation), xlabel="1 - specificity", ylabel="sensitivity")
        pr_axis.fill_between(GRID, *bands["pr"], alpha=0.25, label=band)
        pr_axis.plot(recall, precision, color="C0", label="pooled (grey: folds)")
        pr_axis.set(title=titles.get(evaluation, evaluation), xlabel="recall (TCS)", ylabel="precision (TCS)")
        for axis in (roc_axis, pr_axis):
            axis.set(xlim=(0, 1), ylim=(0, 1.02))
            axis.legend(loc="lower right" if axis is roc_axis else "lower left", fontsize="small")
    names = {}
    for name, (figure, _) in figures.items():
        if note:
            figure.suptitle(note)
        figure.tight_layout()
        figure.savefig(directory / f"{name}.png", dpi=90)
        plt.close(figure)
        names[name] = f"{name}.png"
    names["confusion"] = confusion_figure(evaluations, titles, directory / "confusion.png", note).name
    return names


def confusion_figure(evaluations: Mapping[str, Predictions], titles: Mapping[str, str], path: Path,
                     note: str = "") -> Path:
    """One row per evaluation: the confusion matrix (TCS when the probability is above 0.5) of each fold, then
    pooled; ``note`` heads the figure."""
    plt = _pyplot()
    folds = np.unique(np.concatenate([predictions.folds for predictions in evaluations.values()]))
    figure, axes = plt.subplots(len(evaluations), len(folds) + 1, squeeze=False,
                                figsize=(1.7 * (len(folds) + 1), 1.9 * len(evaluations)))
    for row, (evaluation, predictions) in enumerate(evaluations.items()):
        for column, fold in enumerate([*folds, None]):
            mine = predictions.folds == fold if fold is not None else np.ones(len(predictions.labels), dtype=bool)
            matrix = np.zeros((2, 2), dtype=int)
            np.add.at(matrix, (predictions.labels[mine], (predictions.scores[mine] > 0.5).astype(int)), 1)
            axis = axes[row, column]
            axis.imshow(matrix, cmap="Blues", vmin=0)
            for (actual, predicted), count in np.ndenumerate(matrix):
                axis.text(predicted, actual, str(count), ha="center", va="center",
                          color="white" if count > matrix.max() / 2 else "black")
            axis.set_xticks([0, 1], ["FOS", "TCS"])
            axis.set_yticks([0, 1], ["FOS", "TCS"])
            axis.set_title("pooled" if fold is None else f"fold {fold}", fontsize="small")
        axes[row, 0].set_ylabel(f"{titles.get(evaluation, evaluation)}\nactual", fontsize="small")
    figure.supxlabel("predicted")
    if note:
        figure.suptitle(note)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
