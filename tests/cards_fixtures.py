"""Model and features folders for the card and push tests: a real tiny model, fabricated training outputs.

Training cannot run in these tests, so ``cv_metrics.json`` is fabricated: :func:`make_cv_metrics` builds one
whose metrics follow from its confusion matrices, and ``data/cv_metrics_example.json`` is a realistic example
of a 10-fold patient-grouped run (made up, not a result).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from gestures_hub import GesturesForVideoClassification
from gestures_hub.features import FeatureSettings, FeatureShardWriter
from gestures_hub.presets import get_config

EXAMPLE_CV_METRICS = Path(__file__).parent / "data" / "cv_metrics_example.json"
MODES = ("middle", "dense")
METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc")


def metrics_from_confusion(matrix: list[list[int]], auroc: float | None) -> dict[str, Any]:
    """Accuracy, balanced accuracy, precision, recall and F1 (TCS positive) of ``[[tn, fp], [fn, tp]]``."""
    (tn, fp), (fn, tp) = matrix
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    return {
        "accuracy": (tp + tn) / (tn + fp + fn + tp),
        "balanced_accuracy": (recall + specificity) / 2,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "auroc": auroc,
        "confusion_matrix": matrix,
    }


def make_cv_metrics(
    *, folds: int = 5, group_by: str = "patient", synthetic: bool = False, seed: int = 0, num_videos: int = 60
) -> dict[str, Any]:
    """A ``cv_metrics.json`` as training writes it, with consistent made-up numbers."""
    rng = random.Random(seed)
    fold_entries = []
    for index in range(folds):
        num_val = num_videos // folds
        entry: dict[str, Any] = {"fold": index, "num_val": num_val, "best_epoch": rng.randint(5, 90)}
        for mode in MODES:
            positives = num_val * 2 // 5
            tp = positives - rng.randint(0, 2)
            tn = (num_val - positives) - rng.randint(0, 2)
            matrix = [[tn, num_val - positives - tn], [positives - tp, tp]]
            entry[mode] = metrics_from_confusion(matrix, round(rng.uniform(0.85, 1.0), 4))
        fold_entries.append(entry)
    summary = {}
    for mode in MODES:
        values = {key: [entry[mode][key] for entry in fold_entries] for key in METRICS}
        pooled_matrix = np.sum([entry[mode]["confusion_matrix"] for entry in fold_entries], axis=0).tolist()
        summary[mode] = {
            "mean": {key: float(np.mean(v)) for key, v in values.items()},
            "std": {key: float(np.std(v, ddof=1)) for key, v in values.items()},
            "pooled": metrics_from_confusion(pooled_matrix, float(np.mean(values["auroc"]))),
        }
    description = {
        "patient": f"patient-grouped stratified {folds}-fold cross-validation",
        "seizure": f"seizure-wise {folds}-fold cross-validation (the paper's protocol)",
    }[group_by]
    return {
        "protocol": {"group_by": group_by, "folds": folds, "seed": seed, "description": description},
        "dataset": {"path": "runs/features/demo", "num_videos": num_videos, "num_patients": 12,
                    "synthetic": synthetic},
        "settings": {"aggregation": "blstm", "num_segments": 4, "gamma": 4.0, "loss": "weighted_ce", "lr": 0.01,
                     "epochs": 100, "batch_size": 64},
        "folds": fold_entries,
        "summary": summary,
    }


def save_tiny_model(model_dir: Path, *, cv_metrics: dict[str, Any] | None = None,
                    training_args: dict[str, Any] | None = None) -> Path:
    """A real tiny model (``tiny-features``) saved with ``save_pretrained``, plus training outputs when given."""
    GesturesForVideoClassification(get_config("tiny-features")).save_pretrained(model_dir)
    if cv_metrics is not None:
        (model_dir / "cv_metrics.json").write_text(json.dumps(cv_metrics, indent=2))
    if training_args is not None:
        (model_dir / "training_args.json").write_text(json.dumps(training_args, indent=2))
    return model_dir


def training_args(*, synthetic: bool = False) -> dict[str, Any]:
    """A ``training_args.json`` as training could write it."""
    return {"features": "runs/features/demo", "preset": "tiny-features", "aggregation": "blstm", "num_segments": 4,
            "gamma": 4.0, "loss": "weighted_ce", "lr": 0.01, "batch_size": 64, "epochs": 100,
            "group_by": "patient", "folds": 5, "seed": 0, "synthetic": synthetic}


def write_features(features_dir: Path, *, num_videos: int = 6, feature_dim: int = 16, videos_per_shard: int = 4,
                   synthetic: bool = False) -> Path:
    """A features folder with random vectors (two views per seizure, alternating labels)."""
    settings = FeatureSettings(encoder="r2plus1d_34", fps=15.0, frames_per_snippet=8, stride=1,
                               feature_dim=feature_dim, image_size=112, model="gestures-blstm", synthetic=synthetic)
    rng = np.random.default_rng(0)
    with FeatureShardWriter(features_dir, settings, videos_per_shard=videos_per_shard) as writer:
        for index in range(num_videos):
            seizure, view = divmod(index, 2)
            snippets = 10 + index
            writer.add({
                "video": f"P{seizure // 2:02d}_{seizure:02d}_{'LS'[view]}",
                "patient": f"P{seizure // 2:02d}",
                "seizure": f"{seizure:02d}",
                "view": ("Large", "Small")[view],
                "label": ("FOS", "TCS")[seizure % 2],
                "duration": (snippets + 7) / 15,
                "onset_bilateral": 0.5 if seizure % 2 else None,
                "start_times": np.arange(snippets, dtype=np.float32) / 15,
                "features": rng.standard_normal((snippets, feature_dim)).astype(np.float32),
            })
    return features_dir
