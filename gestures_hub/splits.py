"""Cross-validation folds over a table of videos (one row per camera view of a seizure).

- ``group_by="patient"`` (default, the stricter protocol): stratified k-fold grouped by patient
  (``StratifiedGroupKFold``, shuffled with ``seed``). No patient is on both sides, so all views
  and seizures of a patient stay together.
- ``group_by="seizure"``: the GESTURES paper's protocol. Seizures (identified by patient and
  seizure id) are sorted by duration, longest first, and dealt round-robin into the folds, TCS
  seizures first, then FOS, the deal continuing where the TCS ones stopped. All views of a seizure
  share its fold; one patient can be on both sides. Deterministic (``seed`` is unused). A
  seizure's duration is the longest of its views'.
"""

from __future__ import annotations

from typing import Literal

import datasets
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from .features import LABEL_NAMES, UNKNOWN_LABEL, encode_label

Fold = tuple[np.ndarray, np.ndarray]
COLUMNS = ("patient", "seizure", "label", "duration")


def cross_validation_folds(
    table: pd.DataFrame | datasets.Dataset,
    k: int,
    *,
    group_by: Literal["patient", "seizure"] = "patient",
    seed: int = 0,
) -> list[Fold]:
    """``k`` (train, validation) pairs of sorted row positions into ``table``.

    ``table`` needs the columns patient, seizure, label ("FOS"/"TCS" or 0/1) and duration
    (seconds; used by ``group_by="seizure"``).
    """
    frame = _read_table(table)
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    seizure_labels = _seizure_labels(frame)
    if group_by == "patient":
        folds = _patient_folds(frame, k, seed)
    elif group_by == "seizure":
        folds = _seizure_folds(frame, seizure_labels, k)
    else:
        raise ValueError(f"group_by must be 'patient' or 'seizure', got {group_by!r}")
    empty = [number for number, (_, val) in enumerate(folds) if len(val) == 0]
    if empty:
        raise ValueError(f"Folds {empty} got no validation rows; use a smaller k")
    return folds


def _read_table(table: pd.DataFrame | datasets.Dataset) -> pd.DataFrame:
    names = table.column_names if isinstance(table, datasets.Dataset) else table.columns
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise ValueError(f"The table lacks the column(s) {missing}; it needs {list(COLUMNS)}")
    if isinstance(table, datasets.Dataset):
        table = table.select_columns(list(COLUMNS)).to_pandas()
    frame = table.loc[:, list(COLUMNS)].reset_index(drop=True)
    if len(frame) == 0:
        raise ValueError("The table has no rows")
    frame["label"] = [encode_label(label) for label in frame["label"]]
    unlabelled = frame.index[frame["label"] == UNKNOWN_LABEL].tolist()
    if unlabelled:
        raise ValueError(
            f"Rows {unlabelled[:10]} have no label; cross-validation needs FOS or TCS on every row"
        )
    frame["patient"] = frame["patient"].astype(str)
    frame["seizure"] = frame["seizure"].astype(str)
    return frame


def _seizure_labels(frame: pd.DataFrame) -> pd.Series:
    """Label of each (patient, seizure); error if the views of a seizure disagree."""
    labels = frame.groupby(["patient", "seizure"], sort=True)["label"]
    conflicting = labels.nunique()
    conflicting = conflicting[conflicting > 1].index.tolist()
    if conflicting:
        raise ValueError(
            f"Seizures labelled both FOS and TCS on different rows (patient, seizure): {conflicting}"
        )
    return labels.first()


def _patient_folds(frame: pd.DataFrame, k: int, seed: int) -> list[Fold]:
    num_patients = frame["patient"].nunique()
    if k > num_patients:
        raise ValueError(f"k={k} is larger than the number of patients ({num_patients})")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    splits = splitter.split(np.zeros(len(frame)), frame["label"].to_numpy(), frame["patient"].to_numpy())
    return [(np.sort(train), np.sort(val)) for train, val in splits]


def _seizure_folds(frame: pd.DataFrame, seizure_labels: pd.Series, k: int) -> list[Fold]:
    if k > len(seizure_labels):
        raise ValueError(f"k={k} is larger than the number of seizures ({len(seizure_labels)})")
    seizures = pd.DataFrame(
        {
            "label": seizure_labels,
            "duration": frame.groupby(["patient", "seizure"], sort=True)["duration"].max(),
        }
    ).reset_index()
    if seizures["duration"].isna().any():
        raise ValueError("Seizure-wise folds need a duration on every row")
    tcs = LABEL_NAMES.index("TCS")
    seizures["tcs_first"] = (seizures["label"] != tcs).astype(int)
    order = seizures.sort_values(
        ["tcs_first", "duration", "patient", "seizure"], ascending=[True, False, True, True], kind="stable"
    )
    fold_of = {
        (patient, seizure): position % k
        for position, (patient, seizure) in enumerate(zip(order["patient"], order["seizure"], strict=True))
    }
    row_folds = np.array([fold_of[key] for key in zip(frame["patient"], frame["seizure"], strict=True)])
    positions = np.arange(len(frame))
    return [(positions[row_folds != fold], positions[row_folds == fold]) for fold in range(k)]
