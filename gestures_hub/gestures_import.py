"""``gestures import-gestures-features``: convert the published GESTURES features to a features dataset.

Input layout (UCL Research Data Repository, doi 10.5522/04/14781771, unzipped into ROOT)::

    ROOT/seizures.csv                          Subject, Seizure, OnsetClonic, Discard[, RatioGTCS]
    ROOT/features_fpc_8_fps_15/<Subject>_<Seizure>_<L|S>/*.pth

Each ``.pth`` holds one 512-value tensor: the R(2+1)D-34 features of the 8-frame snippet that
starts at that frame (15 fps, stride 1); file-name order is time order. Files are read with
``torch.load(weights_only=True)`` only, so a pickle that would run code is rejected.

Each camera view becomes one row (``video`` = the folder name, ``view`` = "Large"/"Small").
A seizure is TCS when ``OnsetClonic`` is filled, FOS otherwise. ``Discard`` drops views
("Yes" both, "Large" or "Small" one). ``onset_bilateral`` is ``OnsetClonic`` when it is a number
of seconds, else ``RatioGTCS`` x duration when that is a number, else empty. The duration is
the time the snippets cover: ``(n_snippets - 1 + frames_per_snippet) / 15``.
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
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
DISCARDED_VIEWS = {"": set(), "yes": {"L", "S"}, "large": {"L"}, "small": {"S"}}
REQUIRED_COLUMNS = ("Subject", "Seizure", "OnsetClonic", "Discard")


@dataclass
class ImportReport:
    """What an import did, by video id."""

    imported: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def read_seizure_table(root: str | Path) -> pd.DataFrame:
    """``ROOT/seizures.csv`` as strings (leading zeros kept, empty cells as "")."""
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
    ratio = _seconds(getattr(record, "RatioGTCS", ""))
    if onset is None and record.OnsetClonic and ratio is not None:
        onset = ratio * duration
    return {
        "video": view_dir.name,
        "patient": record.Subject,
        "seizure": record.Seizure,
        "view": VIEWS[code],
        "label": "TCS" if record.OnsetClonic else "FOS",
        "duration": duration,
        "onset_bilateral": onset if record.OnsetClonic else None,
        "start_times": np.arange(num_snippets) / FPS,
        "features": features,
    }


def _discarded_views(record: Any) -> set[str]:
    try:
        return DISCARDED_VIEWS[record.Discard.lower()]
    except KeyError:
        raise ValueError(
            f"Seizure {record.Subject}_{record.Seizure}: Discard must be Yes, Large, Small or empty, "
            f"got {record.Discard!r}"
        ) from None


def import_gestures_features(
    root: str | Path,
    out_dir: str | Path,
    *,
    frames_per_snippet: int = 8,
    videos_per_shard: int = 8,
    progress: bool = True,
) -> ImportReport:
    """Convert ``root`` into the features dataset ``out_dir``; resumes an interrupted import."""
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
            if code in _discarded_views(record):
                report.discarded.append(video)
            elif video in writer.done:
                report.already_present.append(video)
            elif not any(view_dir.glob("*.pth")):
                report.missing.append(video)
            else:
                writer.add(_view_row(record, code, view_dir, frames_per_snippet))
                report.imported.append(video)
    return report


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``import-gestures-features`` command."""
    parser = subparsers.add_parser(
        "import-gestures-features",
        help="convert the published GESTURES features (doi 10.5522/04/14781771) to a features dataset",
        description=(
            "Convert the published GESTURES features dataset (seizures.csv and "
            "features_fpc_<T>_fps_15/<Subject>_<Seizure>_<L|S>/*.pth) into a gestures-hub features "
            "dataset: Parquet shards that datasets.load_dataset(OUT) opens, one row per camera view, "
            "labels from OnsetClonic (filled = TCS), views marked in Discard dropped. Re-running "
            "resumes: views already in OUT are skipped. .pth files are loaded with "
            "torch.load(weights_only=True) only."
        ),
    )
    parser.add_argument(
        "root", type=Path, metavar="ROOT", help="folder holding seizures.csv and features_fpc_*"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output dataset folder")
    parser.add_argument(
        "--frames-per-snippet",
        type=int,
        default=8,
        metavar="T",
        help="snippet length of the features to import, picks features_fpc_<T>_fps_15 (default: 8)",
    )
    parser.add_argument(
        "--videos-per-shard", type=int, default=8, metavar="N", help="views per Parquet shard (default: 8)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the import; print a summary. Returns 0, or 1 on an input error."""
    try:
        report = import_gestures_features(
            args.root,
            args.out,
            frames_per_snippet=args.frames_per_snippet,
            videos_per_shard=args.videos_per_shard,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"gestures import-gestures-features: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"Imported {len(report.imported)} view(s) into {args.out} "
        f"({len(report.already_present)} already there, {len(report.discarded)} discarded)"
    )
    if report.missing:
        print(f"No features found for {len(report.missing)} view(s): {report.missing}", file=sys.stderr)
    return 0
