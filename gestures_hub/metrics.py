"""FOS vs TCS classification metrics (TCS is the positive class), their aggregation across folds, and tables.

A prediction is TCS when the TCS probability (softmax of the two logits) is above 0.5, which is the argmax of the
logits. Metrics are per view (one video per camera view) and per seizure: the paper's headline numbers average the
TCS probabilities of a seizure's views and threshold that consensus at 0.5 (:func:`seizure_consensus`). Undefined
ratios (e.g. precision with no predicted TCS) are 0; AUROC is ``None`` when the labels hold one class.
Across folds, ``mean`` and ``std`` (sample standard deviation, ``ddof=1``; ``None`` with fewer than two folds) are
taken over the per-fold values, and ``pooled`` is computed once on the concatenated predictions of all folds. On the
pooled predictions :func:`summarize_folds` adds their ``calibration`` (:mod:`gestures_hub.calibration`), the
``operating_points`` at 90 and 95 % specificity (:mod:`gestures_hub.curves`) and, given a bootstrap, the
``interval`` of every metric, resampling patients (:mod:`gestures_hub.intervals`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from .calibration import BINS, calibration_metrics
from .curves import Predictions, operating_points
from .features import LABEL_NAMES
from .intervals import Bootstrap, metric_intervals

METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc")
TITLES = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "auroc": "AUROC",
}
EVALUATIONS = {"middle": "middle snippets", "dense": "all snippets"}
SEIZURE_LEVEL = "_seizure"
"""Suffix of the per-seizure evaluations: ``middle_seizure`` is the consensus of the views' ``middle`` predictions."""
EVALUATION_TITLES = {**EVALUATIONS, **{f"{name}{SEIZURE_LEVEL}": f"{title}, per seizure"
                                       for name, title in EVALUATIONS.items()}}


def seizure_level(patients: Sequence[str], seizures: Sequence[str], labels: Sequence[int],
                  tcs_probabilities: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per seizure (``patient``, ``seizure``), in order of first appearance: its patient, its label and the mean TCS
    probability of its views, the paper's consensus (a seizure with one usable view is its own consensus)."""
    frame = pd.DataFrame({"patient": list(map(str, patients)), "seizure": list(map(str, seizures)),
                          "label": np.asarray(labels, dtype=int), "p": np.asarray(tcs_probabilities, dtype=float)})
    grouped = frame.groupby(["patient", "seizure"], sort=False)
    conflicting = grouped["label"].nunique()
    if (conflicting > 1).any():
        raise ValueError(f"Views of one seizure have different labels: {conflicting[conflicting > 1].index.tolist()}")
    return (grouped["patient"].first().to_numpy(), grouped["label"].first().to_numpy(),
            grouped["p"].mean().to_numpy())


def seizure_consensus(patients: Sequence[str], seizures: Sequence[str], labels: Sequence[int],
                      tcs_probabilities: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The labels and consensus TCS probabilities of :func:`seizure_level`."""
    return seizure_level(patients, seizures, labels, tcs_probabilities)[1:]


def classification_metrics(labels: Sequence[int], tcs_probabilities: Sequence[float]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, precision, recall, F1, AUROC and the confusion matrix ``[[tn, fp], [fn, tp]]``."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(tcs_probabilities, dtype=float)
    if labels.shape != scores.shape or labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"Need as many labels as probabilities (one each, at least one); got {labels.shape} "
                         f"and {scores.shape}.")
    predictions = (scores > 0.5).astype(int)
    both_classes = len(np.unique(labels)) == 2
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predictions)) if both_classes
        else float(accuracy_score(labels, predictions)),
        "precision": float(precision_score(labels, predictions, pos_label=1, zero_division=0)),
        "recall": float(recall_score(labels, predictions, pos_label=1, zero_division=0)),
        "f1": float(f1_score(labels, predictions, pos_label=1, zero_division=0)),
        "auroc": float(roc_auc_score(labels, scores)) if both_classes else None,
        "confusion_matrix": confusion_matrix(labels, predictions, labels=[0, 1]).tolist(),
    }


def summarize(
    fold_metrics: Sequence[Mapping[str, Any]], labels: Sequence[int], tcs_probabilities: Sequence[float]
) -> dict[str, dict[str, Any]]:
    """``mean`` and ``std`` of each metric over folds (``None`` values skipped) and ``pooled`` metrics.

    ``labels`` and ``tcs_probabilities`` are the validation predictions of all folds, concatenated.
    """
    mean, std = {}, {}
    for name in METRICS:
        values = np.array([fold[name] for fold in fold_metrics if fold[name] is not None], dtype=float)
        mean[name] = float(values.mean()) if len(values) else None
        std[name] = float(values.std(ddof=1)) if len(values) > 1 else None
    return {"mean": mean, "std": std, "pooled": classification_metrics(labels, tcs_probabilities)}


def fold_metrics(patients: Sequence[str], seizures: Sequence[str], labels: Sequence[int],
                 probabilities: Mapping[str, Sequence[float]]) -> dict[str, dict[str, Any]]:
    """:func:`classification_metrics` of one fold's validation predictions, per evaluation (``middle``, ...): per view
    under its name, and per seizure (:func:`seizure_consensus`) under ``<name>_seizure``."""
    metrics = {}
    for name, values in probabilities.items():
        metrics[name] = classification_metrics(labels, values)
        metrics[name + SEIZURE_LEVEL] = classification_metrics(*seizure_consensus(patients, seizures, labels, values))
    return metrics


def pooled_predictions(folds: Sequence[Mapping[str, Any]]) -> dict[str, Predictions]:
    """The validation predictions of all folds together, per evaluation: per view under its name, per seizure under
    ``<name>_seizure``. Each fold holds its validation ``patients``, ``seizures``, ``labels`` and ``probabilities``
    (per evaluation), and its number as ``fold`` (default: its position)."""
    pooled: dict[str, list[tuple[np.ndarray, ...]]] = {}
    for position, fold in enumerate(folds):
        number = fold.get("fold", position)
        for name, values in fold["probabilities"].items():
            levels = {name: (np.asarray(fold["patients"], dtype=str), np.asarray(fold["labels"], dtype=int),
                             np.asarray(values, dtype=float)),
                      name + SEIZURE_LEVEL: seizure_level(fold["patients"], fold["seizures"], fold["labels"], values)}
            for level, arrays in levels.items():
                pooled.setdefault(level, []).append((*arrays, np.full(len(arrays[0]), number)))
    return {level: Predictions(*(np.concatenate(column) for column in zip(*parts, strict=True)))
            for level, parts in pooled.items()}


def patient_order(folds: Sequence[Mapping[str, Any]]) -> list[str]:
    """The validation patients of all folds, in order of first appearance: the columns of a bootstrap draw."""
    return list(dict.fromkeys(str(patient) for fold in folds for patient in fold["patients"]))


def summarize_folds(folds: Sequence[Mapping[str, Any]],
                    bootstrap: Bootstrap | None = None) -> dict[str, dict[str, Any]]:
    """:func:`summarize` of every evaluation of :func:`fold_metrics`, per view and per seizure (folds as
    :func:`pooled_predictions` takes them), with the calibration and operating points of the pooled predictions and,
    given ``bootstrap``, the intervals of their metrics and sensitivities: one draw of patients for all of them."""
    order = patient_order(folds)
    counts = bootstrap.draw(len(order)) if bootstrap is not None else None
    summary = {}
    for name, predictions in pooled_predictions(folds).items():
        labels, scores = predictions.labels, predictions.scores
        summary[name] = {**summarize([fold[name] for fold in folds], labels, scores),
                         "calibration": calibration_metrics(labels, scores),
                         "operating_points": operating_points(predictions, bootstrap, counts, order)}
        if bootstrap is not None:
            summary[name]["interval"] = metric_intervals(predictions.patients, labels, scores, counts,
                                                         bootstrap.confidence, order)
    return summary


def patient_table(folds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per validation patient: fold, seizures, views, labels, and per evaluation (``middle``, ...) the mean
    TCS probability of the views and how many views and seizures were misclassified; most errors first."""
    pooled = pooled_predictions(folds)
    views = next(iter(folds[0]["probabilities"]))
    frame = pd.DataFrame({"patient": pooled[views].patients, "fold": pooled[views].folds,
                          "label": pooled[views].labels})
    rows = frame.groupby("patient", sort=False).agg(
        fold=("fold", lambda folds: " ".join(map(str, sorted(set(folds))))),
        labels=("label", lambda labels: "+".join(LABEL_NAMES[label] for label in sorted(set(labels)))),
        views=("label", "size"))
    rows.insert(1, "seizures", pd.Series(pooled[views + SEIZURE_LEVEL].patients).value_counts())
    for name in folds[0]["probabilities"]:
        for level, column in ((name, f"view_errors_{name}"), (name + SEIZURE_LEVEL, f"seizure_errors_{name}")):
            predictions = pooled[level]
            wrong = pd.Series((predictions.scores > 0.5) != predictions.labels, index=predictions.patients)
            rows[column] = wrong.groupby(level=0).sum()
        rows[f"mean_tcs_probability_{name}"] = pd.Series(pooled[name].scores, index=pooled[name].patients
                                                         ).groupby(level=0).mean()
    rows = rows.reset_index().sort_values(f"view_errors_{views}", ascending=False, kind="stable")
    return rows.to_dict("records")


def spread_metrics(labels: Sequence[int], onsets: Sequence[float | None],
                   spread_times: Sequence[float | None]) -> dict[str, Any]:
    """How well timelines show the bilateral spread. Of the TCS videos with a known onset (``num_tcs``): how many
    timelines show a spread (``num_detected``) and the median and mean absolute error of its time in seconds (None
    without any). Of the FOS videos (``num_fos``): how many timelines show one anyway (``num_false_spread``)."""
    pairs = [(onset, spread) for label, onset, spread in zip(labels, onsets, spread_times, strict=True)
             if label == 1 and onset is not None]
    fos = [spread for label, spread in zip(labels, spread_times, strict=True) if label == 0]
    errors = [abs(spread - onset) for onset, spread in pairs if spread is not None]
    return {
        "num_tcs": len(pairs),
        "num_detected": len(errors),
        "median_error_s": float(np.median(errors)) if errors else None,
        "mean_error_s": float(np.mean(errors)) if errors else None,
        "num_fos": len(fos),
        "num_false_spread": sum(spread is not None for spread in fos),
    }


def format_value(mean: float | None, std: float | None = None, digits: int = 3) -> str:
    """``0.912 ± 0.050``, ``0.912`` without a spread, ``n/a`` when undefined."""
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_estimate(value: float | None, interval: Sequence[float] | None = None, digits: int = 3) -> str:
    """``0.940 (0.890-0.980)``: a value and its confidence interval; the value alone without one."""
    if value is None or interval is None:
        return format_value(value, digits=digits)
    low, high = interval
    return f"{value:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def markdown_row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (first column left-aligned, the others right-aligned)."""
    rule = markdown_row([":--"] + ["--:"] * (len(header) - 1))
    return "\n".join([markdown_row(header), rule, *(markdown_row(row) for row in rows)])


def metrics_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown summary of a ``metrics.json`` report: aggregated metrics, then one row per fold."""
    protocol, dataset = report["protocol"], report["dataset"]
    lines = [
        "# Cross-validation metrics",
        "",
        f"{protocol['description']} (group by {protocol['group_by']}, seed {protocol['seed']}); "
        f"{dataset['num_videos']} videos of {dataset['num_patients']} patients"
        f"{' (synthetic data)' if dataset.get('synthetic') else ''}. TCS is the positive class.",
        "",
        "Middle snippets: one snippet at the centre of each of the model's segments (the paper's validation "
        "sampling). All snippets: every snippet of the video (dense). Per seizure: the mean of the TCS probabilities "
        "of the seizure's views, thresholded at 0.5 (the paper's headline numbers). Mean ± sd: over folds; pooled: "
        "computed once on the validation predictions of all folds together.",
        "",
    ]
    rows = []
    for evaluation, summary in report["summary"].items():
        label = EVALUATION_TITLES.get(evaluation, evaluation)
        interval = summary.get("interval", {})
        rows.append([f"{label}, mean ± sd"] + [format_value(summary["mean"][m], summary["std"][m]) for m in METRICS])
        rows.append([f"{label}, pooled"] + [format_estimate(summary["pooled"][m], interval.get(m)) for m in METRICS])
    lines += [markdown_table(["Evaluation"] + [TITLES[m] for m in METRICS], rows), ""]
    if "intervals" in report:
        bootstrap = report["intervals"]
        lines += [f"Pooled values in brackets: {bootstrap['confidence']:.0%} confidence intervals, "
                  f"{bootstrap['method']} ({bootstrap['resamples']} resamples, seed {bootstrap['seed']}).", ""]
    for evaluation, summary in report["summary"].items():
        if evaluation.endswith(SEIZURE_LEVEL):
            (tn, fp), (fn, tp) = summary["pooled"]["confusion_matrix"]
            lines += [f"Per seizure ({EVALUATIONS[evaluation.removesuffix(SEIZURE_LEVEL)]}), pooled: {tp} TP, {tn} TN, "
                      f"{fp} FP, {fn} FN over {tn + fp + fn + tp} seizures (the mean of the views' TCS probabilities, "
                      "thresholded at 0.5).", ""]
    evaluations = list(report["summary"])
    header = ["Fold", "Videos", "Best epoch"] + [
        f"{TITLES[m]} ({evaluation})" for evaluation in evaluations for m in ("accuracy", "f1")
    ]
    timeline = report.get("timeline")
    fold_rows = [
        [fold["fold"], fold["num_val"], fold["best_epoch"]]
        + [format_value(fold[evaluation][m]) for evaluation in evaluations for m in ("accuracy", "f1")]
        + ([format_value(fold["spread"]["median_error_s"], digits=2)] if timeline else [])
        for fold in report["folds"]
    ]
    lines += [markdown_table(header + (["Spread error (s, median)"] if timeline else []), fold_rows), ""]
    if timeline:
        lines += [
            f"Timeline (all snippets, pooled over folds): a spread was detected in {timeline['num_detected']} of the "
            f"{timeline['num_tcs']} TCS videos with a known onset, {format_value(timeline['median_error_s'], digits=2)}"
            f" s from it (median; mean {format_value(timeline['mean_error_s'], digits=2)} s), and in "
            f"{timeline['num_false_spread']} of the {timeline['num_fos']} FOS videos.",
            "",
        ]
    return "\n".join(lines + statistics_markdown(report))


def statistics_markdown(report: Mapping[str, Any]) -> list[str]:
    """The calibration, temperature, operating-point, figure and per-patient sections of :func:`metrics_markdown`."""
    summary = report["summary"]
    calibration = [[EVALUATION_TITLES.get(name, name), *(format_value(entry["calibration"][key])
                                                        for key in ("ece", "brier", "log_loss"))]
                   for name, entry in summary.items() if "calibration" in entry]
    lines = []
    if calibration:
        lines += ["## Calibration", "",
                  f"Of the pooled out-of-fold TCS probabilities. ECE: expected calibration error over {BINS} "
                  "equal-width bins of the TCS probability (the gap between the fraction of TCS and the mean "
                  "probability, weighted by the bin's size); Brier: mean squared error; log-loss in nats.", "",
                  markdown_table(["Evaluation", "ECE", "Brier", "Log-loss"], calibration), ""]
    temperature = report.get("temperature")
    if temperature:
        before, after = temperature["before"], temperature["after"]
        lines += [f"Temperature scaling (`--calibrate`): T = {temperature['temperature']:.3f}, fitted on the "
                  f"{EVALUATION_TITLES[temperature['evaluation']]} per view (what `gestures predict` and the pipeline "
                  f"compute){' at the bound of its search' if temperature['at_bound'] else ''}; log-loss "
                  f"{before['log_loss']:.3f} -> {after['log_loss']:.3f}, ECE {before['ece']:.3f} -> "
                  f"{after['ece']:.3f}, Brier {before['brier']:.3f} -> {after['brier']:.3f}, accuracy "
                  f"{before['accuracy']:.3f} -> {after['accuracy']:.3f} (on the predictions it was fitted on). "
                  f"Stored as `temperature` in the config of: {', '.join(temperature['models']) or 'no final model'}.",
                  ""]
    points = [[EVALUATION_TITLES.get(name, name), f"{point['specificity_target']:.0%}",
               format_estimate(point["sensitivity"], point.get("interval")),
               "never TCS" if point["threshold"] is None else f"{point['threshold']:.3f}",
               format_value(point["specificity"])]
              for name, entry in summary.items() for point in entry.get("operating_points", [])]
    if points:
        lines += ["## Operating points", "",
                  "The highest sensitivity (TCS recall) at a specificity of at least the target, and the threshold "
                  "that gives it (TCS when the probability is at least the threshold), on the pooled predictions.",
                  "", markdown_table(["Evaluation", "Specificity target", "Sensitivity", "Threshold",
                                      "Specificity reached"], points), ""]
    figures = report.get("figures")
    if figures:
        lines += ["## Figures", "", "Pooled over folds (grey: each fold); bands: pointwise bootstrap over patients.",
                  "", *(f"![{name}]({file})" for name, file in figures.items()), ""]
    patients = report.get("patients")
    if patients:
        views = next(iter(report["summary"]))
        wrong = [row for row in patients if row[f"view_errors_{views}"] or row[f"seizure_errors_{views}"]]
        columns = [key for key in patients[0] if key != "patient"]
        lines += ["## Patients", "",
                  f"{len(patients) - len(wrong)} of {len(patients)} patients have no misclassified view or seizure "
                  f"({EVALUATION_TITLES[views]}); the others, most errors first (all in `patients.csv`):", ""]
        if wrong:
            lines += [markdown_table(["Patient", *columns],
                                     [[row["patient"], *(format_value(row[key]) if isinstance(row[key], float)
                                                         else row[key] for key in columns)] for row in wrong]), ""]
    return lines
