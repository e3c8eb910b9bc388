"""Metrics equal scikit-learn's and hand computations; aggregation across folds; Markdown tables."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from gestures_hub.metrics import (
    METRICS,
    classification_metrics,
    format_value,
    metrics_markdown,
    spread_metrics,
    summarize,
)

# 6 videos: TCS = 1. Predictions (p > 0.5): 1 1 0 | 0 0 1 -> tp 2, fn 1, tn 2, fp 1.
LABELS = [1, 1, 1, 0, 0, 0]
PROBS = [0.9, 0.6, 0.4, 0.2, 0.45, 0.7]


def test_hand_made_example():
    m = classification_metrics(LABELS, PROBS)
    assert m["confusion_matrix"] == [[2, 1], [1, 2]]  # [[tn, fp], [fn, tp]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # AUROC by counting (TCS, FOS) pairs ranked right: 0.9 beats 3 FOS scores, 0.6 beats 2, 0.4 beats 1 -> 6/9
    assert m["auroc"] == pytest.approx(6 / 9)
    assert m["auroc"] == pytest.approx(roc_auc_score(LABELS, PROBS))
    assert m["f1"] == pytest.approx(f1_score(LABELS, np.array(PROBS) > 0.5))


def test_threshold_is_the_argmax_of_two_logits():
    assert classification_metrics([1, 0], [0.5, 0.5])["confusion_matrix"] == [[1, 0], [1, 0]]  # ties -> FOS


def test_undefined_values():
    m = classification_metrics([0, 0, 0], [0.1, 0.2, 0.3])  # one class, no TCS predicted
    assert m["auroc"] is None
    assert m["precision"] == m["recall"] == m["f1"] == 0.0
    assert m["accuracy"] == m["balanced_accuracy"] == 1.0
    with pytest.raises(ValueError, match="as many labels"):
        classification_metrics([0, 1], [0.3])


def test_summary_mean_std_pooled():
    folds = [(LABELS[:3] + LABELS[3:5], PROBS[:3] + PROBS[3:5]), ([1, 0, 0], [0.8, 0.6, 0.1]), ([0, 0], [0.3, 0.2])]
    per_fold = [classification_metrics(labels, probs) for labels, probs in folds]
    all_labels = np.concatenate([labels for labels, _ in folds])
    all_probs = np.concatenate([probs for _, probs in folds])
    summary = summarize(per_fold, all_labels, all_probs)
    for name in METRICS:
        values = [fold[name] for fold in per_fold if fold[name] is not None]
        assert summary["mean"][name] == pytest.approx(np.mean(values))
        assert summary["std"][name] == pytest.approx(np.std(values, ddof=1))
    assert len([fold for fold in per_fold if fold["auroc"] is not None]) == 2  # the FOS-only fold has no AUROC
    assert summary["pooled"] == classification_metrics(all_labels, all_probs)
    single = summarize(per_fold[:1], folds[0][0], folds[0][1])
    assert single["std"]["f1"] is None and single["mean"]["f1"] == per_fold[0]["f1"]


def test_markdown():
    assert format_value(0.91234, 0.05) == "0.912 ± 0.050"
    assert format_value(None) == "n/a"
    fold = {"fold": 0, "num_val": 6, "best_epoch": 3, "middle": classification_metrics(LABELS, PROBS),
            "dense": classification_metrics(LABELS, PROBS)}
    report = {
        "protocol": {"group_by": "patient", "folds": 1, "seed": 0, "description": "patient-grouped 1-fold test"},
        "dataset": {"path": "x", "num_videos": 6, "num_patients": 3, "synthetic": True},
        "folds": [fold],
        "summary": {name: summarize([fold[name]], LABELS, PROBS) for name in ("middle", "dense")},
    }
    text = metrics_markdown(report)
    assert "| middle snippets, pooled | 0.667 | 0.667 | 0.667 | 0.667 | 0.667 | 0.667 |" in text
    assert "| 0 | 6 | 3 | 0.667 | 0.667 | 0.667 | 0.667 |" in text
    assert "(synthetic data)" in text


def test_spread_metrics_and_their_markdown():
    labels = [1, 1, 1, 1, 0, 0, 0]
    onsets = [2.0, 5.0, 1.0, None, None, None, None]  # the fourth TCS video has no known onset
    spreads = [2.5, 4.0, None, 9.0, None, 3.0, None]
    timeline = spread_metrics(labels, onsets, spreads)
    assert timeline == {"num_tcs": 3, "num_detected": 2, "median_error_s": 0.75, "mean_error_s": 0.75, "num_fos": 3,
                        "num_false_spread": 1}
    assert spread_metrics([0], [None], [None])["median_error_s"] is None
    fold = {"fold": 0, "num_val": 7, "best_epoch": 3, "middle": classification_metrics(labels, [0.9] * 7),
            "dense": classification_metrics(labels, [0.9] * 7), "spread": timeline}
    report = {
        "protocol": {"group_by": "patient", "folds": 1, "seed": 0, "description": "patient-grouped 1-fold test"},
        "dataset": {"path": "x", "num_videos": 7, "num_patients": 7},
        "folds": [fold],
        "summary": {name: summarize([fold[name]], labels, [0.9] * 7) for name in ("middle", "dense")},
        "timeline": timeline,
    }
    text = metrics_markdown(report)
    assert "| Spread error (s, median) |" in text and "| 0 | 7 | 3 | 0.571 | 0.727 | 0.571 | 0.727 | 0.75 |" in text
    assert ("a spread was detected in 2 of the 3 TCS videos with a known onset, 0.75 s from it (median; mean 0.75 s), "
            "and in 1 of the 3 FOS videos.") in text


def test_seizure_level_consensus_on_a_hand_made_table():
    """Two views per seizure except s4; s2's views disagree (0.3 and 0.8: consensus 0.55, TCS); s3's too (0.6 and
    0.2: 0.4, FOS)."""
    from gestures_hub.metrics import fold_metrics, seizure_consensus, summarize_folds

    patients = ["p1", "p1", "p1", "p1", "p2", "p2", "p2"]
    seizures = ["s1", "s1", "s2", "s2", "s3", "s3", "s4"]
    labels = [1, 1, 1, 1, 0, 0, 0]
    probabilities = [0.9, 0.7, 0.3, 0.8, 0.6, 0.2, 0.7]
    seizure_labels, consensus = seizure_consensus(patients, seizures, labels, probabilities)
    assert seizure_labels.tolist() == [1, 1, 0, 0]
    assert consensus == pytest.approx([0.8, 0.55, 0.4, 0.7])  # s4 has one view: its own consensus
    metrics = fold_metrics(patients, seizures, labels, {"middle": probabilities})
    assert metrics["middle_seizure"]["confusion_matrix"] == [[1, 1], [0, 2]]  # s4 a false TCS; s2 rescued
    assert metrics["middle_seizure"]["accuracy"] == pytest.approx(3 / 4)
    assert metrics["middle"]["confusion_matrix"] == [[1, 2], [1, 3]]  # per view: 4 of 7 right
    assert metrics["middle"]["accuracy"] == pytest.approx(4 / 7)
    fold = {"patients": patients, "seizures": seizures, "labels": labels, "probabilities": {"middle": probabilities},
            **metrics}
    summary = summarize_folds([fold, {**fold, "patients": ["q1"] * 7}])  # a second fold of other patients' seizures
    assert summary["middle_seizure"]["pooled"]["confusion_matrix"] == [[2, 2], [0, 4]]  # 8 seizures, 2 folds
    assert summary["middle_seizure"]["mean"]["accuracy"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="different labels"):
        seizure_consensus(["p", "p"], ["s", "s"], [0, 1], [0.5, 0.5])


def test_summary_adds_intervals_calibration_and_operating_points_of_the_pooled_predictions():
    from gestures_hub.calibration import calibration_metrics
    from gestures_hub.intervals import Bootstrap
    from gestures_hub.metrics import fold_metrics, summarize_folds

    rng = np.random.default_rng(0)
    folds = []
    for fold in range(3):
        patients = [f"p{fold}-{i // 2}" for i in range(20)]  # two views (one seizure) per patient
        seizures = ["s"] * 20
        labels = np.repeat(rng.integers(0, 2, 10), 2)
        probabilities = {"middle": np.clip(0.25 + 0.5 * labels + rng.normal(0, 0.2, 20), 0.01, 0.99)}
        folds.append({"fold": fold, "patients": patients, "seizures": seizures, "labels": labels,
                      "probabilities": probabilities, **fold_metrics(patients, seizures, labels, probabilities)})
    summary = summarize_folds(folds, Bootstrap(resamples=500, seed=0))
    labels = np.concatenate([fold["labels"] for fold in folds])
    scores = np.concatenate([fold["probabilities"]["middle"] for fold in folds])
    assert summary["middle"]["calibration"] == calibration_metrics(labels, scores)
    for name in ("middle", "middle_seizure"):
        for metric in METRICS:
            low, high = summary[name]["interval"][metric]
            assert low <= summary[name]["pooled"][metric] <= high
        assert [point["specificity_target"] for point in summary[name]["operating_points"]] == [0.9, 0.95]
    assert sum(map(sum, summary["middle_seizure"]["pooled"]["confusion_matrix"])) == 30  # 30 patients, 1 seizure
    assert "interval" not in summarize_folds(folds)["middle"]


def test_patient_table_and_the_statistics_sections():
    from gestures_hub.metrics import fold_metrics, format_estimate, patient_table, statistics_markdown, summarize_folds

    # p1: seizure s1 (2 views, TCS, one view wrong; consensus 0.55 right), p2: s3 (FOS, both views right), s4 (FOS,
    # one view, wrong)
    patients = ["p1", "p1", "p2", "p2", "p2"]
    seizures = ["s1", "s1", "s3", "s3", "s4"]
    labels = [1, 1, 0, 0, 0]
    probabilities = {"middle": [0.3, 0.8, 0.2, 0.1, 0.7]}
    fold = {"fold": 0, "patients": patients, "seizures": seizures, "labels": labels, "probabilities": probabilities,
            **fold_metrics(patients, seizures, labels, probabilities)}
    rows = patient_table([fold])
    assert rows == [
        {"patient": "p1", "fold": "0", "seizures": 1, "labels": "TCS", "views": 2, "view_errors_middle": 1,
         "seizure_errors_middle": 0, "mean_tcs_probability_middle": pytest.approx(0.55)},
        {"patient": "p2", "fold": "0", "seizures": 2, "labels": "FOS", "views": 3, "view_errors_middle": 1,
         "seizure_errors_middle": 1, "mean_tcs_probability_middle": pytest.approx(1 / 3)},
    ]
    assert format_estimate(0.94, [0.89, 0.98], digits=2) == "0.94 (0.89-0.98)" and format_estimate(0.5) == "0.500"
    report = {"summary": summarize_folds([fold]), "patients": rows, "figures": {"roc": "roc.png"},
              "temperature": {"temperature": 2.0, "evaluation": "middle", "at_bound": False, "models": ["final"],
                              "before": {"log_loss": 0.9, "ece": 0.3, "brier": 0.25, "accuracy": 0.6},
                              "after": {"log_loss": 0.6, "ece": 0.1, "brier": 0.2, "accuracy": 0.6}}}
    text = "\n".join(statistics_markdown(report))
    calibration = report["summary"]["middle"]["calibration"]
    assert (f"| middle snippets | {calibration['ece']:.3f} | {calibration['brier']:.3f} | "
            f"{calibration['log_loss']:.3f} |") in text
    assert "T = 2.000" in text and "log-loss 0.900 -> 0.600" in text and "accuracy 0.600 -> 0.600" in text
    # per view, 3 FOS views: 90 % specificity allows no false TCS, so above 0.7: threshold 0.8, 1 of the 2 TCS views
    assert "| middle snippets | 90% | 0.500 | 0.800 | 1.000 |" in text
    assert "![roc](roc.png)" in text
    assert "0 of 2 patients have no misclassified view or seizure" in text and "| p2 | 0 | 2 | FOS | 3 |" in text
