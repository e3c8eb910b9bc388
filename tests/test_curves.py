"""ROC curves equal scikit-learn's, operating points by brute force, bootstrap bands, the figures."""

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.metrics import roc_auc_score, roc_curve

from gestures_hub.curves import (
    GRID,
    Predictions,
    confusion_figure,
    curve_bands,
    curve_figures,
    operating_points,
)
from gestures_hub.intervals import Bootstrap, weighted_auroc, weighted_curves


def predictions(seed=0, num_patients=30):
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(num_patients), rng.integers(1, 4, num_patients))
    labels = (patient % 2).astype(int)
    scores = np.round(np.clip(0.3 + 0.35 * labels + rng.normal(0, 0.2, len(labels)), 0, 1), 2)
    return Predictions(patient.astype(str), labels, scores, patient % 3)


def test_weighted_curves_are_sklearns_roc_curve():
    data = predictions()
    curves = weighted_curves(data.labels, data.scores, np.ones((1, len(data.labels))))
    fpr, tpr, thresholds = roc_curve(data.labels, data.scores, drop_intermediate=False)
    np.testing.assert_allclose(curves["fp"][0] / curves["negatives"][0], fpr)
    np.testing.assert_allclose(curves["tp"][0] / curves["positives"][0], tpr)
    np.testing.assert_allclose(curves["thresholds"], thresholds)
    assert weighted_auroc(curves)[0] == pytest.approx(roc_auc_score(data.labels, data.scores))


def test_operating_points_by_brute_force():
    data = predictions(seed=1)
    points = operating_points(data)
    assert [point["specificity_target"] for point in points] == [0.9, 0.95]
    negatives, positives = data.scores[data.labels == 0], data.scores[data.labels == 1]
    for point in points:
        best = max(((np.mean(positives >= t), t) for t in np.unique(data.scores)
                    if np.mean(negatives < t) >= point["specificity_target"]), default=(0.0, None))
        assert point["sensitivity"] == pytest.approx(best[0])
        assert point["threshold"] == pytest.approx(best[1])
        assert point["specificity"] == pytest.approx(np.mean(negatives < best[1]))
        assert "interval" not in point
    bootstrap = Bootstrap(seed=0)
    order = list(dict.fromkeys(data.patients))
    with_intervals = operating_points(data, bootstrap, bootstrap.draw(len(order)), order)
    for point, plain in zip(with_intervals, points, strict=True):
        low, high = point.pop("interval")
        assert point == plain and low <= plain["sensitivity"] <= high and high - low > 0.05
    one_class = Predictions(np.array(["a", "b"]), np.array([1, 1]), np.array([0.2, 0.9]), np.zeros(2))
    assert operating_points(one_class) == []


def test_bands_hold_the_pooled_curve():
    data = predictions(seed=2)
    order = list(dict.fromkeys(data.patients))
    bands = curve_bands(data, Bootstrap(seed=0).draw(len(order)), 0.95, order)
    assert bands["roc"].shape == bands["pr"].shape == (2, len(GRID))
    assert (bands["roc"][0] <= bands["roc"][1]).all() and (bands["pr"][0] <= bands["pr"][1]).all()
    fpr, tpr, _ = roc_curve(data.labels, data.scores)
    pooled = np.array([tpr[fpr <= x + 1e-12].max() for x in GRID])  # the ROC's upper envelope at each rate
    inside = (bands["roc"][0] - 1e-9 <= pooled) & (pooled <= bands["roc"][1] + 1e-9)
    assert inside.mean() > 0.95
    perfect = Predictions(data.patients, data.labels, data.labels * 0.8 + 0.1, data.folds)
    perfect_bands = curve_bands(perfect, Bootstrap(seed=0).draw(len(order)), 0.95, order)
    assert (perfect_bands["roc"] == 1).all() and (perfect_bands["pr"] == 1).all()


def test_figures(tmp_path):
    data = predictions(seed=3)
    titles = {"middle": "middle snippets", "middle_seizure": "middle snippets, per seizure"}
    evaluations = {"middle": data, "middle_seizure": data}
    names = curve_figures(evaluations, titles, tmp_path, Bootstrap(resamples=200), list(dict.fromkeys(data.patients)),
                          "Synthetic data, not patients")
    assert names == {"roc": "roc.png", "pr": "pr.png", "confusion": "confusion.png"}
    assert imread(tmp_path / "roc.png").shape == (360, 720, 4)  # two 4 x 4 inch panels at 90 dpi
    assert imread(tmp_path / "pr.png").shape == (360, 720, 4)
    assert imread(tmp_path / "confusion.png").shape[:2] == (304, 544)  # 2 rows, 3 folds + pooled, at 80 dpi
    assert confusion_figure({"middle": data}, titles, tmp_path / "one.png") == tmp_path / "one.png"
