"""The GESTURES video-classification pipeline: a seizure video of any length in, FOS / TCS scores and a timeline out.

Saved in the config's ``custom_pipelines`` under ``"video-classification"``, so that both
``pipeline(model=REPO_OR_DIR, trust_remote_code=True)`` and ``pipeline("video-classification", ...)`` build it.
The video is streamed through the encoder one batch of snippets at a time (``batch_size``); only the snippet
features are kept, then the aggregator and classifier see the whole sequence.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from transformers import Pipeline
from transformers.utils import logging

from .familiarity import UNAVAILABLE, assess
from .video_processing_gestures import GesturesVideoProcessor

logger = logging.get_logger(__name__)

PIPELINE_TASK = "video-classification"
SPREAD_THRESHOLD = 0.5
"""TCS probability above which a snippet counts as bilateral."""
SPREAD_MIN_DURATION = 3.0
"""Seconds a run of bilateral snippets must last to count as the spread (or last until the end of the video)."""


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


class GesturesVideoClassificationPipeline(Pipeline):
    r"""Classify whole seizure videos (FOS vs TCS) with a GESTURES model.

    ```python
    from transformers import pipeline

    classifier = pipeline(model="<org>/gestures-blstm", trust_remote_code=True)
    classifier("seizure.mp4")  # [{"label": "TCS", "score": 0.97}, {"label": "FOS", "score": 0.03}]
    classifier("seizure.mp4", return_timeline=True)  # + per-snippet probabilities, their times, the spread
    ```

    Call arguments:
        top_k (`int`, *optional*): how many labels to return (default: all).
        return_timeline (`bool`, *optional*, defaults to `False`): return a dict with `scores` (the list above),
            `label`, `snippet_times` (s), `snippet_scores` (per-label lists of per-snippet probabilities; NaN for
            stacked RNNs, which have none), `spread_time` (s, see `detect_spread`; None unless the video is classified
            TCS), `duration` (s), `damage` (what decoding found wrong with the file, in words: skipped packets,
            corrupt frames, timestamp jumps, less decoded than announced; empty for an intact video),
            `trained_on_synthetic_data` and `notice` (the demo notice, or None), `calibrated` and `temperature`
            (the probabilities are temperature-scaled when `calibrated`: `config.temperature` is not 1),
            `unfamiliar` (the video is unlike the training data, see `familiarity.py`; None when the model has no
            `feature_summary`), `familiarity` (`available`, and when it is the fraction of unusual snippets and the
            thresholds; else a `note` saying why not) and `snippet_unusualness` (per snippet, or None), and for a fold
            ensemble `ensemble`: `num_members`, `member_scores` (each member's probabilities), `std` (their standard
            deviation per label) and `snippet_std` (per label, per snippet); None for a single model.
        stride (`int`, *optional*): frames between snippet starts (default: the processor's).
        video_fps (`float`, *optional*): frame rate of caller-decoded frames (default: the model's).
    `batch_size` is the number of snippets encoded at once; `device` and `dtype` work as for every pipeline.
    """

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.model.config
        if getattr(config, "encoder", None) == "none":
            raise ValueError("This GESTURES model takes precomputed snippet features (encoder='none'); the pipeline "
                             "needs a model with an encoder (a video-in model).")
        if self.video_processor is None:
            self.video_processor = GesturesVideoProcessor(config)
        if config.notice:
            logger.warning_once(f"{config.notice} (config.trained_on_synthetic_data).")

    def _sanitize_parameters(self, top_k: int | None = None, return_timeline: bool | None = None,
                             stride: int | None = None, video_fps: float | None = None, **unknown: Any):
        if unknown:
            raise TypeError(f"Unknown argument(s) for the GESTURES pipeline: {', '.join(sorted(unknown))}.")
        preprocess = {key: value for key, value in (("stride", stride), ("video_fps", video_fps)) if value is not None}
        postprocess = {key: value for key, value in (("top_k", top_k), ("return_timeline", return_timeline))
                       if value is not None}
        return preprocess, {}, postprocess

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        """One video (a path or decoded frames) gives one result; a list of paths gives a list, one video at a time."""
        if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], (str, os.PathLike)):
            return [self(video, **kwargs) for video in inputs]
        return super().__call__(inputs, **kwargs)

    def preprocess(self, video: Any, stride: int | None = None, video_fps: float | None = None) -> dict[str, Any]:
        stream = self.video_processor.stream(video, stride=stride, batch_size=self._batch_size, video_fps=video_fps)
        return {"stream": stream}

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        stream = model_inputs["stream"]
        features, times = [], []
        for batch in stream:
            pixels = batch.pixel_values.to(self.device, dtype=self.model.dtype, non_blocking=True)
            features.append(self.model.encode_snippets(pixels))
            times.append(batch.start_times)
        snippet_features = torch.cat(features)
        out = self.model(snippet_features=snippet_features[None])
        first = {name: None if getattr(out, name, None) is None else getattr(out, name)[0].float()
                 for name in ("logits", "snippet_logits", "member_logits", "probability_std",
                              "snippet_probability_std")}
        return {**first, "snippet_times": torch.cat(times), "duration": stream.duration,
                "damage": stream.report.problems(),
                "familiarity": assess(self.model.config.feature_summary, snippet_features.float().cpu().numpy())}

    def postprocess(self, model_outputs: dict[str, Any], top_k: int | None = None,
                    return_timeline: bool = False) -> list[dict[str, Any]] | dict[str, Any]:
        config = self.model.config
        labels = [config.id2label[index] for index in range(config.num_labels)]
        probabilities = model_outputs["logits"].softmax(-1).numpy()
        order = np.argsort(-probabilities, kind="stable")[: top_k or len(labels)]
        scores = [{"label": labels[i], "score": float(probabilities[i])} for i in order]
        if not return_timeline:
            return scores
        times = model_outputs["snippet_times"].numpy()
        snippet_logits = model_outputs["snippet_logits"]
        snippet = (np.full((len(times), len(labels)), np.nan, dtype=np.float32) if snippet_logits is None
                   else snippet_logits.softmax(-1).numpy())
        label = labels[int(probabilities.argmax())]
        spread = None
        if label == "TCS" and snippet_logits is not None:
            spread = detect_spread(times, snippet[:, labels.index("TCS")])
        familiarity = model_outputs["familiarity"]
        return {
            "scores": scores,
            "label": label,
            "snippet_times": times.tolist(),
            "snippet_scores": {name: snippet[:, i].tolist() for i, name in enumerate(labels)},
            "spread_time": spread,
            "duration": float(model_outputs["duration"]),
            "damage": model_outputs["damage"],
            "trained_on_synthetic_data": bool(config.trained_on_synthetic_data),
            "notice": config.notice,
            "calibrated": config.calibrated,
            "temperature": config.temperature,
            "unfamiliar": None if familiarity is None else familiarity.unfamiliar,
            "familiarity": dict(UNAVAILABLE) if familiarity is None else familiarity.to_dict(),
            "snippet_unusualness": None if familiarity is None else familiarity.scores.tolist(),
            "ensemble": _ensemble_summary(model_outputs, labels),
        }


def _ensemble_summary(model_outputs: dict[str, Any], labels: list[str]) -> dict[str, Any] | None:
    """The members' probabilities and their spread, for a fold ensemble (None for a single model)."""
    member_logits = model_outputs["member_logits"]
    if member_logits is None:
        return None
    members = member_logits.softmax(-1).numpy()
    snippet_std = model_outputs["snippet_probability_std"]
    return {
        "num_members": len(members),
        "member_scores": [{name: float(row[i]) for i, name in enumerate(labels)} for row in members],
        "std": {name: float(model_outputs["probability_std"][i]) for i, name in enumerate(labels)},
        "snippet_std": None if snippet_std is None else {name: snippet_std[:, i].tolist()
                                                         for i, name in enumerate(labels)},
    }


__all__ = ["GesturesVideoClassificationPipeline", "detect_spread", "PIPELINE_TASK"]
