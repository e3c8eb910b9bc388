"""``gestures import-gestures-features``: convert the published GESTURES features to a features dataset.

Input layout (UCL Research Data Repository, doi 10.5522/04/14781771, unzipped into ROOT)::

    ROOT/seizures.csv                          Subject, Seizure, Discard, RatioGTCS or GTCS[, OnsetClonic]
    ROOT/features_fpc_8_fps_15/<Subject>_<Seizure>_<L|S>/*.pth

Each ``.pth`` holds one 512-value tensor: the R(2+1)D-34 features of the 8-frame snippet that
starts at that frame (15 fps, stride 1); file-name order is time order. Files are read with
``torch.load(weights_only=True)`` only, so a pickle that would run code is rejected.

Each camera view becomes one row (``video`` = the folder name, ``view`` = "Large"/"Small"). CSV cells are read as
strings with surrounding spaces removed.

- Label: as the original's training (``DatasetTable.is_gtcs``), a seizure is TCS when ``RatioGTCS`` is filled, FOS
  otherwise. A CSV without ``RatioGTCS`` may give a boolean ``GTCS`` column instead (True/False, 1/0, yes/no, any
  case); when both are there, ``RatioGTCS`` wins and ``GTCS`` is ignored. Seizures whose label disagrees with
  ``OnsetClonic`` (TCS without it, or filled for a FOS seizure) are named in a warning; the label stands.
- ``onset_bilateral`` (TCS only, else empty): ``OnsetClonic`` when it is a number of seconds, else
  ``RatioGTCS`` x duration when that is a number (the original's ``get_gtcs_time``), else empty. ``OnsetClonic`` is
  optional. The duration is the time the snippets cover: ``(n_snippets - 1 + frames_per_snippet) / 15``.
- ``Discard`` is matched exactly as the original does: "Yes" drops both views, "Large" or "Small" one, empty none.
  Any other value (e.g. "yes", "both", "L") is named in a warning and drops nothing. Dropped views are left out,
  as the original does everywhere; ``include_discarded`` imports them with ``discarded=True`` instead, so that
  cross-validation can evaluate on them without training on them (the paper's text).
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .features import FeatureSettings, FeatureShardWriter

FPS = 15
FEATURE_DIM = 512
IMAGE_SIZE = 112
ENCODER = "r2plus1d_34"
VIEWS = {"L": "Large", "S": "Small"}
DISCARDED_VIEWS = {"": frozenset(), "Yes": frozenset("LS"), "Large": frozenset("L"), "Small": frozenset("S")}
REQUIRED_COLUMNS = ("Subject", "Seizure", "Discard")
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass
class ImportReport:
    """What an import did, by video id. ``discarded`` lists the views marked in ``Discard``: left out, or also in
    ``imported``/``already_present`` (flagged ``discarded=True``) with ``include_discarded``."""

    imported: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _names(table: pd.DataFrame) -> list[str]:
    return (table.Subject + "_" + table.Seizure).tolist()


def _values(table: pd.DataFrame, column: str) -> dict[str, str]:
    """``column`` of each seizure of ``table``, by seizure name."""
    return dict(zip(_names(table), table[column], strict=True))


def _tcs(table: pd.DataFrame, path: Path) -> tuple[str, pd.Series]:
    """The label column (RatioGTCS, else GTCS) and whether it makes each seizure TCS."""
    if "RatioGTCS" in table.columns:
        return "RatioGTCS", table.RatioGTCS != ""
    if "GTCS" not in table.columns:
        raise ValueError(
            f"{path}: no column gives the TCS label; found the columns {list(table.columns)}, accepted: "
            "RatioGTCS (filled = TCS) or GTCS (True/False, 1/0, yes/no)"
        )
    values = table.GTCS.str.lower()
    unknown = ~values.isin(list(BOOLEANS))
    if unknown.any():
        raise ValueError(f"{path}: GTCS must be True/False, 1/0 or yes/no, got {_values(table[unknown], 'GTCS')}")
    return "GTCS", values.map(BOOLEANS).astype(bool)


def read_seizure_table(root: str | Path) -> pd.DataFrame:
    """``ROOT/seizures.csv`` as strings (leading zeros kept, empty cells as ""), with ``OnsetClonic`` and
    ``RatioGTCS`` ("" where absent), and two added columns: ``is_tcs`` (bool) and ``discarded_views`` (frozenset of
    "L"/"S"). Warns about label/``OnsetClonic`` disagreements and unknown ``Discard`` values (module docstring)."""
    path = Path(root) / "seizures.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: ROOT must be the unzipped GESTURES features dataset")
    table = pd.read_csv(path, dtype=str).fillna("")
    table = table.apply(lambda column: column.str.strip())
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}")
    repeated = table.loc[table.duplicated(["Subject", "Seizure"]), ["Subject", "Seizure"]]
    if len(repeated):
        raise ValueError(f"{path} lists some seizures twice: {repeated.agg('_'.join, axis=1).tolist()}")
    label_column, table["is_tcs"] = _tcs(table, path)
    if "OnsetClonic" in table.columns:
        onset = table.OnsetClonic != ""
        if (onset != table.is_tcs).any():
            warnings.warn(
                f"{path}: {label_column} and OnsetClonic disagree, labels follow {label_column}: "
                f"TCS without OnsetClonic {_names(table[table.is_tcs & ~onset])}, "
                f"FOS with OnsetClonic {_names(table[~table.is_tcs & onset])}",
                stacklevel=2,
            )
    table = table.assign(**{c: table.get(c, "") for c in ("OnsetClonic", "RatioGTCS")})
    unknown = ~table.Discard.isin(list(DISCARDED_VIEWS))
    if unknown.any():
        warnings.warn(
            f"{path}: Discard values other than Yes, Large, Small or empty, treated as not discarded: "
            f"{_values(table[unknown], 'Discard')}",
            stacklevel=2,
        )
    table["discarded_views"] = table.Discard.map(lambda value: DISCARDED_VIEWS.get(value, frozenset()))
    return table


def load_snippet_vector(path: Path) -> np.ndarray:
    """One feature vector from a ``.pth`` file, loaded with ``weights_only=True`` only."""
    try:
        tensor = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(
            f"{path}: refused, not a plain tensor file (torch.load with weights_only=True failed: {exc})"
        ) from None
    if not isinstance(tensor, torch.Tensor) or tensor.numel() != FEATURE_DIM:
        described = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"{path}: expected a tensor of {FEATURE_DIM} values, got {described}")
    return tensor.detach().reshape(-1).to(torch.float32).numpy()


def _time_order(paths: list[Path]) -> list[Path]:
    """File-name order; numeric names compare as numbers (equal to name order when zero-padded)."""
    if all(p.stem.isdigit() for p in paths):
        return sorted(paths, key=lambda p: int(p.stem))
    return sorted(paths)


def load_view(view_dir: Path) -> np.ndarray:
    """All snippet vectors of one view folder, (n_snippets, 512) in time order."""
    paths = _time_order(list(view_dir.glob("*.pth")))
    return np.stack([load_snippet_vector(p) for p in paths])


def _seconds(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _view_row(record: Any, code: str, view_dir: Path, frames_per_snippet: int) -> dict[str, Any]:
    features = load_view(view_dir)
    num_snippets = len(features)
    duration = (num_snippets - 1 + frames_per_snippet) / FPS
    onset = _seconds(record.OnsetClonic)
    ratio = _seconds(record.RatioGTCS)
    if onset is None and ratio is not None:
        onset = ratio * duration
    return {
        "video": view_dir.name,
        "patient": record.Subject,
        "seizure": record.Seizure,
        "view": VIEWS[code],
        "label": "TCS" if record.is_tcs else "FOS",
        "duration": duration,
        "onset_bilateral": onset if record.is_tcs else None,
        "discarded": code in record.discarded_views,
        "start_times": np.arange(num_snippets) / FPS,
        "features": features,
    }


def import_gestures_features(
    root: str | Path,
    out_dir: str | Path,
    *,
    frames_per_snippet: int = 8,
    videos_per_shard: int = 8,
    include_discarded: bool = False,
    progress: bool = True,
) -> ImportReport:
    """Convert ``root`` into the features dataset ``out_dir``; resumes an interrupted import.

    Views marked in ``Discard`` are left out, or with ``include_discarded`` imported with ``discarded=True``.
    """
    root = Path(root)
    features_dir = root / f"features_fpc_{frames_per_snippet}_fps_{FPS}"
    if not features_dir.is_dir():
        raise FileNotFoundError(f"{features_dir} not found")
    table = read_seizure_table(root)
    settings = FeatureSettings(
        encoder=ENCODER,
        fps=float(FPS),
        frames_per_snippet=frames_per_snippet,
        stride=1,
        feature_dim=FEATURE_DIM,
        image_size=IMAGE_SIZE,
        model="GESTURES published features (R(2+1)D-34 IG-65M + Kinetics; doi:10.5522/04/14781771)",
        geometry="crop_and_pad",  # the original pipeline's (thesis, Experiments)
    )
    report = ImportReport()
    views = [
        (record, code, f"{record.Subject}_{record.Seizure}_{code}")
        for record in table.itertuples(index=False)
        for code in VIEWS
    ]
    with FeatureShardWriter(out_dir, settings, videos_per_shard=videos_per_shard) as writer:
        for record, code, video in tqdm(views, desc="Importing views", unit="view", disable=not progress):
            view_dir = features_dir / video
            if code in record.discarded_views:
                report.discarded.append(video)
                if not include_discarded:
                    continue
            if video in writer.done:
                report.already_present.append(video)
            elif not any(view_dir.glob("*.pth")):
                report.missing.append(video)
            else:
                writer.add(_view_row(record, code, view_dir, frames_per_snippet))
                report.imported.append(video)
    return report


def run(args: argparse.Namespace) -> int:
    """Run the import; print warnings and a summary. Returns 0, or 1 on an input error."""
    prog = "gestures import-gestures-features"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *_: print(f"{prog}: warning: {message}", file=sys.stderr)
        try:
            report = import_gestures_features(
                args.root,
                args.out,
                frames_per_snippet=args.frames_per_snippet,
                videos_per_shard=args.videos_per_shard,
                include_discarded=args.include_discarded,
            )
        except (FileNotFoundError, ValueError) as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 1
    fate = "imported with discarded=True" if args.include_discarded else "left out"
    print(
        f"Imported {len(report.imported)} view(s) into {args.out} "
        f"({len(report.already_present)} already there; {len(report.discarded)} marked in Discard, {fate})"
    )
    if report.missing:
        print(f"No features found for {len(report.missing)} view(s): {report.missing}", file=sys.stderr)
    return 0
