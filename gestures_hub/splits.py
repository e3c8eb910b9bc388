"""Cross-validation folds over a table of videos (one row per camera view of a seizure).

The table has the columns patient, seizure, label ("FOS"/"TCS" or 0/1) and duration (seconds), and
optionally view (e.g. "Large"/"Small"), onset_bilateral (seconds, missing for FOS) and discarded (the view is
unusable, e.g. the patient is out of the camera's field). A seizure is a (patient, seizure) pair.

Every protocol first drops two kinds of seizures, whose rows are then in neither training nor validation:

- seizures shorter than ``min_seizure_duration`` seconds (a seizure of exactly that length is kept; the default
  is 15 s for the seizure-wise protocols, as in the paper's training script, and 0 s, i.e. none, for
  ``"patient"``). A seizure's duration is that of its view that sorts first by ``view`` ("Large" before "Small";
  the first of its rows in table order when there is no view column). The original code took the first view
  folder the filesystem listed. :func:`short_seizures` lists the seizures a minimum drops;
- seizures whose views are all discarded (the original skips them).

The discarded views of the other seizures are never trained on; they are in the validation set of their
seizure's fold only with ``evaluate_discarded=True`` (the thesis: "discarded for training but used for
evaluation"; the original code drops them everywhere, the default here).

- ``group_by="patient"`` (default, the stricter protocol): stratified k-fold grouped by patient
  (``StratifiedGroupKFold`` on the row labels, shuffled with ``seed``). No patient is on both sides.
- ``group_by="seizure"``: the GESTURES code's protocol (``get_buckets`` in its ``training.py``). Seizures
  are split into a TCS group and a FOS group, each taken in ``sorted((patient, seizure))`` order (string
  sort: "10" before "2"; the code's sort by duration is overridden by that), and dealt round-robin into
  folds 0..k-1, TCS first, the FOS deal continuing where the TCS deal stopped. The TCS group is the
  seizures with an ``onset_bilateral`` on any of their rows (the code's "OnsetClonic present") when the table
  has at least one onset, else the seizures labelled TCS. Deterministic (``seed`` is unused).
- ``group_by="seizure-duration"``: the paper text's intent (similar total duration and FOS/TCS ratio across
  folds). The same deal, with the TCS group taken from the labels and each group sorted by duration, longest
  first (ties by patient and seizure id); here a seizure's duration is the longest of its views'.

In the seizure-wise protocols all views of a seizure share its fold; one patient can be on both sides.
"""

from __future__ import annotations

from typing import Literal

import datasets
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from .features import LABEL_NAMES, UNKNOWN_LABEL, encode_label

Fold = tuple[np.ndarray, np.ndarray]
Protocol = Literal["patient", "seizure", "seizure-duration"]
COLUMNS = ("patient", "seizure", "label", "duration")
OPTIONAL_COLUMNS = {"view": "", "onset_bilateral": np.nan, "discarded": False}  # column: value when absent
DEFAULT_MIN_SEIZURE_DURATION: dict[str, float] = {"patient": 0.0, "seizure": 15.0, "seizure-duration": 15.0}
KEYS = ["patient", "seizure"]
TCS = LABEL_NAMES.index("TCS")


def cross_validation_folds(
    table: pd.DataFrame | datasets.Dataset,
    k: int,
    *,
    group_by: Protocol = "patient",
    seed: int = 0,
    min_seizure_duration: float | None = None,
    evaluate_discarded: bool = False,
) -> list[Fold]:
    """``k`` (train, validation) pairs of sorted row positions into ``table`` (see the module docstring).

    ``min_seizure_duration``: None for the protocol's default (15 s seizure-wise, 0 s by patient).
    """
    if group_by not in DEFAULT_MIN_SEIZURE_DURATION:
        raise ValueError(f"group_by must be one of {list(DEFAULT_MIN_SEIZURE_DURATION)}, got {group_by!r}")
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    frame = _read_table(table)
    minimum = DEFAULT_MIN_SEIZURE_DURATION[group_by] if min_seizure_duration is None else min_seizure_duration
    keys = pd.MultiIndex.from_frame(frame[KEYS])
    short = pd.MultiIndex.from_frame(_short_seizures(frame, minimum)[KEYS])
    unusable = frame.groupby(KEYS)["discarded"].all()
    unusable = unusable.index[unusable].difference(short)
    kept = ~keys.isin(short.union(unusable))
    dropped = f"after dropping {len(short)} shorter than {minimum:g} s and {len(unusable)} with every view discarded"
    if group_by == "patient":
        folds_of_kept = _patient_folds(frame[kept], k, seed, dropped)
    else:
        folds_of_kept = _seizure_folds(frame[kept], k, group_by == "seizure", dropped)
    row_folds = np.full(len(frame), -1)
    row_folds[kept] = folds_of_kept
    trainable = kept & ~frame["discarded"].to_numpy()
    evaluated = trainable | (kept & evaluate_discarded)
    positions = np.arange(len(frame))
    folds = [(positions[trainable & (row_folds != fold)], positions[evaluated & (row_folds == fold)])
             for fold in range(k)]
    empty = [number for number, (_, val) in enumerate(folds) if len(val) == 0]
    if empty:
        raise ValueError(f"Folds {empty} got no validation rows; use a smaller k")
    return folds


def short_seizures(table: pd.DataFrame | datasets.Dataset, min_seizure_duration: float) -> pd.DataFrame:
    """The seizures (columns patient, seizure, duration) shorter than ``min_seizure_duration`` seconds, which
    :func:`cross_validation_folds` drops; a seizure's duration is that of its view that sorts first."""
    return _short_seizures(_read_table(table), min_seizure_duration)


def _short_seizures(frame: pd.DataFrame, minimum: float) -> pd.DataFrame:
    first_views = frame.sort_values("view", kind="stable").drop_duplicates(KEYS).sort_values(KEYS)
    if minimum > 0 and first_views["duration"].isna().any():
        missing = list(first_views.loc[first_views["duration"].isna(), KEYS].itertuples(index=False, name=None))
        raise ValueError(f"A minimum seizure duration needs every seizure's duration; missing for {missing[:10]}")
    return first_views.loc[first_views["duration"] < minimum, [*KEYS, "duration"]].reset_index(drop=True)


def _read_table(table: pd.DataFrame | datasets.Dataset) -> pd.DataFrame:
    names = table.column_names if isinstance(table, datasets.Dataset) else table.columns
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise ValueError(f"The table lacks the column(s) {missing}; it needs {list(COLUMNS)}")
    columns = [*COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in names)]
    if isinstance(table, datasets.Dataset):
        table = table.select_columns(columns).to_pandas()
    frame = table.loc[:, columns].reset_index(drop=True)
    if len(frame) == 0:
        raise ValueError("The table has no rows")
    frame["label"] = [encode_label(label) for label in frame["label"]]
    unlabelled = frame.index[frame["label"] == UNKNOWN_LABEL].tolist()
    if unlabelled:
        raise ValueError(f"Rows {unlabelled[:10]} have no label; cross-validation needs FOS or TCS on every row")
    frame = frame.assign(**{c: value for c, value in OPTIONAL_COLUMNS.items() if c not in columns})
    for column in ("patient", "seizure", "view"):
        frame[column] = frame[column].fillna("").astype(str)
    frame["onset_bilateral"] = frame["onset_bilateral"].astype(float)
    frame["discarded"] = frame["discarded"].fillna(False).astype(bool)
    conflicting = frame.groupby(KEYS)["label"].nunique()
    conflicting = conflicting[conflicting > 1].index.tolist()
    if conflicting:
        raise ValueError(f"Seizures labelled both FOS and TCS on different rows (patient, seizure): {conflicting}")
    return frame


def _patient_folds(frame: pd.DataFrame, k: int, seed: int, dropped: str) -> np.ndarray:
    """The fold of each row."""
    num_patients = frame["patient"].nunique()
    if k > num_patients:
        raise ValueError(f"k={k} is larger than the number of patients ({num_patients}, {dropped})")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    row_folds = np.empty(len(frame), dtype=int)
    for fold, (_, val) in enumerate(splitter.split(frame, frame["label"], frame["patient"])):
        row_folds[val] = fold
    return row_folds


def _seizure_folds(frame: pd.DataFrame, k: int, by_id: bool, dropped: str) -> np.ndarray:
    """The fold of each row: seizures dealt round-robin, TCS group first, by id or by duration within a group."""
    grouped = frame.groupby(KEYS)
    if k > grouped.ngroups:
        raise ValueError(f"k={k} is larger than the number of seizures ({grouped.ngroups}, {dropped})")
    if by_id:
        has_onset = frame["onset_bilateral"].notna()
        tcs = (has_onset if has_onset.any() else frame["label"] == TCS).groupby([frame[key] for key in KEYS]).any()
        order = sorted(tcs.index, key=lambda key: (not tcs[key], key))
    else:
        if frame["duration"].isna().any():
            raise ValueError("Seizure-wise folds by duration need a duration on every row")
        durations = grouped["duration"].max()
        labels = grouped["label"].first()
        order = sorted(durations.index, key=lambda key: (labels[key] != TCS, -durations[key], key))
    fold_of = {key: position % k for position, key in enumerate(order)}
    return np.array([fold_of[key] for key in zip(frame["patient"], frame["seizure"], strict=True)])
