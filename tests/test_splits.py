"""Cross-validation folds: patient-grouped stratified, and the paper's seizure-wise deal."""

import datasets
import numpy as np
import pandas as pd
import pytest

from gestures_hub.splits import cross_validation_folds


def video_table(num_patients=30, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(num_patients):
        for s in range(rng.integers(1, 5)):
            label = "TCS" if rng.random() < 0.4 else "FOS"
            duration = float(rng.uniform(15, 200))
            for view in ("Large", "Small")[: rng.integers(1, 3)]:
                rows.append(
                    dict(patient=f"{p:03d}", seizure=f"{s:02d}", view=view, label=label, duration=duration)
                )
    return pd.DataFrame(rows)


def check_partition(folds, n):
    vals = np.concatenate([val for _, val in folds])
    assert sorted(vals.tolist()) == list(range(n))
    for train, val in folds:
        assert sorted(np.concatenate([train, val]).tolist()) == list(range(n))
        assert (np.diff(train) > 0).all() and (np.diff(val) > 0).all()


def test_patient_folds_never_share_a_patient_and_are_stratified():
    table = video_table()
    folds = cross_validation_folds(table, 5, seed=1)
    assert len(folds) == 5
    check_partition(folds, len(table))
    overall = (table.label == "TCS").mean()
    for train, val in folds:
        assert not set(table.patient[train]) & set(table.patient[val])
        assert abs((table.label[val] == "TCS").mean() - overall) < 0.15


def test_patient_folds_are_seeded_and_accept_a_dataset():
    table = video_table()
    a = cross_validation_folds(table, 4, seed=3)
    b = cross_validation_folds(datasets.Dataset.from_pandas(table), 4, seed=3)
    c = cross_validation_folds(table, 4, seed=4)
    assert all((x[1] == y[1]).all() for x, y in zip(a, b, strict=True))
    assert any(len(x[1]) != len(y[1]) or (x[1] != y[1]).any() for x, y in zip(a, c, strict=True))


def test_seizure_folds_follow_the_round_robin_by_duration():
    seizures = [  # (patient, seizure, label, duration of the longest view)
        ("001", "01", "FOS", 100.0),
        ("001", "02", "TCS", 40.0),
        ("002", "01", "TCS", 50.0),
        ("002", "02", "FOS", 20.0),
        ("003", "01", "FOS", 10.0),
        ("003", "02", "TCS", 30.0),
        ("004", "01", "FOS", 5.0),
    ]
    rows = []
    for patient, seizure, label, duration in seizures:
        views = ["Large"] if (patient, seizure) == ("003", "02") else ["Large", "Small"]  # one view discarded
        for offset, view in enumerate(views):
            rows.append(
                dict(patient=patient, seizure=seizure, view=view, label=label, duration=duration - offset)
            )
    table = pd.DataFrame(rows).sample(frac=1, random_state=0).reset_index(drop=True)

    folds = cross_validation_folds(table, 3, group_by="seizure")
    check_partition(folds, len(table))
    # TCS by duration: 50 -> 0, 40 -> 1, 30 -> 2; then FOS: 100 -> 0, 20 -> 1, 10 -> 2, 5 -> 0
    expected = {
        0: {("002", "01"), ("001", "01"), ("004", "01")},
        1: {("001", "02"), ("002", "02")},
        2: {("003", "02"), ("003", "01")},
    }
    for fold, (train, val) in enumerate(folds):
        val_seizures = set(zip(table.patient[val], table.seizure[val], strict=True))
        assert val_seizures == expected[fold]
        train_seizures = set(zip(table.patient[train], table.seizure[train], strict=True))
        assert not val_seizures & train_seizures  # both views of a seizure together
    train, val = folds[0]
    assert set(table.patient[train]) & set(table.patient[val])  # folds by seizure, not by patient


def test_seizure_ids_are_per_patient():
    table = pd.DataFrame(
        dict(patient=["1", "2"], seizure=["01", "01"], label=["TCS", "FOS"], duration=[20.0, 30.0])
    )
    folds = cross_validation_folds(table, 2, group_by="seizure")
    assert [val.tolist() for _, val in folds] == [[0], [1]]


def test_a_patient_with_both_labels_is_fine_but_a_seizure_with_two_is_not():
    table = pd.DataFrame(
        dict(
            patient=["1", "1", "2", "3"],
            seizure=["01", "02", "01", "01"],
            label=["TCS", "FOS", "FOS", "TCS"],
            duration=[20.0, 30.0, 25.0, 40.0],
        )
    )
    assert len(cross_validation_folds(table, 2)) == 2
    table.loc[3, ["patient", "seizure"]] = ["2", "01"]
    for group_by in ("patient", "seizure"):
        with pytest.raises(ValueError, match=r"both FOS and TCS.*\('2', '01'\)"):
            cross_validation_folds(table, 2, group_by=group_by)


def test_errors():
    table = video_table(num_patients=3)
    with pytest.raises(ValueError, match="larger than the number of patients"):
        cross_validation_folds(table, 4)
    with pytest.raises(ValueError, match="larger than the number of seizures"):
        cross_validation_folds(table.iloc[:1], 2, group_by="seizure")
    with pytest.raises(ValueError, match="k must be"):
        cross_validation_folds(table, 1)
    with pytest.raises(ValueError, match="group_by"):
        cross_validation_folds(table, 2, group_by="view")
    with pytest.raises(ValueError, match="lacks the column"):
        cross_validation_folds(table.drop(columns="duration"), 2)
    unlabelled = table.assign(label=["FOS"] + [""] * (len(table) - 1))
    with pytest.raises(ValueError, match="no label"):
        cross_validation_folds(unlabelled, 2)
