"""Timelines of a prediction: a CSV of per-snippet probabilities and a plot (matplotlib, Agg, no pyplot)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .model.pipeline_gestures import SPREAD_THRESHOLD

if TYPE_CHECKING:
    from .predict import Prediction


def write_timeline_csv(prediction: Prediction, path: str | Path) -> Path:
    """One row per snippet: ``start_time_s`` and the probability of each class (``p_<label>``); for a fold ensemble
    the members' standard deviation (``sd_<label>``); with a feature summary the snippet's ``unusualness`` and
    whether it is ``unusual`` (0/1). Comment lines (``#``) first name the video, the model, the label, whether the
    probabilities are calibrated, whether the video is like the training data and, for demo models, the notice (read
    with ``pandas.read_csv(path, comment="#")``)."""
    from .predict import familiarity_text

    path = Path(path)
    labels = list(prediction.probabilities)
    with path.open("w", newline="") as file:
        file.write(f"# video: {prediction.video}\n# model: {prediction.model}\n# label: {prediction.label}\n")
        if prediction.calibrated:
            file.write(f"# calibrated: temperature {prediction.temperature:g}\n")
        if prediction.member_probabilities is not None:
            file.write(f"# fold ensemble of {len(prediction.member_probabilities)} models: sd_* is their spread\n")
        if (familiar := familiarity_text(prediction)) is not None:
            file.write(f"# {familiar}\n")
        if prediction.notice:
            file.write(f"# {prediction.notice}\n")
        for problem in prediction.damage:
            file.write(f"# damaged video: {problem}\n")
        writer = csv.writer(file)
        ensemble, unusual = prediction.snippet_std is not None, prediction.unusual is not None
        writer.writerow(["start_time_s", *(f"p_{label}" for label in labels),
                         *((f"sd_{label}" for label in labels) if ensemble else ()),
                         *(("unusualness", "unusual") if unusual else ())])
        for time, row in zip(prediction.times, prediction.rows(), strict=True):
            writer.writerow([f"{time:.3f}", *(f"{row[label]:.5f}" for label in labels),
                             *((f"{row[f'{label}_std']:.5f}" for label in labels) if ensemble else ()),
                             *((f"{row['unusualness']:.4f}", int(row["unusual"])) if unusual else ())])
    return path


def plot_timeline(prediction: Prediction, path: str | Path | None = None) -> Figure:
    """TCS probability of each snippet over time, the spread threshold, the detected spread and, when known, the true
    spread; the title gives the label and class probabilities (and the true label). The legend sits beside the axes,
    never over the curve. Demo models carry their notice in red, and a synthetic video or a model with random weights
    says so on the figure itself. A fold ensemble's spread across its members is a band around the curve; snippets
    unlike the training data are marked along the bottom, and a video unlike it says so in red. Saved as PNG when
    ``path`` is given."""
    figure = Figure(figsize=(11, 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    labels = list(prediction.probabilities)
    positive = "TCS" if "TCS" in labels else labels[-1]
    times, curve = prediction.times, prediction.snippet_probabilities[:, labels.index(positive)]
    if len(times):  # each snippet's value holds until the next one starts; the last one for one more step
        step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        times, curve = np.append(times, times[-1] + step), np.append(curve, curve[-1])
    axes.plot(times, curve, color="tab:red", drawstyle="steps-post", label=f"P({positive}) per snippet")
    if prediction.snippet_std is not None:
        spread = prediction.snippet_std[:, labels.index(positive)]
        spread = np.append(spread, spread[-1:]) if len(spread) else spread
        axes.fill_between(times, (curve - spread).clip(0, 1), (curve + spread).clip(0, 1), step="post",
                          color="tab:red", alpha=0.2, linewidth=0,
                          label=f"± 1 SD across {len(prediction.member_probabilities)} fold models")
    unusual = prediction.unusual
    if unusual is not None and unusual.any():
        step = float(np.median(np.diff(prediction.times))) if len(prediction.times) > 1 else 0.0
        for first, start in enumerate(prediction.times[unusual]):
            axes.axvspan(start, start + step, ymin=0, ymax=0.04, color="darkorange", linewidth=0,
                         label=None if first else "unusual snippet (unlike the training data)")
    axes.axhline(SPREAD_THRESHOLD, color="grey", linestyle="--", linewidth=1,
                 label=f"spread threshold ({SPREAD_THRESHOLD:g})")
    if prediction.spread_time is not None:
        axes.axvline(prediction.spread_time, color="black", linewidth=1.5,
                     label=f"detected spread {prediction.spread_time:.1f} s")
    if prediction.true_onset is not None:
        axes.axvline(prediction.true_onset, color="tab:green", linestyle=":", linewidth=2,
                     label=f"true spread {prediction.true_onset:.1f} s")
    axes.set(xlim=(0, max(prediction.duration, float(np.max(prediction.times, initial=0)))), ylim=(-0.02, 1.02),
             xlabel="time (s)", ylabel=f"P({positive})")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", borderaxespad=0)
    probabilities = ", ".join(f"{name} {p:.2f}" for name, p in prediction.probabilities.items())
    if prediction.calibrated:
        probabilities += f"; calibrated, T={prediction.temperature:.3g}"
    truth = "" if prediction.true_label is None else f"; truth: {prediction.true_label}"
    axes.set_title(f"{Path(prediction.video).name}: {prediction.label} ({probabilities}){truth}", fontsize="medium")
    familiarity = prediction.familiarity or {}
    marks = [text for flag, text in ((prediction.notice, prediction.notice),
                                     (prediction.unfamiliar,
                                      f"UNLIKE THE TRAINING DATA: {familiarity.get('unusual_fraction', 0):.0%} of "
                                      "snippets unusual; this prediction may mean nothing"),
                                     (prediction.random_weights, "RANDOM WEIGHTS: this prediction means nothing"),
                                     (prediction.synthetic_video, "SYNTHETIC VIDEO (not patient data)"),
                                     (prediction.damage, "DAMAGED VIDEO: " + "; ".join(prediction.damage)))
             if flag]
    if marks:
        figure.suptitle("\n".join(marks), color="red", fontweight="bold")
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure
