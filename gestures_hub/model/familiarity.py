"""Is a video like the training data? A compact summary of the training snippet features, and its test.

The summary (``config.feature_summary``) is a Gaussian model of the snippet features, power-normalised (signed square
root, as for Fisher vectors: it tames the heavy tails of rectified CNN features), in a reduced space: their mean, the
``k`` leading principal directions with their variances, and the mean variance left outside them. A snippet's
*unusualness* is its Mahalanobis distance under that model, divided by ``sqrt(feature_dim)`` (about 1 for typical
snippets): the standardised distance along the ``k`` directions plus the residual off them, so features that leave
the training subspace count as well as those far along it.

Two thresholds come from training quantiles, on held-out training patients (the basis is fitted on the others, so
the thresholds are those of unseen patients of the training data, not of the fitted ones):

- ``snippet_threshold``: the ``SNIPPET_QUANTILE`` (85 %) of held-out snippets' unusualness (a snippet beyond it is
  *unusual*; about one in seven training snippets is);
- ``video_threshold``: a video is *unfamiliar* when more than this fraction of its snippets is unusual. It is
  ``VIDEO_MARGIN`` (1.5) times the ``VIDEO_QUANTILE`` (99 %) of the held-out videos' fractions, within
  [``MIN_VIDEO_FRACTION``, 1].

A model without a summary (older folders) reports nothing: :func:`assess` returns ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

NUM_COMPONENTS = 16
SNIPPET_QUANTILE = 0.85
VIDEO_QUANTILE = 0.99
VIDEO_MARGIN = 1.5
"""Held-out videos' 99 % quantile of the fraction of unusual snippets, times this, is the video threshold."""
MIN_VIDEO_FRACTION = 0.25
"""The video threshold is never below this fraction of unusual snippets."""
MAX_SNIPPETS = 20_000
"""At most this many training snippets (a seeded draw) are summarised."""
SIGNIFICANT_DIGITS = 6
"""Numbers are stored rounded to this many significant digits (the thresholds are computed after rounding)."""
NOT_AVAILABLE = ("not available: this model's config has no feature_summary (a summary of its training features), "
                 "so it cannot tell whether a video is unlike its training data")
UNAVAILABLE = {"available": False, "note": NOT_AVAILABLE}
"""What the pipeline and ``gestures predict`` report for a model without a summary."""


@dataclass(frozen=True)
class Familiarity:
    """How unlike the training data one video is."""

    scores: np.ndarray
    """Unusualness of each snippet (see the module docstring; > ``snippet_threshold``: unusual)."""
    snippet_threshold: float
    video_threshold: float

    @property
    def unusual_fraction(self) -> float:
        """Fraction of the snippets beyond the snippet threshold."""
        return float(np.mean(self.scores > self.snippet_threshold)) if len(self.scores) else 0.0

    @property
    def unfamiliar(self) -> bool:
        """More than ``video_threshold`` of the snippets are unusual: the video is unlike the training data."""
        return self.unusual_fraction > self.video_threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (without the per-snippet scores)."""
        return {"available": True, "unfamiliar": self.unfamiliar, "unusual_fraction": self.unusual_fraction,
                "snippet_threshold": self.snippet_threshold, "video_threshold": self.video_threshold}


@dataclass(frozen=True)
class FeatureSummary:
    """Mean, principal directions, their variances, the residual variance (all of power-normalised features) and
    the two thresholds."""

    mean: np.ndarray
    components: np.ndarray
    """``(k, feature_dim)`` orthonormal rows."""
    variances: np.ndarray
    residual_variance: float
    snippet_threshold: float = float("inf")
    video_threshold: float = 1.0
    num_videos: int = 0
    num_snippets: int = 0

    @property
    def feature_dim(self) -> int:
        return len(self.mean)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Unusualness ``(n,)`` of snippet features ``(n, feature_dim)``."""
        centred = power_normalise(features) - self.mean
        if centred.ndim != 2 or centred.shape[1] != self.feature_dim:
            raise ValueError(f"features must have shape (snippets, {self.feature_dim}); got {centred.shape}.")
        projected = centred @ self.components.T
        residual = centred - projected @ self.components
        squared = (projected**2 / self.variances).sum(-1) + (residual**2).sum(-1) / self.residual_variance
        return np.sqrt(squared / self.feature_dim)

    def assess(self, features: np.ndarray) -> Familiarity:
        return Familiarity(self.scores(features), self.snippet_threshold, self.video_threshold)

    def to_dict(self) -> dict[str, Any]:
        """What ``config.feature_summary`` holds (JSON numbers, rounded)."""
        return {"mean": _round(self.mean), "components": _round(self.components), "variances": _round(self.variances),
                "residual_variance": _round(self.residual_variance), "snippet_threshold": self.snippet_threshold,
                "video_threshold": self.video_threshold, "num_videos": self.num_videos,
                "num_snippets": self.num_snippets, "snippet_quantile": SNIPPET_QUANTILE,
                "video_quantile": VIDEO_QUANTILE}

    @classmethod
    def from_dict(cls, data: dict[str, Any], feature_dim: int | None = None) -> FeatureSummary:
        """Read ``config.feature_summary``; a ``ValueError`` names what is missing or inconsistent."""
        missing = [key for key in ("mean", "components", "variances", "residual_variance", "snippet_threshold",
                                   "video_threshold") if data.get(key) is None]
        if missing:
            raise ValueError(f"feature_summary lacks {', '.join(missing)}; compute it again "
                             "(gestures_hub.model.familiarity.summarize_features).")
        mean, components = np.asarray(data["mean"], dtype=np.float64), np.asarray(data["components"], np.float64)
        variances = np.asarray(data["variances"], dtype=np.float64)
        if feature_dim is not None and len(mean) != feature_dim:
            raise ValueError(f"feature_summary has a {len(mean)}-d mean but the model has feature_dim={feature_dim}.")
        if components.ndim != 2 or components.shape != (len(variances), len(mean)):
            raise ValueError(f"feature_summary's components have shape {components.shape}; expected "
                             f"({len(variances)}, {len(mean)}).")
        if not (variances > 0).all() or not data["residual_variance"] > 0:
            raise ValueError("feature_summary's variances must be positive.")
        return cls(mean, components, variances, float(data["residual_variance"]), float(data["snippet_threshold"]),
                   float(data["video_threshold"]), int(data.get("num_videos", 0)), int(data.get("num_snippets", 0)))


def summarize_features(features: np.ndarray, lengths: np.ndarray, groups: np.ndarray, *,
                       keep: np.ndarray | None = None, num_components: int = NUM_COMPONENTS,
                       seed: int = 0) -> FeatureSummary:
    """The summary of training snippet features ``(total snippets, dim)``, video by video (``lengths``: snippets per
    video, in order), with each video's ``groups`` (its patient): half of the patients (a seeded draw) fit the
    basis, the other half set the thresholds. ``keep``: the videos to use (default: all)."""
    lengths, groups = np.asarray(lengths), np.asarray(groups)
    keep = np.ones(len(lengths), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    unique = np.unique(groups[keep])
    if len(unique) < 2:
        raise ValueError("Summarising the training features needs videos of at least 2 patients.")
    rng = np.random.default_rng(seed)
    held_out = set(rng.permutation(unique)[: len(unique) // 2].tolist())
    video_of = np.repeat(np.arange(len(lengths)), lengths)
    if len(video_of) != len(features):
        raise ValueError(f"The videos' lengths add up to {len(video_of)} snippets; there are {len(features)} features.")
    held = np.isin(groups, list(held_out))
    fit_rows = _subsample(np.flatnonzero((~held & keep)[video_of]), rng)
    summary = _gaussian(power_normalise(features[fit_rows]), num_components)
    summary = FeatureSummary.from_dict({**summary.to_dict()})  # the rounded numbers the config will hold
    held_rows = _subsample(np.flatnonzero((held & keep)[video_of]), rng)
    scores = summary.scores(features[held_rows])
    snippet_threshold = _round(float(np.quantile(scores, SNIPPET_QUANTILE)))
    held_videos = video_of[held_rows]
    fractions = [float(np.mean(scores[held_videos == video] > snippet_threshold)) for video in np.unique(held_videos)]
    video_threshold = _round(max(VIDEO_MARGIN * float(np.quantile(fractions, VIDEO_QUANTILE)), MIN_VIDEO_FRACTION))
    return FeatureSummary(summary.mean, summary.components, summary.variances, summary.residual_variance,
                          snippet_threshold, min(video_threshold, 1.0), int(keep.sum()), int(lengths[keep].sum()))


def assess(feature_summary: dict[str, Any] | None, features: np.ndarray) -> Familiarity | None:
    """:meth:`FeatureSummary.assess` of a config's ``feature_summary``; None when the model has none."""
    return None if feature_summary is None else FeatureSummary.from_dict(feature_summary).assess(features)


def power_normalise(features: np.ndarray) -> np.ndarray:
    """Signed square root of each feature, float64 (what the summary models)."""
    features = np.asarray(features, dtype=np.float64)
    return np.sign(features) * np.sqrt(np.abs(features))


def _gaussian(features: np.ndarray, num_components: int) -> FeatureSummary:
    mean = features.mean(0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(features - mean, rowvar=False))
    eigenvalues, eigenvectors = eigenvalues[::-1].clip(min=0), eigenvectors[:, ::-1]
    k = max(1, min(num_components, features.shape[1] - 1, len(features) - 1))
    floor = 1e-6 * max(float(eigenvalues.sum()), 1e-12)
    residual = float(eigenvalues[k:].mean()) if k < len(eigenvalues) else floor
    return FeatureSummary(mean, eigenvectors[:, :k].T.copy(), eigenvalues[:k].clip(min=floor), max(residual, floor))


def _subsample(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rows if len(rows) <= MAX_SNIPPETS else np.sort(rng.choice(rows, MAX_SNIPPETS, replace=False))


def _round(values: Any) -> Any:
    """Round to ``SIGNIFICANT_DIGITS`` significant digits: a float, or nested lists for an array."""
    if np.ndim(values) == 0:
        return float(f"{float(values):.{SIGNIFICANT_DIGITS}g}")
    return [_round(value) for value in np.asarray(values)]


__all__ = ["NOT_AVAILABLE", "UNAVAILABLE", "Familiarity", "FeatureSummary", "assess", "summarize_features"]
