"""``gestures ensemble``: one model from the k fold models of a training run, sharing one encoder pass.

::

    gestures ensemble runs/blstm                       # -> runs/blstm/final-ensemble (the run's --encoder)
    gestures ensemble runs/blstm --encoder gestures-demo -o ensemble/

The members are the heads (aggregator + classifier) of ``RUN_DIR/fold-<i>/best/``, the models of a run trained on
snippet features; they sit behind the ``--encoder`` (by default the run's own ``--encoder``; without one the ensemble
takes snippet features too). The ensemble's probability is the mean of the members' temperature-scaled softmax;
its output also carries each member's probabilities and their standard deviation
(:class:`gestures_hub.model.GesturesEnsembleForVideoClassification`). It stores the summary of the run's training
features (``feature_summary``, to flag unfamiliar videos) and the run's temperature (that of its final model, which
training fits on the folds' out-of-fold predictions), and loads like any model: the Auto classes, the pipeline,
``gestures predict``, the Space. ``gestures train`` writes it as ``OUTPUT_DIR/final-ensemble`` when the run has a
video model (``final-video`` from ``--encoder``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .attach import HEAD_OPTIONS
from .features import write_json
from .model.configuration_gestures import GesturesEnsembleConfig
from .model.familiarity import summarize_features
from .model.modeling_gestures import GesturesEnsembleForVideoClassification, GesturesForVideoClassification
from .presets import load_model
from .train import ARGS_FILE, Run
from .training_data import FeatureBank
from .training_report import CV_METRICS_FILE, FINAL_FEATURES, FINAL_VIDEO

ENSEMBLE_DIR = "final-ensemble"
COMPATIBLE = ("feature_dim", "frames_per_snippet", "fps", "image_size", "frame_geometry")
"""What the encoder's features and the members' must share."""
SAME_HEAD = ("aggregation", "hidden_size", "num_layers", "num_labels", *COMPATIBLE)
"""What every member must share (one member config describes them all)."""
_NOT_CARRIED = ("model_type", "architectures", "auto_map", "custom_pipelines", "transformers_version",
                "_name_or_path", "feature_summary", "temperature", "class_weights")


def fold_model_dirs(run_dir: Path) -> list[Path]:
    """``fold-<i>/best`` of a run, by fold number; at least two, or a ``ValueError`` saying what is missing."""
    found = sorted((int(match[1]), path) for path in run_dir.glob("fold-*/best")
                   if (match := re.fullmatch(r"fold-(\d+)", path.parent.name)) and (path / "config.json").is_file())
    if len(found) < 2:
        raise ValueError(f"{run_dir} has {len(found)} fold model(s) (fold-<i>/best/config.json); an ensemble needs at "
                         "least 2: train the folds first (gestures train, without --fold).")
    return [path for _, path in found]


def summarize_bank(bank: FeatureBank) -> dict[str, Any] | None:
    """``config.feature_summary`` of the training features of a bank (its videos not marked discarded); None when
    they come from fewer than 2 patients (held-out patients set the thresholds)."""
    keep = ~bank.table["discarded"].to_numpy(dtype=bool)
    patients = bank.table["patient"].astype(str).to_numpy()
    if len(np.unique(patients[keep])) < 2:
        return None
    return summarize_features(bank.features.numpy(), bank.lengths, patients, keep=keep).to_dict()


def run_temperature(run_dir: Path, members: list[GesturesForVideoClassification]) -> float:
    """The temperature of the run's final model (video, else features) or, without one, the members' common one."""
    for name in (FINAL_VIDEO, FINAL_FEATURES):
        if (path := run_dir / name / "config.json").is_file():
            return float(json.loads(path.read_text()).get("temperature", 1.0))
    temperatures = {member.config.temperature for member in members}
    return temperatures.pop() if len(temperatures) == 1 else 1.0


def build_ensemble(
    run_dir: str | Path,
    *,
    encoder: str | Path | None = None,
    encoder_weights: str | Path | None = None,
    temperature: float | None = None,
    feature_summary: dict[str, Any] | None = None,
) -> GesturesEnsembleForVideoClassification:
    """The fold ensemble of a run: its fold models' heads behind ``encoder`` (a preset, folder or Hub id for
    :func:`gestures_hub.presets.load_model`; None: the ensemble takes snippet features). ``temperature``: by default
    :func:`run_temperature`."""
    run_dir = Path(run_dir)
    sources = fold_model_dirs(run_dir)
    members = [GesturesForVideoClassification.from_pretrained(str(path)).eval()
               for path in tqdm(sources, desc="fold models", unit="model", leave=False)]
    head = members[0].config
    for path, member in zip(sources, members, strict=True):
        if member.config.encoder != "none":
            raise ValueError(f"{path} takes video (a --train-encoder run): each fold fine-tuned its own encoder, so "
                             "they cannot share one encoder pass. Ensembles are built from runs on snippet features.")
        differ = {name: (getattr(head, name), getattr(member.config, name)) for name in SAME_HEAD
                  if getattr(head, name) != getattr(member.config, name)}
        if differ:
            raise ValueError(f"{path} differs from {sources[0]} in {differ}; the members of an ensemble share one "
                             "head layout (the folds of one run do).")
    base = head
    encoder_model = None
    if encoder is not None:
        encoder_model, _ = load_model(encoder, weights=encoder_weights)
        base = encoder_model.config
        if base.encoder == "none":
            raise ValueError(f"The encoder model {str(encoder)!r} has no encoder (encoder='none').")
        for name in COMPATIBLE:
            if getattr(head, name) != getattr(base, name):
                raise ValueError(f"The fold models were trained on features with {name}={getattr(head, name)}; the "
                                 f"encoder {str(encoder)!r} has {getattr(base, name)}.")
    synthetic = any(member.config.trained_on_synthetic_data for member in members) or base.trained_on_synthetic_data
    settings = {key: value for key, value in base.to_dict().items() if key not in _NOT_CARRIED}
    config = GesturesEnsembleConfig(**{
        **settings, **{name: getattr(head, name) for name in HEAD_OPTIONS if name != "class_weights"},
        "num_members": len(members), "member_sources": [str(path.relative_to(run_dir)) for path in sources],
        "trained_on_synthetic_data": synthetic, "feature_summary": feature_summary,
        "temperature": run_temperature(run_dir, members) if temperature is None else temperature,
    })
    ensemble = GesturesEnsembleForVideoClassification(config)
    if encoder_model is not None:
        ensemble.encoder.load_state_dict(encoder_model.gestures.encoder.state_dict())
    for slot, member in zip(ensemble.members, members, strict=True):
        slot.load_state_dict(member.state_dict())
    return ensemble.eval()


def save_ensemble(ensemble: GesturesEnsembleForVideoClassification, run_dir: Path, out: Path) -> Path:
    """``save_pretrained`` into ``out``, with the run's ``training_args.json`` and its cross-validation metrics
    (``cv_metrics.json``: the members' out-of-fold results) when the run has them."""
    ensemble.save_pretrained(out)
    if (run_dir / ARGS_FILE).is_file():
        shutil.copyfile(run_dir / ARGS_FILE, out / ARGS_FILE)
    if (run_dir / "metrics.json").is_file():
        write_json(out / CV_METRICS_FILE, json.loads((run_dir / "metrics.json").read_text()))
    return out


def export_run_ensemble(run: Run) -> Path | None:
    """What ``gestures train`` calls at the end of a run: the fold ensemble behind the run's ``--encoder`` in
    ``OUTPUT_DIR/final-ensemble`` (main process), when the run has a video model made from features."""
    args = run.args
    if not run.is_main or args.train_encoder or not args.encoder or not (run.output_dir / FINAL_VIDEO).is_dir():
        return None
    ensemble = build_ensemble(run.output_dir, encoder=args.encoder, encoder_weights=args.encoder_weights,
                              feature_summary=summarize_bank(run.bank))
    return save_ensemble(ensemble, run.output_dir, run.output_dir / ENSEMBLE_DIR)


def run(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir
    try:
        saved = json.loads((run_dir / ARGS_FILE).read_text()) if (run_dir / ARGS_FILE).is_file() else {}
        encoder = args.encoder or saved.get("encoder")
        weights = args.encoder_weights or (saved.get("encoder_weights") if not args.encoder else None)
        summary = None
        if saved.get("features") and Path(saved["features"]).is_dir():
            summary = summarize_bank(FeatureBank.load(saved["features"]))
        else:
            print(f"Note: the run's features dataset ({saved.get('features')!r}, from {run_dir / ARGS_FILE}) is not "
                  "there: the ensemble gets no feature_summary and cannot flag videos unlike its training data.",
                  file=sys.stderr)
        ensemble = build_ensemble(run_dir, encoder=encoder, encoder_weights=weights, temperature=args.temperature,
                                  feature_summary=summary)
    except (OSError, ValueError) as error:
        print(f"gestures ensemble: error: {error}", file=sys.stderr)
        return 2
    out = save_ensemble(ensemble, run_dir, args.out or run_dir / ENSEMBLE_DIR)
    config = ensemble.config
    takes = f"video, through the encoder of {encoder}" if encoder else "snippet features (no --encoder)"
    print(f"Wrote a fold ensemble of {config.num_members} models to {out}: takes {takes}; temperature "
          f"{config.temperature:g}; {'with' if summary else 'without'} a training-feature summary."
          + (f"  [{config.notice}]" if config.notice else ""))
    return 0
