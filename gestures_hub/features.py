"""Per-video snippet-feature datasets: schema, extraction settings, Parquet shards.

A features dataset is a folder that ``datasets.load_dataset(DIR)`` opens::

    DIR/gestures_features.json     extraction settings (encoder, fps, frames_per_snippet, ...)
    DIR/data/train-00000.parquet   shards, one row per video, written atomically
    DIR/data/train-00001.parquet   ...

Every row is one video (one camera view of one seizure). ``label`` is a ``ClassLabel``
(0 = FOS, 1 = TCS) with -1 for unknown, the Hugging Face convention for unlabelled rows.
All shards belong to the ``train`` split: cross-validation folds are made afterwards
(see :mod:`gestures_hub.splits`). The settings are also stored in every shard's Parquet
schema metadata (key ``gestures_features``) and, once loaded with :func:`load_features`,
in ``Dataset.info.description`` as JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__

SETTINGS_FILENAME = "gestures_features.json"
DATA_DIRNAME = "data"
SHARD_PREFIX = "train-"
METADATA_KEY = b"gestures_features"
LABEL_NAMES = ("FOS", "TCS")
UNKNOWN_LABEL = -1


@dataclass(frozen=True)
class FeatureSettings:
    """How the snippet features of a dataset were extracted.

    Snippet ``i`` covers frames ``[i * stride, i * stride + frames_per_snippet)`` of the video
    resampled to ``fps``.
    """

    encoder: str
    fps: float
    frames_per_snippet: int
    stride: int
    feature_dim: int
    image_size: int
    model: str = ""
    """The model the encoder came from (preset, folder or hub id)."""
    pretrained: bool = True
    """False when the encoder had random weights (only useful for tests)."""
    synthetic: bool = False
    """True when the videos are the package's synthetic cohort."""
    geometry: str = "center_crop"
    """How frames became ``image_size`` squares (``GesturesConfig.frame_geometry``): ``"crop_and_pad"`` (the paper's)
    or ``"center_crop"``; datasets written before the setting existed are centre crops."""
    package_version: str = field(default=__version__)

    def __post_init__(self) -> None:
        for name in ("frames_per_snippet", "stride", "feature_dim", "image_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"FeatureSettings.{name} must be a positive integer, got {value!r}")
        if not self.fps > 0:
            raise ValueError(f"FeatureSettings.fps must be positive, got {self.fps!r}")
        if not self.encoder:
            raise ValueError("FeatureSettings.encoder must be a non-empty string")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSettings:
        """Build from a dict, ignoring unknown keys (written by newer versions)."""
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = required - set(data)
        if missing:
            raise ValueError(f"Feature settings lack {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def same_extraction(self, other: FeatureSettings) -> bool:
        """Whether both describe the same extraction (the package version may differ)."""
        a, b = self.to_dict(), other.to_dict()
        a.pop("package_version")
        b.pop("package_version")
        return a == b


def feature_schema(feature_dim: int) -> datasets.Features:
    """The ``datasets`` schema of a features dataset whose vectors have ``feature_dim`` values."""
    return datasets.Features(
        {
            "video": datasets.Value("string"),
            "patient": datasets.Value("string"),
            "seizure": datasets.Value("string"),
            "view": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(LABEL_NAMES)),
            "duration": datasets.Value("float32"),
            "onset_bilateral": datasets.Value("float32"),
            "discarded": datasets.Value("bool"),
            "damage": datasets.List(datasets.Value("string")),
            "num_snippets": datasets.Value("int32"),
            "start_times": datasets.List(datasets.Value("float32")),
            "features": datasets.Array2D(shape=(None, feature_dim), dtype="float32"),
        }
    )


def encode_label(label: str | int | None) -> int:
    """``"FOS"`` -> 0, ``"TCS"`` -> 1, ``""``/``None``/-1 -> -1 (unknown); ints 0/1 pass through."""
    if label is None or label == "":
        return UNKNOWN_LABEL
    if isinstance(label, str):
        if label not in LABEL_NAMES:
            raise ValueError(f"label must be one of {LABEL_NAMES} or empty, got {label!r}")
        return LABEL_NAMES.index(label)
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and -1 <= label <= 1:
        return int(label)
    raise ValueError(f"label must be one of {LABEL_NAMES}, empty, or -1/0/1, got {label!r}")


def _as_float(value: Any) -> float | None:
    """``value`` as a finite float, or None if it is not one."""
    if isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def validate_row(row: Mapping[str, Any], feature_dim: int) -> dict[str, Any]:
    """Check one video row and return it normalised to the schema; errors name the video."""
    video = row.get("video")
    if not isinstance(video, str) or not video:
        raise ValueError(f"Row without a video id: 'video' must be a non-empty string, got {video!r}")

    def fail(message: str) -> ValueError:
        return ValueError(f"Video {video!r}: {message}")

    feats = np.asarray(row.get("features"), dtype=np.float32)
    if feats.ndim != 2 or feats.shape[0] < 1 or feats.shape[1] != feature_dim:
        raise fail(f"features must have shape (n_snippets >= 1, {feature_dim}), got {feats.shape}")
    if not np.isfinite(feats).all():
        raise fail("features contain NaN or infinite values")
    starts = np.asarray(row.get("start_times"), dtype=np.float32)
    if starts.shape != (feats.shape[0],):
        raise fail(
            f"start_times must have one value per snippet ({feats.shape[0]}), got shape {starts.shape}"
        )
    if not np.isfinite(starts).all() or (np.diff(starts) <= 0).any():
        raise fail("start_times must be finite and strictly increasing")
    if row.get("num_snippets", feats.shape[0]) != feats.shape[0]:
        raise fail(f"num_snippets={row['num_snippets']} but features have {feats.shape[0]} rows")
    try:
        label = encode_label(row.get("label"))
    except ValueError as exc:
        raise fail(str(exc)) from None
    duration = _as_float(row.get("duration"))
    if duration is None or not duration > 0:
        raise fail(f"duration must be a positive number of seconds, got {row.get('duration')!r}")
    onset = row.get("onset_bilateral")
    if onset is not None and _as_float(onset) is None:
        raise fail(f"onset_bilateral must be a finite number or None, got {onset!r}")
    damage = list(row.get("damage") or [])
    if not all(isinstance(problem, str) for problem in damage):
        raise fail(f"damage must be a list of strings (what decoding found wrong), got {row.get('damage')!r}")
    discarded = row.get("discarded", False)
    if not isinstance(discarded, (bool, np.bool_)):
        raise fail(f"discarded must be true or false, got {discarded!r}")
    strings = {}
    for key in ("patient", "seizure", "view"):
        value = row.get(key, "")
        if not isinstance(value, str):
            raise fail(f"{key} must be a string, got {value!r}")
        strings[key] = value
    return {
        "video": video,
        **strings,
        "label": label,
        "duration": duration,
        "onset_bilateral": None if onset is None else float(onset),
        "discarded": bool(discarded),
        "damage": damage,
        "num_snippets": int(feats.shape[0]),
        "start_times": starts,
        "features": feats,
    }


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a hidden temporary file next to ``path``, then rename it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates files readable by the owner only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (:func:`atomic_write`): a kill mid-write leaves the old file or
    none, never half of one. Every JSON state file of the package goes through here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda file: file.write((json.dumps(data, indent=indent) + "\n").encode()))
    return path


def read_json_state(path: str | Path, what: str) -> Any:
    """The JSON of a state file that ``--resume`` relies on; a damaged one is an error that names it and the way out."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} ({what}) is damaged, e.g. half-written by an older version that was killed "
                         f"({error}). Delete it to redo that part, or restore it from a copy.") from None


def write_settings(out_dir: str | Path, settings: FeatureSettings) -> Path:
    """Write the settings sidecar; refuse if the folder holds features extracted differently."""
    path = Path(out_dir) / SETTINGS_FILENAME
    if path.exists() or shard_paths(out_dir):
        existing = FeatureSettings.from_dict(read_settings(out_dir))
        if not existing.same_extraction(settings):
            raise ValueError(
                f"{out_dir} holds features extracted with {existing.to_dict()}; "
                f"cannot add features extracted with {settings.to_dict()}"
            )
        if path.exists():
            return path
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(settings.to_dict(), indent=2) + "\n"
    atomic_write(path, lambda file: file.write(text.encode()))
    return path


def read_settings(path: str | Path) -> dict[str, Any]:
    """Extraction settings of a local features folder: the sidecar, else a shard's metadata."""
    sidecar = Path(path) / SETTINGS_FILENAME
    if sidecar.is_file():
        return json.loads(sidecar.read_text())
    for shard in shard_paths(path):
        metadata = pq.read_schema(shard).metadata or {}
        if METADATA_KEY in metadata:
            return json.loads(metadata[METADATA_KEY])
    raise FileNotFoundError(f"{path} has no {SETTINGS_FILENAME} and no shard with settings metadata")


def shard_paths(out_dir: str | Path) -> list[Path]:
    """The finished shards of a features folder, in order."""
    return sorted((Path(out_dir) / DATA_DIRNAME).glob(f"{SHARD_PREFIX}[0-9]*.parquet"))


def shard_path(out_dir: str | Path, shard_index: int) -> Path:
    return Path(out_dir) / DATA_DIRNAME / f"{SHARD_PREFIX}{shard_index:05d}.parquet"


def _shard_index(stem: str) -> int:
    return int(stem.removeprefix(SHARD_PREFIX))


def completed_videos(out_dir: str | Path) -> set[str]:
    """Ids of the videos that already have a row (reads only the ``video`` column)."""
    done: set[str] = set()
    for shard in shard_paths(out_dir):
        done.update(pq.read_table(shard, columns=["video"]).column("video").to_pylist())
    return done


DAMAGED_SUFFIX = ".damaged"


def _checksum_path(shard: Path) -> Path:
    """The hidden file holding the SHA-256 of ``shard``, written with it (``load_dataset`` skips hidden files)."""
    return shard.with_name(f".{shard.name}.sha256")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shard_problem(shard: Path, *, full: bool = True) -> str | None:
    """Why ``shard`` is damaged: its bytes differ from the SHA-256 written with it (shards of older versions have
    none) or, if ``full``, it cannot be read in full (settings metadata parsed); None if it is fine."""
    checksum = _checksum_path(shard)
    if checksum.is_file() and checksum.read_text().strip() != _sha256(shard):
        return f"its bytes differ from the SHA-256 written with it in {checksum.name}"
    if not full:
        return None
    try:
        table = pq.read_table(shard)
        json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
    except (OSError, ValueError, pa.ArrowException) as error:
        return str(error) or type(error).__name__
    return None


def set_aside_damaged_shards(out_dir: str | Path) -> dict[str, str]:
    """Read every shard in full and rename each unreadable one to the hidden ``.NAME.damaged`` (kept, but skipped by
    ``load_dataset`` and :func:`completed_videos`, so its videos are extracted again). Returns {shard name: problem}."""
    damaged: dict[str, str] = {}
    for shard in shard_paths(out_dir):
        problem = shard_problem(shard)
        if problem is None:
            continue
        target, number = shard.with_name(f".{shard.name}{DAMAGED_SUFFIX}"), 1
        while target.exists():
            target, number = shard.with_name(f".{shard.name}{DAMAGED_SUFFIX}{number}"), number + 1
        shard.rename(target)
        _checksum_path(shard).unlink(missing_ok=True)
        damaged[shard.name] = f"{problem} (moved aside to {target.name}; its videos are extracted again)"
    return damaged


def _shard_table(rows: list[dict[str, Any]], settings: FeatureSettings) -> pa.Table:
    schema = feature_schema(settings.feature_dim)
    columns = {name: [row[name] for row in rows] for name in schema}
    table = datasets.Dataset.from_dict(columns, features=schema).data.table
    settings_json = json.dumps(settings.to_dict())
    info = {"info": {"features": schema.to_dict(), "description": settings_json}}
    return table.replace_schema_metadata(
        {b"huggingface": json.dumps(info).encode(), METADATA_KEY: settings_json.encode()}
    )


def write_shard(out_dir: str | Path, rows: Iterable[Mapping[str, Any]], shard_index: int) -> Path:
    """Validate ``rows`` and write them as shard ``shard_index`` atomically; return its path.

    The settings come from the folder's sidecar (:func:`write_settings` first). Refuses to
    overwrite a shard or to add a video that already has a row.
    """
    settings = FeatureSettings.from_dict(read_settings(out_dir))
    rows = [validate_row(row, settings.feature_dim) for row in rows]
    if not rows:
        raise ValueError("write_shard needs at least one row")
    path = shard_path(out_dir, shard_index)
    if path.exists():
        raise FileExistsError(f"Shard {path} already exists")
    counts = Counter(row["video"] for row in rows)
    repeated = sorted({v for v, n in counts.items() if n > 1} | (set(counts) & completed_videos(out_dir)))
    if repeated:
        raise ValueError(f"Videos already in {out_dir} or repeated in this shard: {repeated}")
    table = _shard_table(rows, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda file: pq.write_table(table, file))
    digest = _sha256(path)
    atomic_write(_checksum_path(path), lambda file: file.write(f"{digest}\n".encode()))
    return path


class LabelledVideos:
    """What training needs of a bank of videos (features or frames): one ``table`` row per video (video, patient,
    seizure, view, label, duration, onset_bilateral) and the ``settings`` placing snippet ``i`` at
    ``i * stride / fps`` seconds."""

    table: Any  # pandas.DataFrame
    settings: dict[str, Any]

    def __len__(self) -> int:
        return len(self.table)

    @property
    def labels(self) -> np.ndarray:
        return self.table["label"].to_numpy(copy=True)

    @property
    def onsets(self) -> np.ndarray:
        """``onset_bilateral`` of each video in seconds, NaN where unknown (and in FOS videos)."""
        return self.table["onset_bilateral"].to_numpy(dtype=float, na_value=np.nan)

    def snippet_times(self, indices: np.ndarray) -> np.ndarray:
        """Start times (seconds) of snippets ``indices``."""
        return np.asarray(indices) * self.settings["stride"] / self.settings["fps"]

    def spread_targets(self, videos: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Timeline targets of snippets ``indices`` (one row per video) of ``videos``: 1 (TCS) for the snippets of a
        TCS video that start at or after its ``onset_bilateral``, 0 before it and throughout FOS videos; and whether
        each video's targets are known (not for a TCS video without ``onset_bilateral``)."""
        onsets = self.onsets[videos]
        tcs = self.labels[videos] == LABEL_NAMES.index("TCS")
        targets = (self.snippet_times(indices) >= np.where(tcs, onsets, np.inf)[:, None]).astype(np.int64)
        return targets, ~tcs | ~np.isnan(onsets)


class FeatureShardWriter:
    """Buffer video rows and write them as numbered shards; resumable.

    Opening an existing folder checks that its settings match, sets aside the shards that cannot be read (writer
    ``rank`` 0 only, listed in :attr:`damaged`, see :func:`set_aside_damaged_shards`), then skips the videos listed in
    :attr:`done`. Rows are validated on :meth:`add`; buffered rows are written by :meth:`flush`,
    automatically every ``videos_per_shard`` rows and when leaving a ``with`` block (also on
    error, so finished videos are kept).

    Several processes may write into one folder at once: writer ``rank`` of ``world_size`` only uses shard
    numbers congruent to ``rank`` modulo ``world_size`` (and the videos given to the writers must differ).
    """

    def __init__(
        self,
        out_dir: str | Path,
        settings: FeatureSettings,
        videos_per_shard: int = 8,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if videos_per_shard < 1:
            raise ValueError(f"videos_per_shard must be >= 1, got {videos_per_shard}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.out_dir = Path(out_dir)
        self.settings = settings
        self.videos_per_shard = videos_per_shard
        self.world_size = world_size
        write_settings(self.out_dir, settings)
        # temporary files of shards (".train-*.tmp") and of their checksums ("..train-*.sha256.*.tmp") a killed run left
        for stale in (self.out_dir / DATA_DIRNAME).glob(f".*{SHARD_PREFIX}*.tmp"):
            if _shard_index(stale.name.lstrip(".").split(".")[0]) % world_size == rank:
                stale.unlink(missing_ok=True)
        self.damaged = set_aside_damaged_shards(self.out_dir) if rank == 0 else {}
        self.done = completed_videos(self.out_dir)
        last = max((_shard_index(path.stem) for path in shard_paths(self.out_dir)), default=-1)
        self._next_index = last + 1 + (rank - last - 1) % world_size
        self._buffer: list[dict[str, Any]] = []

    def add(self, row: Mapping[str, Any]) -> Path | None:
        """Queue one video row; return the shard path if this filled a shard."""
        row = validate_row(row, self.settings.feature_dim)
        if row["video"] in self.done:
            raise ValueError(f"Video {row['video']!r} already has a row in {self.out_dir}")
        self._buffer.append(row)
        self.done.add(row["video"])
        return self.flush() if len(self._buffer) >= self.videos_per_shard else None

    def flush(self) -> Path | None:
        """Write the buffered rows as the next shard (nothing if the buffer is empty)."""
        if not self._buffer:
            return None
        path = write_shard(self.out_dir, self._buffer, self._next_index)
        self._next_index += self.world_size
        self._buffer = []
        return path

    def __enter__(self) -> FeatureShardWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()


def load_features(path_or_repo: str | Path, *, revision: str | None = None) -> datasets.Dataset:
    """Open a features dataset (local folder or Hub dataset id) as one ``datasets.Dataset``.

    The extraction settings are put in ``info.description`` (JSON, see :func:`dataset_settings`).
    """
    if Path(path_or_repo).is_dir():
        _raise_if_damaged(path_or_repo, full=False)
        try:
            dataset = datasets.load_dataset(str(path_or_repo), split="train")
        except Exception as error:
            _raise_if_damaged(path_or_repo, full=True, cause=error)
            raise
        settings = read_settings(path_or_repo)
    else:
        from huggingface_hub import hf_hub_download

        dataset = datasets.load_dataset(str(path_or_repo), split="train", revision=revision)
        sidecar = hf_hub_download(
            str(path_or_repo), SETTINGS_FILENAME, repo_type="dataset", revision=revision
        )
        settings = json.loads(Path(sidecar).read_text())
    dataset.info.description = json.dumps(settings)
    return dataset


def _raise_if_damaged(folder: str | Path, *, full: bool, cause: BaseException | None = None) -> None:
    """A ValueError naming the first damaged shard of ``folder`` (see :func:`shard_problem`) and how to rebuild it."""
    for shard in shard_paths(folder):
        if problem := shard_problem(shard, full=full):
            raise ValueError(
                f"Feature shard {shard} is damaged ({problem}). Rerun `gestures extract` with the same manifest "
                f"and --out {folder}: it sets damaged shards aside and extracts their videos again."
            ) from cause


def dataset_settings(dataset: datasets.Dataset) -> dict[str, Any]:
    """The extraction settings of a dataset opened with :func:`load_features`."""
    try:
        return json.loads(dataset.info.description)
    except (TypeError, ValueError):
        raise ValueError(
            "This dataset carries no extraction settings; open it with gestures_hub.features.load_features"
        ) from None
