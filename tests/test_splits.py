"""Cross-validation folds: patient-grouped stratified, the GESTURES code's seizure-wise deal and its
duration-balanced variant."""

from collections import defaultdict, deque

import datasets
import numpy as np
import pandas as pd
import pytest

from gestures_hub.splits import cross_validation_folds, short_seizures


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

    folds = cross_validation_folds(table, 3, group_by="seizure-duration", min_seizure_duration=0)
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
    for group_by in ("patient", "seizure", "seizure-duration"):
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


def gestures_cohort(seed=0):
    """Seizure records shaped like the GESTURES ``seizures.csv`` (Duration: the first, "Large" view's) and the
    view table made from them (one row per view; rows shuffled)."""
    rng = np.random.default_rng(seed)
    records = []
    for patient in ("1", "2", "10", "003", "21", "7", "100", "12", "5", "40", "9", "31", "6", "11", "8", "25"):
        for seizure in ("1", "2", "10", "03"):  # string order: "03" < "1" < "10" < "2"
            tcs = rng.random() < 0.4
            duration = float(rng.choice([5.0, 10.0, 14.0, 20.0, 30.0, 30.0, 45.0, 60.0, 60.0, 90.0, 120.0]))
            records.append(dict(Subject=patient, Seizure=seizure, Duration=duration, Small=duration + 0.5,
                                OnsetClonic=duration / 2 if tcs else np.nan, Label="TCS" if tcs else "FOS", Discard=""))
    by_id = {(r["Subject"], r["Seizure"]): r for r in records}
    by_id["1", "2"].update(Duration=15.0, Small=14.6)  # kept: exactly 15 s in the first view
    by_id["2", "10"].update(Duration=14.8, Small=15.2)  # dropped: the first view is under 15 s
    by_id["10", "1"].update(Duration=80.0, Small=80.0, OnsetClonic=30.0, Label="TCS", Discard="Yes")
    by_id["003", "2"].update(Duration=70.0, Small=70.5, Discard="Small")
    by_id["7", "10"].update(Duration=70.0, Small=70.0, OnsetClonic=10.0, Label="TCS", Discard="Large")
    by_id["21", "1"].update(Duration=50.0, Small=50.0, OnsetClonic=np.nan, Label="TCS")  # no onset: FOS group
    rows = [
        dict(video=f"{r['Subject']}_{r['Seizure']}_{view}", patient=r["Subject"], seizure=r["Seizure"], view=view,
             label=r["Label"], duration=r["Duration"] if view == "Large" else r["Small"],
             onset_bilateral=None if np.isnan(r["OnsetClonic"]) else r["OnsetClonic"],
             discarded=r["Discard"] in ("Yes", view))
        for r in records
        for view in ("Small", "Large")
    ]
    table = pd.DataFrame(rows).sample(frac=1, random_state=seed).reset_index(drop=True)
    return pd.DataFrame(records), table


def original_buckets(df, num_folds, min_duration):
    """``get_buckets`` of the GESTURES ``training.py``, on the seizure records instead of the CSV file."""
    buckets = defaultdict(list)
    queue = deque(range(num_folds))
    df = df[df.Duration >= min_duration]
    gtcs = df[~df.isna().OnsetClonic].sort_values(by="Duration", ascending=False)
    no_gtcs = df[df.isna().OnsetClonic].sort_values(by="Duration", ascending=False)
    for sdf in gtcs, no_gtcs:
        for subject, seizure in sorted(set(zip(sdf.Subject, sdf.Seizure, strict=True))):  # get_seizure_ids
            row = sdf.query(f'Subject == "{subject}" & Seizure == "{seizure}"')
            discard_large = row.Discard.values[0] in ("Yes", "Large")
            discard_small = row.Discard.values[0] in ("Yes", "Small")
            if discard_large and discard_small:
                continue
            index = queue[0]
            buckets[index].append((f"{subject}_{seizure}_Large", discard_large))
            buckets[index].append((f"{subject}_{seizure}_Small", discard_small))
            queue.rotate(-1)
    return buckets


@pytest.mark.parametrize("k", [10, 2])
def test_seizure_folds_equal_the_original_code(k):
    records, table = gestures_cohort()
    assert len(records) >= 60
    buckets = original_buckets(records, k, 15)
    position = {video: i for i, video in enumerate(table.video)}

    def rows(folds, discarded):
        return sorted(position[video] for fold in folds for video, discard in buckets[fold] if discarded or not discard)

    for evaluate_discarded in (False, True):
        folds = cross_validation_folds(table, k, group_by="seizure", evaluate_discarded=evaluate_discarded)
        assert len(folds) == k
        for fold, (train, val) in enumerate(folds):
            assert train.tolist() == rows(set(range(k)) - {fold}, False)  # the original's SudepDataset skips
            assert val.tolist() == rows([fold], evaluate_discarded)  # discarded views in training and validation
    assert table.discarded[np.concatenate([val for _, val in folds])].sum() == 2  # one view of two seizures


def test_dropped_seizures_and_discarded_views_in_every_protocol():
    records, table = gestures_cohort()
    short = short_seizures(table, 15)
    assert list(short.columns) == ["patient", "seizure", "duration"]
    expected = records[records.Duration < 15].sort_values(["Subject", "Seizure"])
    assert list(zip(short.patient, short.seizure, short.duration, strict=True)) == list(
        zip(expected.Subject, expected.Seizure, expected.Duration, strict=True))
    assert ("2", "10") in set(zip(short.patient, short.seizure, strict=True))  # 14.8 s Large, 15.2 s Small
    assert ("1", "2") not in set(zip(short.patient, short.seizure, strict=True))  # exactly 15 s
    assert short_seizures(table, 0).empty
    is_short = pd.Series(list(zip(table.patient, table.seizure, strict=True))).isin(
        set(zip(short.patient, short.seizure, strict=True))).to_numpy()
    unusable = (table.patient == "10") & (table.seizure == "1")  # both views discarded
    for group_by, minimum in [("seizure", None), ("seizure-duration", None), ("patient", 15.0)]:
        for evaluate_discarded in (False, True):
            folds = cross_validation_folds(table, 4, group_by=group_by, min_seizure_duration=minimum,
                                           evaluate_discarded=evaluate_discarded, seed=2)
            vals = np.concatenate([val for _, val in folds])
            evaluated = ~is_short & ~unusable & (evaluate_discarded | ~table.discarded)
            assert sorted(vals.tolist()) == np.flatnonzero(evaluated).tolist()
            for train, val in folds:
                assert not table.discarded[train].any() and not is_short[train].any() and not unusable[train].any()
                assert not set(train) & set(val)
    patient_folds = cross_validation_folds(table, 4, seed=2)  # by patient, no minimum by default
    assert is_short[np.concatenate([val for _, val in patient_folds])].any()
    everything = cross_validation_folds(table, 4, group_by="seizure", min_seizure_duration=0)
    assert is_short[np.concatenate([val for _, val in everything])].sum() == is_short.sum()


def test_the_tcs_group_falls_back_to_labels_without_onsets():
    table = pd.DataFrame(dict(patient=["1", "1", "2"], seizure=["1", "2", "1"], label=["FOS", "TCS", "TCS"],
                              duration=[20.0, 30.0, 40.0], onset_bilateral=[None, None, 5.0]))

    def fold_values(frame):
        return [val.tolist() for _, val in cross_validation_folds(frame, 2, group_by="seizure")]

    # TCS group by onset, ("2", "1") -> 0, then FOS: ("1", "1") -> 1, ("1", "2") -> 0
    assert fold_values(table) == [[1, 2], [0]]
    # without onsets, by label: ("1", "2") -> 0, ("2", "1") -> 1, then ("1", "1") -> 0
    assert fold_values(table.assign(onset_bilateral=None)) == [[0, 1], [2]]
    assert fold_values(table.drop(columns="onset_bilateral")) == [[0, 1], [2]]


def test_patient_folds_are_stratified_where_chance_is_not():
    # 20 TCS and 30 FOS patients, each with 2 seizures x 2 views: 5 folds of 10 patients can each hold exactly
    # 4 TCS patients (a TCS fraction of 0.4), and one patient more or less moves a fold's fraction by 0.1. A
    # tolerance of 0.05 (half a patient) thus demands the ideal split, which a random assignment rarely is.
    rows = [dict(patient=f"{p:02d}", seizure=f"{s}", view=view, label="TCS" if p < 20 else "FOS", duration=60.0)
            for p in range(50) for s in range(2) for view in ("Large", "Small")]
    table = pd.DataFrame(rows).sample(frac=1, random_state=0).reset_index(drop=True)
    is_tcs = (table.label == "TCS").to_numpy()
    k, tolerance = 5, 0.05

    def stratified(row_folds):
        return all(abs(is_tcs[row_folds == fold].mean() - is_tcs.mean()) < tolerance for fold in range(k))

    for seed in range(3):
        row_folds = np.empty(len(table), dtype=int)
        for fold, (_, val) in enumerate(cross_validation_folds(table, k, seed=seed)):
            row_folds[val] = fold
        assert stratified(row_folds)
    rng = np.random.default_rng(0)
    patients = sorted(set(table.patient))
    random_folds = [{p: i % k for i, p in enumerate(rng.permutation(patients))} for _ in range(200)]
    failures = sum(not stratified(table.patient.map(fold_of).to_numpy()) for fold_of in random_folds)
    assert failures > 180


def test_k_larger_than_the_seizures_left_names_both_numbers():
    table = pd.DataFrame(dict(patient=["1", "1", "2"], seizure=["1", "2", "1"], label=["FOS", "TCS", "TCS"],
                              duration=[10.0, 30.0, 14.0]))
    with pytest.raises(ValueError, match=r"k=2 is larger than the number of seizures \(1, after dropping 2 shorter"):
        cross_validation_folds(table, 2, group_by="seizure")
    with pytest.raises(ValueError, match=r"k=2 is larger than the number of patients \(1, after dropping 2 shorter"):
        cross_validation_folds(table, 2, min_seizure_duration=15)
    assert len(cross_validation_folds(table, 2, group_by="seizure", min_seizure_duration=10)) == 2
