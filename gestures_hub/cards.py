"""Hub cards: a model card from a trained model folder, a dataset card from a features folder.

The Jinja templates live in ``gestures_hub/card_templates/`` (shipped as package data) and are rendered with
``ModelCard.from_template`` / ``DatasetCard.from_template``. Everything a card says comes from the files next to
the weights or the shards:

- model folder: ``config.json`` (required), ``training_args.json`` and ``cv_metrics.json`` (written by training);
- features folder: the settings sidecar and the Parquet shards of :mod:`gestures_hub.features`.

A model is *synthetic* when its ``config.json`` says ``trained_on_synthetic_data`` (or ``cv_metrics.json`` says
``dataset.synthetic``); a features dataset when its settings carry ``"synthetic": true`` or its folder holds a
``SYNTHETIC`` file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from statistics import median
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from .calibration import BINS
from .features import DATA_DIRNAME, LABEL_NAMES, SHARD_PREFIX, read_settings, shard_paths
from .metrics import EVALUATION_TITLES, SEIZURE_LEVEL, format_estimate

CONFIG_FILE = "config.json"
ENSEMBLE_MODEL_TYPE = "gestures_ensemble"
MODEL_TYPES = ("gestures", ENSEMBLE_MODEL_TYPE)
TRAINING_ARGS_FILE = "training_args.json"
BEST_MODEL_METRIC_NAMES = {"f1": "F1", "balanced_accuracy": "balanced accuracy", "loss": "loss (the lowest)"}
CV_METRICS_FILE = "cv_metrics.json"
SYNTHETIC_MARKER = "SYNTHETIC"
TEMPLATES = files("gestures_hub") / "card_templates"
BASE_TAGS = ("gestures", "epilepsy", "seizure", "video-classification")
SYNTHETIC_TAG = "synthetic-data"

# cv_metrics.json key -> (Hub metric id, display name); the model-index reports these.
INDEX_METRICS = {
    "accuracy": ("accuracy", "Accuracy"),
    "f1": ("f1", "F1"),
    "precision": ("precision", "Precision"),
    "recall": ("recall", "Recall"),
    "auroc": ("roc_auc", "AUROC"),
}
TABLE_METRICS = {
    "accuracy": "Acc.",
    "balanced_accuracy": "Bal. acc.",
    "precision": "Prec.",
    "recall": "Rec.",
    "f1": "F1",
    "auroc": "AUROC",
}
EVALUATION_MODES = {
    "middle": "one snippet at the centre of each of the `num_segments` segments (the paper's validation sampling)",
    "dense": "every snippet of the video",
}
EVALUATION_MODES.update({f"{mode}{SEIZURE_LEVEL}": f"{text}; per seizure: the mean of its views' TCS probabilities, "
                         "thresholded at 0.5 (the paper's headline numbers)"
                         for mode, text in EVALUATION_MODES.items()})
ENCODERS = {
    "r2plus1d_34": "R(2+1)D-34, pretrained on IG-65M and fine-tuned on Kinetics-400 (frozen)",
    "r2plus1d_18": "torchvision R(2+1)D-18, Kinetics-400",
    "r3d_18": "torchvision R3D-18, Kinetics-400",
    "mc3_18": "torchvision MC3-18, Kinetics-400",
    "videomae": "VideoMAE transformer",
    "auto": "transformers video backbone",
    "none": "no encoder: the model classifies precomputed snippet features",
}
AGGREGATIONS = {
    "mean": "mean of the snippet features",
    "lstm": "LSTM",
    "blstm": "bidirectional LSTM",
    "gru": "GRU",
    "bgru": "bidirectional GRU",
}
COLUMNS = {
    "video": "video id (one camera view of one seizure)",
    "patient": "pseudonymous patient id",
    "seizure": "seizure id within the patient",
    "view": "camera view",
    "label": "seizure type; -1 when unknown",
    "duration": "seconds covered by the snippets",
    "onset_bilateral": "seconds from the start to the bilateral spread (TCS only)",
    "num_snippets": "number of snippets (rows of `features`)",
    "start_times": "start time of each snippet, in seconds",
    "features": "one feature vector per snippet, in time order",
}


@dataclass(frozen=True)
class ModelArtifacts:
    """What a trained model folder says about itself."""

    config: dict[str, Any]
    training_args: dict[str, Any] | None
    cv_metrics: dict[str, Any] | None
    synthetic: bool


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, with errors that name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def _optional_json(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.exists() else None


def read_model_artifacts(model_dir: str | Path) -> ModelArtifacts:
    """Read ``config.json`` (required), ``training_args.json`` and ``cv_metrics.json`` (optional)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir} is not a folder")
    if not (model_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{model_dir} has no {CONFIG_FILE}: pass a folder written by save_pretrained")
    config = read_json(model_dir / CONFIG_FILE)
    if config.get("model_type") not in MODEL_TYPES:
        raise ValueError(f"{model_dir / CONFIG_FILE} is not a GESTURES model (model_type={config.get('model_type')!r})")
    training_args = _optional_json(model_dir / TRAINING_ARGS_FILE)
    cv_metrics = _optional_json(model_dir / CV_METRICS_FILE)
    if cv_metrics is not None:
        _check_cv_metrics(cv_metrics, model_dir / CV_METRICS_FILE)
    synthetic = bool(config.get("trained_on_synthetic_data")) or bool(
        (cv_metrics or {}).get("dataset", {}).get("synthetic"))
    return ModelArtifacts(config, training_args, cv_metrics, synthetic)


def _check_cv_metrics(cv_metrics: dict[str, Any], path: Path) -> None:
    missing = [key for key in ("protocol", "dataset", "folds", "summary") if key not in cv_metrics]
    if missing:
        raise ValueError(f"{path} lacks {missing}: it was not written by gestures training")
    if not cv_metrics["folds"] or not cv_metrics["summary"]:
        raise ValueError(f"{path} has no folds or no summary")


def is_synthetic_features(features_dir: str | Path) -> bool:
    """Whether a features folder is marked synthetic (settings ``synthetic`` or a ``SYNTHETIC`` file)."""
    return bool(read_settings(features_dir).get("synthetic")) or (Path(features_dir) / SYNTHETIC_MARKER).exists()


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _fmt_mean_sd(mean: float | None, sd: float | None) -> str:
    return _fmt(mean) if sd is None or mean is None else f"{mean:.3f} ± {sd:.3f}"


def _fmt_interval(value: float | None, interval: list[float] | None) -> str:
    """``0.940 (0.890-0.980)``, the value alone without an interval, a dash when undefined."""
    return _fmt(value) if value is None else format_estimate(value, interval)


def _confusion(matrix: list[list[int]] | None) -> str:
    if not matrix:
        return "–"
    (tn, fp), (fn, tp) = matrix
    return f"TN {tn} · FP {fp} · FN {fn} · TP {tp}"


def _count(matrix: list[list[int]] | None) -> int | None:
    """How many predictions a confusion matrix holds."""
    return None if matrix is None else int(sum(map(sum, matrix)))


def protocol_description(protocol: dict[str, Any]) -> str:
    """The cross-validation protocol in words."""
    return protocol.get("description") or f"{protocol['group_by']}-grouped {protocol['folds']}-fold cross-validation"


def _evaluation_modes(cv_metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Per evaluation mode (middle, dense, ...): fold rows, mean ± sd and pooled, formatted for the tables."""
    modes = []
    for mode, summary in cv_metrics["summary"].items():
        folds = [
            {
                "fold": fold["fold"],
                "num_val": _count(fold[mode].get("confusion_matrix")) or fold.get("num_val", "–"),
                "best_epoch": fold.get("best_epoch", "–"),
                "values": [_fmt(fold[mode].get(key)) for key in TABLE_METRICS],
                "confusion": _confusion(fold[mode].get("confusion_matrix")),
            }
            for fold in cv_metrics["folds"]
            if mode in fold
        ]
        mean, sd, pooled = summary.get("mean", {}), summary.get("std", {}), summary.get("pooled", {})
        interval, calibration = summary.get("interval", {}), summary.get("calibration")
        modes.append({
            "name": mode,
            "title": EVALUATION_TITLES.get(mode, mode).capitalize(),
            "description": EVALUATION_MODES.get(mode, mode),
            "folds": folds,
            "num_val": _count(pooled.get("confusion_matrix")) or sum(fold.get("num_val", 0) for fold in
                                                                     cv_metrics["folds"] if mode in fold),
            "mean_sd": [_fmt_mean_sd(mean.get(key), sd.get(key)) for key in TABLE_METRICS],
            "pooled": [_fmt_interval(pooled.get(key), interval.get(key)) for key in TABLE_METRICS],
            "pooled_confusion": _confusion(pooled.get("confusion_matrix")),
            "calibration": calibration and {key: _fmt(value) for key, value in calibration.items()},
            "operating_points": [{"target": f"{point['specificity_target']:.0%}",
                                  "sensitivity": _fmt_interval(point["sensitivity"], point.get("interval")),
                                  "threshold": "never TCS" if point["threshold"] is None else _fmt(point["threshold"]),
                                  "specificity": _fmt(point["specificity"])}
                                 for point in summary.get("operating_points", [])],
        })
    return modes


def _statistics(cv_metrics: dict[str, Any]) -> dict[str, Any]:
    """How the intervals were computed, the binning of the ECE and the fitted temperature, for the card's text."""
    temperature = cv_metrics.get("temperature")
    if temperature:
        temperature = {**temperature, "value": f"{temperature['temperature']:.3f}",
                       "evaluation_title": EVALUATION_TITLES.get(temperature["evaluation"], temperature["evaluation"]),
                       "before": {key: _fmt(value) for key, value in temperature["before"].items()},
                       "after": {key: _fmt(value) for key, value in temperature["after"].items()}}
    intervals = cv_metrics.get("intervals")
    return {"intervals": intervals and {**intervals, "level": f"{intervals['confidence']:.0%}"},
            "ece_bins": BINS, "temperature": temperature}


def _dataset_label(cv_metrics: dict[str, Any], dataset_id: str | None) -> str:
    return dataset_id or Path(str(cv_metrics["dataset"].get("path") or "GESTURES features")).name


def eval_results(cv_metrics: dict[str, Any], *, dataset_id: str | None = None) -> list[EvalResult]:
    """The cross-validation summary as model-index results: the mean over folds of each metric and mode."""
    protocol, dataset = cv_metrics["protocol"], cv_metrics["dataset"]
    name = f"{_dataset_label(cv_metrics, dataset_id)} ({protocol_description(protocol)})"
    if dataset.get("synthetic"):
        name += " - synthetic"
    dataset_args = {key: protocol.get(key) for key in ("group_by", "folds", "seed")}
    dataset_args.update(num_videos=dataset.get("num_videos"), num_patients=dataset.get("num_patients"))
    results = []
    for mode, summary in cv_metrics["summary"].items():
        for key, (metric_type, display) in INDEX_METRICS.items():
            value = summary.get("mean", {}).get(key)
            if value is None:
                continue
            std = summary.get("std", {}).get(key)
            pooled = summary.get("pooled", {}).get(key)
            results.append(EvalResult(
                task_type="video-classification",
                task_name="Seizure classification (FOS vs TCS)",
                dataset_type=dataset_id or "gestures-features",
                dataset_name=name,
                dataset_split="train",
                dataset_args=dataset_args,
                metric_type=metric_type,
                metric_value=round(value, 4),
                metric_name=f"{display} ({EVALUATION_TITLES.get(mode, mode)}, mean of {protocol['folds']} folds)",
                metric_args={
                    "snippets": mode.removesuffix(SEIZURE_LEVEL),
                    "level": "seizure" if mode.endswith(SEIZURE_LEVEL) else "view",
                    "positive_label": "TCS",
                    "std": None if std is None else round(std, 4),
                    "pooled": None if pooled is None else round(pooled, 4),
                    **({"pooled_interval": [round(bound, 4) for bound in interval],
                        "confidence": cv_metrics["intervals"]["confidence"]}
                       if (interval := summary.get("interval", {}).get(key)) else {}),
                },
            ))
    return results


def _architecture(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows of the architecture table."""
    encoder = config["encoder"]
    encoder_text = ENCODERS.get(encoder, encoder)
    if config.get("encoder_name_or_path"):
        encoder_text += f" (`{config['encoder_name_or_path']}`)"
    aggregation = config["aggregation"]
    aggregator = AGGREGATIONS.get(aggregation, aggregation)
    if aggregation != "mean":
        aggregator += f", {config['num_layers']} layer(s) of {config['hidden_size']} hidden units"
    frames, fps, size = config["frames_per_snippet"], config["fps"], config["image_size"]
    labels = ", ".join(f"{index} = {name}" for index, name in enumerate(_labels(config)))
    return [
        ("Snippet encoder", f"`{encoder}`: {encoder_text}"),
        ("Snippet", f"{frames} frames at {fps:g} fps ({frames / fps:.2f} s), {size}x{size} pixels"),
        ("Feature size", f"{config['feature_dim']} per snippet"),
        ("Training sampling", f"{config['num_segments']} segments, one snippet each, gamma = {config['gamma']}"),
        ("Aggregation", f"`{aggregation}`: {aggregator}"),
        ("Classifier", f"dropout {config['dropout']}, linear layer to {len(config['id2label'])} classes ({labels})"),
        *([("Fold ensemble", f"{config['num_members']} heads (aggregator + classifier: "
                             f"{', '.join(config.get('member_sources') or []) or 'the fold models'}) on one encoder "
                             "pass; the probability is the mean of theirs, and the output carries their spread")]
          if config.get("model_type") == ENSEMBLE_MODEL_TYPE else []),
        ("Unlike the training data", "flagged: the config holds a summary of the training snippet features "
                                     "(`feature_summary`); the pipeline reports `unfamiliar` and marks unusual "
                                     "snippets" if config.get("feature_summary") else
                                     "not assessed (no `feature_summary` in the config)"),
    ]


def _labels(config: dict[str, Any]) -> list[str]:
    """Class names in index order."""
    return [name for _, name in sorted((int(index), name) for index, name in config["id2label"].items())]


def _table_value(value: Any) -> str:
    """A value for a Markdown table cell: strings as they are, the rest as JSON, empty as a dash."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|") or "–"


def _template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def render_model_card(
    model_dir: str | Path,
    *,
    repo_id: str,
    dataset_id: str | None = None,
    space_id: str | None = None,
    license: str = "mit",
    allow_no_eval: bool = False,
) -> ModelCard:
    """The model card (README.md) of a trained model folder, to be pushed to ``repo_id``.

    Raises ``FileNotFoundError`` when ``config.json`` is missing, or ``cv_metrics.json`` is missing and
    ``allow_no_eval`` is false.
    """
    artifacts = read_model_artifacts(model_dir)
    cv_metrics = artifacts.cv_metrics
    if cv_metrics is None and not allow_no_eval:
        raise FileNotFoundError(
            f"{Path(model_dir) / CV_METRICS_FILE} not found: the model has no evaluation results. Train it with "
            "cross-validation, or allow a card without evaluation (--allow-no-eval)."
        )
    config = artifacts.config
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="video-classification",
        license=license,
        tags=[*BASE_TAGS, *([SYNTHETIC_TAG] if artifacts.synthetic else [])],
        datasets=[dataset_id] if dataset_id else None,
        metrics=[metric for metric, _ in INDEX_METRICS.values()] if cv_metrics else None,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results(cv_metrics, dataset_id=dataset_id) if cv_metrics else None,
    )
    training_args = artifacts.training_args or (cv_metrics or {}).get("settings")
    return ModelCard.from_template(
        card_data,
        template_str=_template("model_card.md.j2"),
        repo_id=repo_id,
        title=repo_id.split("/")[-1],
        synthetic=artifacts.synthetic,
        config=config,
        architecture=_architecture(config),
        labels=_labels(config),
        dataset_id=dataset_id,
        space_id=space_id,
        training_args=[(key, _table_value(value)) for key, value in (training_args or {}).items()],
        training_args_source=TRAINING_ARGS_FILE if artifacts.training_args else CV_METRICS_FILE,
        timeline_weight=training_args.get("timeline_weight", 0.0) if training_args else None,
        cv=cv_metrics,
        best_model_metric=BEST_MODEL_METRIC_NAMES[(cv_metrics or {}).get("settings", {}).get("metric_for_best_model",
                                                                                               "f1")],
        protocol=protocol_description(cv_metrics["protocol"]) if cv_metrics else None,
        metric_headers=list(TABLE_METRICS.values()),
        modes=_evaluation_modes(cv_metrics) if cv_metrics else [],
        statistics=_statistics(cv_metrics) if cv_metrics else None,
        calibrated=config.get("temperature", 1.0) != 1.0,
    )


def _describe_feature(feature: Any) -> str:
    """The dtype of a ``datasets`` feature in words."""
    if isinstance(feature, datasets.ClassLabel):
        return "class label (" + ", ".join(f"{i} = {name}" for i, name in enumerate(feature.names)) + ")"
    if isinstance(feature, (datasets.Array2D, datasets.Array3D)):
        shape = ", ".join("n_snippets" if size is None else str(size) for size in feature.shape)
        return f"{feature.dtype} array ({shape})"
    if isinstance(feature, (datasets.List, datasets.LargeList)):
        return f"list of {_describe_feature(feature.feature)}"
    return getattr(feature, "dtype", type(feature).__name__)


def _size_category(num_rows: int) -> str:
    for limit, category in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if num_rows < limit:
            return category
    return "100K<n<1M"


def _dataset_statistics(shards: list[Path]) -> dict[str, Any]:
    """Counts over the shards (reads the small columns only)."""
    columns = ["patient", "seizure", "view", "label", "duration", "num_snippets"]
    table = pa.concat_tables(pq.read_table(shard, columns=columns) for shard in shards).to_pydict()
    labels = table["label"]
    durations = table["duration"]
    return {
        "num_videos": len(labels),
        "num_patients": len({patient for patient in table["patient"] if patient}),
        "num_seizures": len({(p, s) for p, s in zip(table["patient"], table["seizure"], strict=True) if s}),
        "labels": ", ".join(f"{labels.count(i)} {name}" for i, name in [*enumerate(LABEL_NAMES), (-1, "unknown")]),
        "views": sorted({view for view in table["view"] if view}),
        "num_snippets": sum(table["num_snippets"]),
        "hours": sum(durations) / 3600,
        "duration_range": f"{min(durations):.1f} / {median(durations):.1f} / {max(durations):.1f}",
        "num_shards": len(shards),
    }


def data_files_pattern() -> str:
    """Repo-relative glob of the Parquet shards, as the card's ``configs`` gives it to the Hub."""
    return f"{DATA_DIRNAME}/{SHARD_PREFIX}*.parquet"


def render_dataset_card(
    features_dir: str | Path,
    *,
    repo_id: str,
    license: str | None = None,
    source: str | None = None,
    pretty_name: str | None = None,
) -> DatasetCard:
    """The dataset card (README.md) of a features folder, to be pushed to ``repo_id``.

    ``source`` says where the videos or features came from (e.g. a DOI); it goes in the provenance section.
    """
    features_dir = Path(features_dir)
    shards = shard_paths(features_dir)
    if not shards:
        raise FileNotFoundError(f"{features_dir} has no Parquet shards ({data_files_pattern()}): not a features folder")
    settings = read_settings(features_dir)
    synthetic = is_synthetic_features(features_dir)
    schema = datasets.Features.from_arrow_schema(pq.read_schema(shards[0]))
    statistics = _dataset_statistics(shards)
    pretty_name = pretty_name or repo_id.split("/")[-1]
    card_data = DatasetCardData(
        license=license,
        pretty_name=pretty_name,
        task_categories=["video-classification"],
        tags=[*BASE_TAGS, "features", *([SYNTHETIC_TAG] if synthetic else [])],
        size_categories=[_size_category(statistics["num_videos"])],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": data_files_pattern()}]}],
    )
    return DatasetCard.from_template(
        card_data,
        template_str=_template("dataset_card.md.j2"),
        repo_id=repo_id,
        title=pretty_name,
        synthetic=synthetic,
        settings=settings,
        settings_rows=[(name, _table_value(value)) for name, value in settings.items()],
        schema=[(name, _describe_feature(feature), COLUMNS.get(name, "")) for name, feature in schema.items()],
        stats=statistics,
        source=source,
        data_files=data_files_pattern(),
    )
