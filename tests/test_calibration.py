"""Calibration: ECE, Brier and log-loss against hand computations; temperature scaling of an over-confident model;
the reliability diagram."""

import math

import numpy as np
import pytest
from matplotlib.image import imread
from scipy.special import expit, softmax

from gestures_hub.calibration import (
    apply_temperature,
    bin_table,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram,
    temperature_report,
)

# Bins of 0.1: 0.05 -> bin 0; 0.35, 0.35 -> bin 3; 0.85 -> bin 8; 0.95 and 1.0 -> bin 9 (the last bin holds 1.0).
LABELS = [0, 0, 1, 1, 1, 1]
PROBS = [0.05, 0.35, 0.35, 0.85, 0.95, 1.0]


def test_ece_brier_and_log_loss_by_hand():
    table = bin_table(LABELS, PROBS)
    assert table["count"].tolist() == [1, 0, 0, 2, 0, 0, 0, 0, 1, 2]
    # |fraction of TCS - mean probability| per bin, weighted by its size:
    # bin 0: |0 - 0.05|, bin 3: 2 x |0.5 - 0.35|, bin 8: |1 - 0.85|, bin 9: 2 x |1 - 0.975|
    ece = (0.05 + 2 * 0.15 + 0.15 + 2 * 0.025) / 6
    assert expected_calibration_error(LABELS, PROBS) == pytest.approx(ece)
    brier = (0.05 ** 2 + 0.35 ** 2 + 0.65 ** 2 + 0.15 ** 2 + 0.05 ** 2 + 0.0) / 6
    log_loss = -(math.log(0.95) + math.log(0.65) + math.log(0.35) + math.log(0.85) + math.log(0.95) + 0.0) / 6
    metrics = calibration_metrics(LABELS, PROBS)
    assert metrics["ece"] == pytest.approx(ece)
    assert metrics["brier"] == pytest.approx(brier)
    assert metrics["log_loss"] == pytest.approx(log_loss, abs=1e-9)
    # two bins: [0.05, 0.35, 0.35] with 1 TCS in 3, and [0.85, 0.95, 1.0], all TCS
    assert expected_calibration_error(LABELS, PROBS, bins=2) == pytest.approx(
        (3 * abs(1 / 3 - 0.25) + 3 * abs(1 - 2.8 / 3)) / 6)
    assert calibration_metrics([0, 1], [0.0, 1.0]) == {"ece": 0.0, "brier": 0.0, "log_loss": pytest.approx(0.0)}


def test_temperature_scaling_an_over_confident_model():
    """Labels drawn from calibrated logits z; the model reports sigmoid(3 z), three times too sure."""
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 1.5, 4000)
    labels = (rng.random(len(z)) < expit(z)).astype(int)
    over_confident = expit(3 * z)
    temperature = fit_temperature(labels, over_confident)
    assert temperature == pytest.approx(3.0, rel=0.1)
    report = temperature_report(labels, over_confident, "dense")
    assert report["temperature"] == temperature and not report["at_bound"]
    assert report["after"]["log_loss"] < report["before"]["log_loss"] - 0.1
    assert report["after"]["ece"] < report["before"]["ece"] and report["after"]["brier"] < report["before"]["brier"]
    assert report["after"]["accuracy"] == report["before"]["accuracy"]
    calibrated = apply_temperature(over_confident, temperature)
    assert np.array_equal(calibrated > 0.5, over_confident > 0.5)  # the same predictions
    # the same as dividing the two logits by T before the softmax
    logits = np.stack([rng.normal(size=5), rng.normal(size=5)], axis=1)
    np.testing.assert_allclose(apply_temperature(softmax(logits, axis=1)[:, 1], 2.5),
                               softmax(logits / 2.5, axis=1)[:, 1], rtol=1e-9)
    with pytest.raises(ValueError, match="both classes"):
        fit_temperature([1, 1], [0.6, 0.9])


def test_reliability_diagram(tmp_path):
    path = reliability_diagram({"per view": (LABELS, PROBS), "per seizure": (LABELS[:4], PROBS[:4])},
                               tmp_path / "reliability.png", "Out-of-fold reliability")
    assert path == tmp_path / "reliability.png"
    assert imread(path).shape == (600, 500, 4)  # 5 x 6 inches at 100 dpi, RGBA
