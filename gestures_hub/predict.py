"""``gestures predict``: classify whole seizure videos (FOS vs TCS) with a per-snippet timeline.

A video is streamed through the snippet encoder (:class:`gestures_hub.extract.SnippetEncoder`), so memory stays
flat whatever its length; the aggregator and classifier then see the whole snippet sequence. Without ``--model``
the embedded demo model (``gestures_hub/demo_model``, trained on synthetic videos only) is used, and every output
says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cards import SYNTHETIC_MARKER
from .extract import Runtime, SnippetEncoder, choose_runtime
from .modeling_gestures import GesturesForVideoClassification
from .presets import load_model
from .video import VideoError, probe_video

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo_model"
DEMO_NOTICE = "DEMO MODEL — synthetic training data, not for clinical use"
SPREAD_THRESHOLD = 0.5
SPREAD_MIN_DURATION = 3.0


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
    """Detected bilateral spread (s; see :func:`detect_spread`), None when the video is not classified TCS."""
    duration: float
    model: str
    demo: bool

    @property
    def notice(self) -> str | None:
        return DEMO_NOTICE if self.demo else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary, timeline included."""
        labels = list(self.probabilities)
        return {
            "video": self.video,
            "label": self.label,
            "probabilities": self.probabilities,
            "spread_time": self.spread_time,
            "duration": self.duration,
            "model": self.model,
            "demo": self.demo,
            "notice": self.notice,
            "timeline": [
                {"time": round(float(time), 4), **{name: float(p) for name, p in zip(labels, row, strict=True)}}
                for time, row in zip(self.times, self.snippet_probabilities, strict=True)
            ],
        }


def load_predictor(spec: str | None = None) -> tuple[GesturesForVideoClassification, str, bool]:
    """A video-in model, a description of it, and whether it is a demo model trained on synthetic data.

    ``spec`` is a preset, a ``save_pretrained`` folder or a hub id; None gives the embedded demo model. Folders
    with a ``SYNTHETIC`` marker (the demo model, ``gestures quickstart`` exports) count as demo models.
    """
    path = DEMO_MODEL_DIR if spec is None else spec
    model, pretrained = load_model(path)
    if model.config.encoder == "none":
        raise ValueError(f"Model {str(path)!r} takes precomputed features (encoder='none'); predicting from videos "
                         "needs a model with an encoder (see gestures_hub.train.attach_encoder).")
    demo = spec is None or (Path(path) / SYNTHETIC_MARKER).is_file()
    description = "embedded demo model (gestures_hub/demo_model)" if spec is None else str(spec)
    if not pretrained:
        description += " (RANDOM weights: predictions are meaningless)"
    return model, description, demo


def detect_spread(
    times: np.ndarray,
    tcs_probability: np.ndarray,
    threshold: float = SPREAD_THRESHOLD,
    min_duration: float = SPREAD_MIN_DURATION,
) -> float | None:
    """Start time of the first run of snippets whose TCS probability is >= ``threshold`` and that lasts at least
    ``min_duration`` seconds (from its first snippet's start to its last snippet's end), or lasts until the end of
    the video. None when there is no such run. Brief excursions above the threshold are ignored."""
    times, above = np.asarray(times, dtype=float), np.asarray(tcs_probability) >= threshold
    if len(times) == 0 or not above.any():
        return None
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], above.astype(np.int8), [0]])))
    for first, end in zip(edges[::2], edges[1::2], strict=True):
        if times[end - 1] - times[first] + step >= min_duration or end == len(times):
            return float(times[first])
    return None


@torch.inference_mode()
def predict_video(
    model: GesturesForVideoClassification,
    path: str | Path,
    *,
    stride: int | None = None,
    runtime: Runtime | None = None,
    description: str | None = None,
    demo: bool = False,
) -> Prediction:
    """Classify one whole video; raises :class:`gestures_hub.video.VideoError` for unusable files."""
    config = model.config
    duration = probe_video(path, min_duration=config.snippet_duration).duration
    runtime = runtime or choose_runtime(config.encoder, batch_size=16)
    features, times = SnippetEncoder(model.to(runtime.device), runtime).video(path, stride)
    out = model(snippet_features=torch.from_numpy(features)[None].to(runtime.device))
    labels = [config.id2label[index] for index in range(config.num_labels)]
    probabilities = out.logits[0].float().softmax(-1).cpu().numpy()
    if out.snippet_logits is None:
        snippet_probabilities = np.full((len(times), len(labels)), np.nan, dtype=np.float32)
    else:
        snippet_probabilities = out.snippet_logits[0].float().softmax(-1).cpu().numpy()
    label = labels[int(probabilities.argmax())]
    class_probabilities = {name: float(p) for name, p in zip(labels, probabilities, strict=True)}
    spread = None
    if label == "TCS" and out.snippet_logits is not None:
        spread = detect_spread(times, snippet_probabilities[:, labels.index("TCS")])
    return Prediction(
        video=str(path), label=label, probabilities=class_probabilities,
        times=times, snippet_probabilities=snippet_probabilities, spread_time=spread, duration=float(duration),
        model=description or str(getattr(config, "_name_or_path", "") or config.encoder), demo=demo,
    )


def summary_line(prediction: Prediction) -> str:
    """One line: label, probabilities, spread time and (demo models) the notice."""
    probabilities = ", ".join(f"{name} {p:.3f}" for name, p in prediction.probabilities.items())
    line = f"{prediction.video}: {prediction.label} ({probabilities})"
    if prediction.spread_time is not None:
        line += f", bilateral spread detected at {prediction.spread_time:.1f} s"
    return f"{line}  [{DEMO_NOTICE}]" if prediction.demo else line


def write_outputs(prediction: Prediction, out_dir: Path, stem: str) -> dict[str, Path]:
    """Write ``<stem>.csv`` (timeline), ``<stem>.json`` and ``<stem>.png`` (plot) into ``out_dir``."""
    from .timeline import plot_timeline, write_timeline_csv

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / f"{stem}.{kind}" for kind in ("csv", "json", "png")}
    write_timeline_csv(prediction, paths["csv"])
    paths["json"].write_text(json.dumps(prediction.to_dict(), indent=2) + "\n")
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


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify seizure videos (FOS vs TCS) with a timeline",
        description=__doc__.split("\n\n")[0] + " Writes a timeline CSV, a JSON summary and a plot per video.",
    )
    parser.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="video files of any length")
    parser.add_argument("--model", help="a preset, a folder written by save_pretrained, or a hub id (default: the "
                                        "embedded demo model, trained on synthetic videos: not for clinical use)")
    parser.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: predictions)")
    parser.add_argument("--json", action="store_true", help="print the predictions as JSON on stdout")
    parser.add_argument("--stride", type=int, help="frames between snippet starts (default: frames per snippet)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: the accelerator if any)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        model, description, demo = load_predictor(args.model)
    except (OSError, ValueError) as error:
        print(f"gestures predict: error: {error}", file=sys.stderr)
        return 2
    runtime = choose_runtime(model.config.encoder, args.device, batch_size=16)
    log = sys.stderr if args.json else sys.stdout
    print(f"Model: {description}" + (f"  [{DEMO_NOTICE}]" if demo else ""), file=log, flush=True)
    predictions, errors = [], {}
    for video, stem in zip(args.videos, _stems(args.videos), strict=True):
        try:
            prediction = predict_video(model, video, stride=args.stride, runtime=runtime, description=description,
                                       demo=demo)
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
        print(json.dumps({"model": description, "demo": demo, "notice": DEMO_NOTICE if demo else None,
                          "predictions": [p.to_dict() for p in predictions], "errors": errors}, indent=2))
    if errors:
        print(f"gestures predict: {len(errors)} of {len(args.videos)} video(s) failed.", file=sys.stderr)
    return 1 if errors else 0


__all__ = ["Prediction", "load_predictor", "predict_video", "detect_spread", "DEMO_MODEL_DIR", "DEMO_NOTICE"]
