"""Patient-clustered bootstrap intervals: weighted metrics equal the plain ones, BCa equals scipy's, coverage of the
95 % interval on simulated cohorts, clustering widens the interval, seeding, speed."""

import time

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import expit
from scipy.stats import bootstrap as scipy_bootstrap

from gestures_hub.intervals import (
    Bootstrap,
    bca_interval,
    cluster_codes,
    jackknife_weights,
    metric_intervals,
    weighted_metrics,
)
from gestures_hub.metrics import METRICS, classification_metrics


def random_predictions(rng, size=40):
    labels = rng.integers(0, 2, size)
    scores = np.round(np.clip(0.35 * labels + rng.uniform(0.1, 0.8, size), 0, 1), 1)  # rounded: tied scores
    return labels, scores


def test_weighted_metrics_are_the_metrics_of_the_repeated_predictions():
    rng = np.random.default_rng(0)
    labels, scores = random_predictions(rng)
    weights = rng.integers(0, 4, size=(5, len(labels))).astype(float)
    weights[0] = 1.0
    resampled = weighted_metrics(labels, scores, weights)
    for row in range(5):
        repeated = classification_metrics(np.repeat(labels, weights[row].astype(int)),
                                          np.repeat(scores, weights[row].astype(int)))
        for name in METRICS:
            assert resampled[name][row] == pytest.approx(repeated[name]), (row, name)
    # per patient: weights of patients, summed over their predictions, give the same numbers
    patients = rng.integers(0, 7, len(labels)).astype(str)
    codes, num_patients = cluster_codes(patients)
    counts = rng.integers(0, 3, size=(4, num_patients)).astype(float)
    by_patient = weighted_metrics(labels, scores, counts, codes)
    by_prediction = weighted_metrics(labels, scores, counts[:, codes])
    for name in METRICS:
        np.testing.assert_allclose(by_patient[name], by_prediction[name])
    one_class = weighted_metrics([1, 1], [0.7, 0.2], np.ones((1, 2)))
    assert np.isnan(one_class["auroc"][0]) and one_class["balanced_accuracy"][0] == 0.5


def test_bca_is_scipys_bca_without_the_small_sample_adjustment():
    rng = np.random.default_rng(1)
    correct = (rng.random(60) < 0.8).astype(float)
    draws = Bootstrap(resamples=20000, seed=3).draw(len(correct))
    replicates = draws @ correct / len(correct)
    jackknife = jackknife_weights(len(correct)) @ correct / (len(correct) - 1)
    ours = bca_interval(correct.mean(), replicates, jackknife, 0.95)
    theirs = scipy_bootstrap((correct,), np.mean, n_resamples=20000, method="BCa", random_state=4,
                             confidence_level=0.95).confidence_interval
    assert ours == pytest.approx([theirs.low, theirs.high], abs=0.012)  # Monte Carlo error of both
    adjusted = bca_interval(correct.mean(), replicates, jackknife, 0.95, num_clusters=len(correct))
    assert adjusted[0] < ours[0] and adjusted[1] > ours[1]


def simulated_cohort(rng):
    """30-70 patients with 1-5 seizures each; a patient's seizures are right with one patient-specific probability
    (logit-normal), so their correctness is correlated. The true accuracy is that probability's mean."""
    num_patients = int(rng.integers(30, 71))
    location, scale = rng.uniform(0.5, 3.0), rng.uniform(0.0, 1.5)
    patient = np.repeat(np.arange(num_patients), rng.integers(1, 6, num_patients))
    right = rng.random(len(patient)) < expit(location + scale * rng.standard_normal(num_patients))[patient]
    labels = rng.integers(0, 2, len(patient))
    scores = np.where(right, 0.3 + 0.4 * labels, 0.7 - 0.4 * labels)  # above 0.5 exactly when TCS and right
    nodes, weights = hermegauss(60)
    truth = float(np.sum(weights * expit(location + scale * nodes)) / np.sum(weights))
    return patient.astype(str), labels, scores, truth


def test_coverage_of_the_95_percent_patient_clustered_interval():
    rng = np.random.default_rng(2026)
    hits = []
    for cohort in range(400):
        patients, labels, scores, truth = simulated_cohort(rng)
        bootstrap = Bootstrap(resamples=1000, seed=cohort)
        low, high = metric_intervals(patients, labels, scores, bootstrap.draw(len(set(patients))), 0.95)["accuracy"]
        hits.append(low <= truth <= high)
    assert 0.92 <= np.mean(hits) <= 0.98, np.mean(hits)


def test_resampling_patients_widens_the_interval_of_correlated_seizures():
    """Every patient's 4 seizures are all right or all wrong: resampling seizures one by one pretends there are 4 times
    as many independent samples."""
    rng = np.random.default_rng(5)
    patients = np.repeat(np.arange(40), 4).astype(str)
    labels = rng.integers(0, 2, len(patients))
    right = np.repeat(rng.random(40) < 0.8, 4)
    scores = np.where(right, 0.3 + 0.4 * labels, 0.7 - 0.4 * labels)
    bootstrap = Bootstrap(seed=0)
    clustered = metric_intervals(patients, labels, scores, bootstrap.draw(40), 0.95)["accuracy"]
    seizures = np.arange(len(patients)).astype(str)
    independent = metric_intervals(seizures, labels, scores, bootstrap.draw(len(patients)), 0.95)["accuracy"]
    assert clustered[1] - clustered[0] > 1.6 * (independent[1] - independent[0])
    assert clustered[0] < np.mean(right) < clustered[1]


def test_seeded_fast_and_checked():
    rng = np.random.default_rng(6)
    labels, scores = random_predictions(rng, size=183)
    patients = rng.integers(0, 68, len(labels)).astype(str)
    order = sorted(set(patients))
    started = time.perf_counter()
    first = metric_intervals(patients, labels, scores, Bootstrap(seed=1).draw(len(order)), 0.95, order)
    seconds = time.perf_counter() - started
    assert seconds < 1.0, f"2000 resamples of 183 predictions took {seconds:.2f} s"
    assert first == metric_intervals(patients, labels, scores, Bootstrap(seed=1).draw(len(order)), 0.95, order)
    assert first != metric_intervals(patients, labels, scores, Bootstrap(seed=2).draw(len(order)), 0.95, order)
    point = classification_metrics(labels, scores)
    for name in METRICS:
        low, high = first[name]
        assert low <= point[name] <= high, name
    assert metric_intervals(["p"] * 3, [0, 1, 1], [0.2, 0.9, 0.4], np.ones((100, 1)), 0.95)["accuracy"] is None
    with pytest.raises(ValueError, match="--confidence must be between 0 and 1"):
        Bootstrap(confidence=95)
    with pytest.raises(ValueError, match="at least 100 resamples"):
        Bootstrap(resamples=10)
    with pytest.raises(ValueError, match="must be one of the resampled patients"):
        cluster_codes(["a", "z"], ["a", "b"])
