"""``gestures predict``: classify whole seizure videos (FOS vs TCS) with a per-snippet timeline.

Each video goes through the model's pipeline (:class:`gestures_hub.model.GesturesVideoClassificationPipeline`, the
one ``transformers.pipeline(model=..., trust_remote_code=True)`` builds), so the results are the pipeline's: the video
is streamed through the encoder batch by batch and memory stays flat whatever its length. Without ``--model`` the
embedded demo model (``gestures_hub/demo_model``, trained on synthetic videos only) is used, and every output says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .features import write_json
from .model import GesturesForVideoClassification, GesturesVideoClassificationPipeline, GesturesVideoProcessor
from .model.video_reader import VideoError
from .presets import DEMO_MODEL_DIR, load_model


@dataclass
class Prediction:
    """Seizure-level label and class probabilities of one video, with the per-snippet timeline."""

    video: str
    label: str
    probabilities: dict[str, float]
    times: np.ndarray
    """Snippet start times (s)."""
    snippet_probabilities: np.ndarray
    """(n_snippets, num_labels) class probabilities of each snippet (NaN for models without a timeline)."""
    spread_time: float | None
    """Detected bilateral spread (s; see :func:`gestures_hub.model.detect_spread`), None unless classified TCS."""
    duration: float
    model: str
    notice: str | None = None
    """The demo notice of models trained on synthetic data (``config.trained_on_synthetic_data``), else None."""
    random_weights: bool = False
    """The model has random weights (a preset without ``--weights``): its output means nothing."""
    synthetic_video: bool = False
    """The video is one of the package's synthetic renders (its metadata says so)."""
    true_label: str | None = None
    """The known label of the video (synthetic cohorts, annotated data), when the caller gives it."""
    true_onset: float | None = None
    """The known time of the bilateral spread (s), when the caller gives it."""
    damage: list[str] = field(default_factory=list)
    """What decoding found wrong with the file (empty for an intact video): the results cover what was decoded."""
    temperature: float = 1.0
    """The model's temperature (``config.temperature``); the probabilities are calibrated when it is not 1."""
    familiarity: dict[str, Any] | None = None
    """Whether the video is like the training data (the pipeline's ``familiarity``: ``available``, ``unfamiliar``,
    ``unusual_fraction``, the thresholds, or a ``note``); None when not assessed."""
    snippet_unusualness: np.ndarray | None = None
    """Per-snippet unusualness (see :mod:`gestures_hub.model.familiarity`), when the model has a feature summary."""
    member_probabilities: list[dict[str, float]] | None = None
    """A fold ensemble's members' probabilities (None for a single model)."""
    probability_std: dict[str, float] | None = None
    """The members' standard deviation per label (ensembles)."""
    snippet_std: np.ndarray | None = None
    """(n_snippets, num_labels) standard deviation of the members' snippet probabilities (ensembles with a timeline)."""

    @property
    def demo(self) -> bool:
        return self.notice is not None

    @property
    def calibrated(self) -> bool:
        return self.temperature != 1.0

    @property
    def unfamiliar(self) -> bool | None:
        """The video is unlike the training data; None when the model cannot tell."""
        return (self.familiarity or {}).get("unfamiliar")

    @property
    def unusual(self) -> np.ndarray | None:
        """Which snippets are beyond the model's snippet threshold (None without a feature summary)."""
        if self.snippet_unusualness is None or not (self.familiarity or {}).get("available"):
            return None
        return self.snippet_unusualness > self.familiarity["snippet_threshold"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary, timeline included."""
        return {
            "video": self.video,
            "label": self.label,
            "probabilities": self.probabilities,
            "spread_time": self.spread_time,
            "duration": self.duration,
            "model": self.model,
            "demo": self.demo,
            "notice": self.notice,
            "random_weights": self.random_weights,
            "synthetic_video": self.synthetic_video,
            "damage": self.damage,
            "calibrated": self.calibrated,
            "temperature": self.temperature,
            "unfamiliar": self.unfamiliar,
            "familiarity": self.familiarity,
            "ensemble": None if self.member_probabilities is None else {
                "num_members": len(self.member_probabilities), "member_probabilities": self.member_probabilities,
                "std": self.probability_std},
            "ground_truth": None if self.true_label is None else {"label": self.true_label,
                                                                   "onset_bilateral": self.true_onset},
            "timeline": [{"time": round(float(time), 4), **values}
                         for time, values in zip(self.times, self.rows(), strict=True)],
        }

    def rows(self) -> list[dict[str, Any]]:
        """Per snippet: each label's probability, with ensembles its members' standard deviation (``<label>_std``),
        with a feature summary the snippet's ``unusualness`` and whether it is ``unusual``."""
        labels = list(self.probabilities)
        rows = [{name: float(p) for name, p in zip(labels, row, strict=True)} for row in self.snippet_probabilities]
        if self.snippet_std is not None:
            for row, std in zip(rows, self.snippet_std, strict=True):
                row.update({f"{name}_std": float(value) for name, value in zip(labels, std, strict=True)})
        unusual = self.unusual
        if unusual is not None:
            for row, score, flag in zip(rows, self.snippet_unusualness, unusual, strict=True):
                row.update(unusualness=float(score), unusual=bool(flag))
        return rows


def load_predictor(spec: str | None = None) -> tuple[GesturesForVideoClassification, str, bool]:
    """A video-in model, a description of it and whether it has trained weights. ``spec`` is a preset, a
    ``save_pretrained`` folder or a hub id; None gives the embedded demo model. Whether it was trained on synthetic
    data is its config's to say."""
    model, pretrained = load_model(DEMO_MODEL_DIR if spec is None else spec)
    if model.config.encoder == "none":
        raise ValueError(f"Model {str(spec)!r} takes precomputed features (encoder='none'); predicting from videos "
                         "needs a model with an encoder (see gestures_hub.attach.attach_encoder).")
    description = "embedded demo model (gestures_hub/demo_model)" if spec is None else str(spec)
    if not pretrained:
        description += " (RANDOM weights: predictions are meaningless)"
    return model, description, pretrained


def video_pipeline(model: GesturesForVideoClassification, *, device: str | None = None
                   ) -> GesturesVideoClassificationPipeline:
    """The model's pipeline with its video processor, on ``device`` (default: the accelerator if any)."""
    resolved = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return GesturesVideoClassificationPipeline(model=model, video_processor=GesturesVideoProcessor(model.config),
                                               device=resolved)


def predict_video(
    model: GesturesForVideoClassification | GesturesVideoClassificationPipeline,
    path: str | Path,
    *,
    stride: int | None = None,
    description: str | None = None,
    pretrained: bool = True,
    true_label: str | None = None,
    true_onset: float | None = None,
) -> Prediction:
    """Classify one whole video (with a model, or its pipeline to reuse); raises :class:`VideoError` for unusable
    files. ``pretrained=False`` marks a model with random weights; ``true_label`` and ``true_onset`` (s), when known,
    are drawn on the timeline next to the prediction."""
    from .synthetic import is_synthetic_video

    pipe = model if isinstance(model, GesturesVideoClassificationPipeline) else video_pipeline(model)
    config = pipe.model.config
    out = pipe(str(path), return_timeline=True, **({"stride": stride} if stride else {}))
    labels = list(out["snippet_scores"])
    scores = {item["label"]: item["score"] for item in out["scores"]}
    ensemble = out["ensemble"] or {}
    snippet_std = ensemble.get("snippet_std")
    return Prediction(
        video=str(path), label=out["label"], probabilities={name: scores[name] for name in labels},
        times=np.asarray(out["snippet_times"], dtype=np.float32),
        snippet_probabilities=np.stack([out["snippet_scores"][name] for name in labels], axis=1).astype(np.float32),
        spread_time=out["spread_time"], duration=out["duration"],
        model=description or str(getattr(config, "_name_or_path", "") or config.encoder), notice=out["notice"],
        random_weights=not pretrained, synthetic_video=is_synthetic_video(path), true_label=true_label,
        true_onset=true_onset, damage=out["damage"], temperature=out["temperature"], familiarity=out["familiarity"],
        snippet_unusualness=None if out["snippet_unusualness"] is None else np.asarray(out["snippet_unusualness"]),
        member_probabilities=ensemble.get("member_scores"), probability_std=ensemble.get("std"),
        snippet_std=None if snippet_std is None else np.stack([snippet_std[name] for name in labels], axis=1),
    )


def familiarity_text(prediction: Prediction) -> str | None:
    """Whether the video is like the training data, in words (None when it was not assessed)."""
    familiarity = prediction.familiarity
    if familiarity is None:
        return None
    if not familiarity["available"]:
        return "unlike-the-training-data check not available (the model has no feature summary)"
    share = f"{familiarity['unusual_fraction']:.0%} of snippets unusual, threshold {familiarity['video_threshold']:.0%}"
    if familiarity["unfamiliar"]:
        return f"UNLIKE THE TRAINING DATA ({share}): this prediction may mean nothing"
    return f"like the training data ({share})"


def summary_line(prediction: Prediction) -> str:
    """One line: label, probabilities (calibrated or not; an ensemble's spread), spread time, whether the video is like
    the training data and (demo models) the notice."""
    probabilities = ", ".join(f"{name} {p:.3f}" for name, p in prediction.probabilities.items())
    if prediction.probability_std is not None:
        probabilities += (f"; ± {prediction.probability_std[prediction.label]:.3f} across "
                          f"{len(prediction.member_probabilities)} fold models")
    if prediction.calibrated:
        probabilities += f"; calibrated, temperature {prediction.temperature:.3g}"
    line = f"{prediction.video}: {prediction.label} ({probabilities})"
    if prediction.damage:
        line += f" [DAMAGED VIDEO: {'; '.join(prediction.damage)}]"
    if prediction.spread_time is not None:
        line += f", bilateral spread detected at {prediction.spread_time:.1f} s"
    if (familiar := familiarity_text(prediction)) is not None:
        line += f" [{familiar}]"
    return f"{line}  [{prediction.notice}]" if prediction.notice else line


def write_outputs(prediction: Prediction, out_dir: Path, stem: str) -> dict[str, Path]:
    """Write ``<stem>.csv`` (timeline), ``<stem>.json`` and ``<stem>.png`` (plot) into ``out_dir``."""
    from .timeline import plot_timeline, write_timeline_csv

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / f"{stem}.{kind}" for kind in ("csv", "json", "png")}
    write_timeline_csv(prediction, paths["csv"])
    write_json(paths["json"], prediction.to_dict())
    plot_timeline(prediction, paths["png"])
    return paths


def _stems(videos: list[Path]) -> list[str]:
    """Output names: the video's stem, numbered when two videos share one."""
    seen: dict[str, int] = {}
    stems = []
    for video in videos:
        seen[video.stem] = seen.get(video.stem, 0) + 1
        stems.append(video.stem if seen[video.stem] == 1 else f"{video.stem}-{seen[video.stem]}")
    return stems


def run(args: argparse.Namespace) -> int:
    try:
        model, description, pretrained = load_predictor(args.model)
    except (OSError, ValueError) as error:
        print(f"gestures predict: error: {error}", file=sys.stderr)
        return 2
    pipe = video_pipeline(model, device=args.device)
    notice = model.config.notice
    log = sys.stderr if args.json else sys.stdout
    print(f"Model: {description}" + (f"  [{notice}]" if notice else ""), file=log, flush=True)
    predictions, errors = [], {}
    for video, stem in zip(args.videos, _stems(args.videos), strict=True):
        try:
            prediction = predict_video(pipe, video, stride=args.stride, description=description,
                                       pretrained=pretrained)
        except (VideoError, OSError, RuntimeError, ValueError) as error:
            message = str(error) if str(video) in str(error) else f"{video}: {error}"
            errors[str(video)] = message
            print(f"gestures predict: error: {message}", file=sys.stderr, flush=True)
            continue
        paths = write_outputs(prediction, args.out, stem)
        predictions.append(prediction)
        print(summary_line(prediction), file=log)
        print(f"  timeline: {paths['csv']}, {paths['json']}, plot: {paths['png']}", file=log, flush=True)
    if args.json:
        print(json.dumps({"model": description, "demo": notice is not None, "notice": notice,
                          "predictions": [p.to_dict() for p in predictions], "errors": errors}, indent=2))
    if errors:
        print(f"gestures predict: {len(errors)} of {len(args.videos)} video(s) failed.", file=sys.stderr)
    return 1 if errors else 0


__all__ = ["DEMO_MODEL_DIR", "Prediction", "load_predictor", "predict_video", "video_pipeline"]
