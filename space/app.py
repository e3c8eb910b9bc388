"""GESTURES demo Space: classify a whole seizure video as FOS or TCS and show a per-snippet timeline.

Settings (environment variables):

* ``GESTURES_MODEL``: Hub id or local folder of a GESTURES video model (default: the embedded demo model,
  trained on synthetic videos only);
* ``GESTURES_MAX_MB`` (default 200) and ``GESTURES_MAX_MINUTES`` (default 10): upload limits;
* ``GESTURES_SPACE_TMP``: scratch folder (default ``<system temp>/gestures-space``) holding gradio's upload
  cache (``GRADIO_TEMP_DIR``, unless set) and the rendered synthetic examples;
* ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``: where ``python app.py`` serves (read by gradio).

Uploads are deleted as soon as their request ends; gradio's cache is also swept every few minutes and
wiped when the server stops.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

SPACE_TMP = Path(os.environ.get("GESTURES_SPACE_TMP") or Path(tempfile.gettempdir()) / "gestures-space")
os.environ.setdefault("GRADIO_TEMP_DIR", str(SPACE_TMP / "gradio"))  # gradio reads it at import time

import gradio as gr  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gestures_hub.model import GesturesVideoClassificationPipeline  # noqa: E402
from gestures_hub.model.video_reader import VideoError, probe_video  # noqa: E402
from gestures_hub.predict import Prediction, load_predictor, predict_video, video_pipeline  # noqa: E402
from gestures_hub.synthetic import SeizureSpec, render_video, sample_cohort  # noqa: E402
from gestures_hub.timeline import plot_timeline  # noqa: E402

logger = logging.getLogger("gestures-space")
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request

CACHE_SWEEP = (300, 900)
"""gradio ``delete_cache``: every 5 minutes, delete cached files older than 15 minutes."""
EXAMPLES_SEED = 2024
DEMO_NOTICE = (
    "**DEMO model:** trained on *synthetic* videos only, to show how the pipeline works. "
    "Its output says nothing about real seizures. Not a medical device; not for clinical use."
)


ENCODER_NAMES = {"r2plus1d_34": "R(2+1)D-34 (IG-65M + Kinetics)", "r2plus1d_tiny": "compact R(2+1)D",
                 "r2plus1d_18": "R(2+1)D-18 (Kinetics)", "r3d_18": "R3D-18", "mc3_18": "MC3-18", "videomae": "VideoMAE"}


@dataclass(frozen=True)
class Predictor:
    """A loaded model's pipeline with the model's description, run on CPU; calling it classifies one video."""

    pipeline: GesturesVideoClassificationPipeline
    description: str
    pretrained: bool

    @classmethod
    def load(cls, spec: str | None = None) -> Predictor:
        """Load a Hub id or folder (None: the embedded demo model)."""
        model, description, pretrained = load_predictor(spec)
        return cls(video_pipeline(model, device="cpu"), description, pretrained)

    @property
    def demo(self) -> bool:
        """Trained on synthetic data, as the model's config says."""
        return bool(self.pipeline.model.config.trained_on_synthetic_data)

    @property
    def name(self) -> str:
        """What the model is, in words: architecture and training data (not where it is stored)."""
        config = self.pipeline.model.config
        what = (f"{ENCODER_NAMES.get(config.encoder, config.encoder)} encoder, {config.aggregation.upper()} "
                f"aggregator, {config.image_size}x{config.image_size} frames at {config.fps:g} fps")
        if self.demo:
            return f"GESTURES demo model ({what}), trained on synthetic videos only"
        origin = "" if not self.description else f" from {self.description}"
        return f"GESTURES model ({what}){origin}"

    def __call__(self, path: str, truth: SeizureSpec | None = None) -> Prediction:
        return predict_video(self.pipeline, path, description=self.name, pretrained=self.pretrained,
                             true_label=truth.label if truth else None,
                             true_onset=truth.onset_bilateral if truth else None)


@dataclass(frozen=True)
class Limits:
    """What the Space accepts."""

    max_mb: float = 200.0
    max_minutes: float = 10.0

    @classmethod
    def from_env(cls) -> Limits:
        """Read ``GESTURES_MAX_MB`` and ``GESTURES_MAX_MINUTES`` (unset: the defaults)."""
        return cls(
            max_mb=float(os.environ.get("GESTURES_MAX_MB") or cls.max_mb),
            max_minutes=float(os.environ.get("GESTURES_MAX_MINUTES") or cls.max_minutes),
        )


def user_error(message: str, title: str) -> gr.Error:
    """An error the user can act on: shown with its own title, logged as one line (no traceback in the log)."""
    logger.warning("user error: %s: %s", title, message)
    return gr.Error(message, title=title, print_exception=False)


def unreadable(error: VideoError) -> gr.Error:
    """The error shown for a video that cannot be read, naming the file but not where the server keeps it."""
    message = f"{error.problem}. {error.advice}".replace(error.path, Path(error.path).name)
    return user_error(message, title="Cannot read this video")


def check_video(path: str, limits: Limits) -> float:
    """Return the duration (s) of the video at ``path``, raising ``gr.Error`` if it is unusable or too big."""
    size_mb = os.path.getsize(path) / 1e6
    if size_mb > limits.max_mb:
        raise user_error(f"The file is {size_mb:.1f} MB; this Space accepts videos up to {limits.max_mb:g} MB. "
                         "Trim or compress the video and try again.", title="Video too large")
    try:
        duration = probe_video(path).duration
    except VideoError as error:
        raise unreadable(error) from error
    if duration > limits.max_minutes * 60:
        raise user_error(f"The video lasts {duration / 60:.1f} min; this Space accepts videos up to "
                         f"{limits.max_minutes:g} min. Trim it and try again.", title="Video too long")
    return duration


def discard_upload(path: str, keep: Collection[str] = ()) -> None:
    """Delete an uploaded file (and its folder, if left empty) from gradio's cache; never touch ``keep``."""
    file = Path(path).resolve()
    cache = Path(os.environ["GRADIO_TEMP_DIR"]).resolve()
    if str(file) in {str(Path(k).resolve()) for k in keep} or not file.is_relative_to(cache):
        return
    file.unlink(missing_ok=True)
    if file.parent != cache and not any(file.parent.iterdir()):
        file.parent.rmdir()


def summary(prediction: Prediction, seconds: float) -> str:
    """Markdown describing the result (and the ground truth of a synthetic example) and how long it took."""
    confidence = prediction.probabilities[prediction.label]
    lines = [f"### Prediction: {prediction.label} ({confidence:.0%})"]
    if prediction.spread_time is not None:
        lines.append(f"Bilateral spread detected at **{prediction.spread_time:.1f} s**.")
    if prediction.damage:
        lines.append(f"⚠️ **Damaged video:** {'; '.join(prediction.damage)}. The result covers what could be decoded.")
    if prediction.true_label is not None:
        spread = "" if prediction.true_onset is None else f", spread at {prediction.true_onset:.1f} s"
        lines.append(f"Ground truth of this synthetic example: **{prediction.true_label}**{spread}.")
    lines.append(f"Analysed {prediction.duration:.1f} s of video ({len(prediction.times)} snippets) "
                 f"in **{seconds:.1f} s** on CPU. Model: {prediction.model}.")
    if prediction.demo:
        lines.append(DEMO_NOTICE)
    return "\n\n".join(lines)


def analyse(predictor: Predictor, video_path: str | None, progress: gr.Progress, limits: Limits,
            examples: dict[str, SeizureSpec] | None = None) -> tuple[dict[str, float], Figure, str]:
    """Check and classify one video: returns the label confidences, the timeline figure and a summary. ``examples``
    maps the file names of the synthetic examples to their ground truth."""
    if not video_path:
        raise user_error("Upload a video or pick an example first.", title="No video")
    start = time.perf_counter()
    progress(0.0, desc="Checking the video")
    check_video(video_path, limits)
    progress(0.1, desc="Running the model")
    try:
        prediction = predictor(video_path, (examples or {}).get(Path(video_path).name))
    except VideoError as error:
        raise unreadable(error) from error
    progress(0.95, desc="Drawing the timeline")
    figure = plot_timeline(prediction)
    return prediction.probabilities, figure, summary(prediction, time.perf_counter() - start)


def example_videos(folder: Path, seed: int = EXAMPLES_SEED) -> dict[Path, SeizureSpec]:
    """Render (once) one short synthetic FOS and one TCS video (as the demo model saw in training) into ``folder``;
    returns each video with its ground truth."""
    specs = sample_cohort(3, seed, min_duration=12.0, max_duration=20.0, fps=15, size=(160, 120))
    chosen: dict[str, SeizureSpec] = {}
    for spec in specs:
        chosen.setdefault(spec.label, spec)
    videos = {}
    for label, spec in sorted(chosen.items()):
        path = folder / f"synthetic_{label}_{spec.patient}_{spec.seizure}.mp4"
        videos[path if path.exists() else render_video(spec, path)] = spec
    return videos


def caption(spec: SeizureSpec) -> str:
    """An example's caption: its ground truth."""
    spread = "" if spec.onset_bilateral is None else f", spreads at {spec.onset_bilateral:.1f} s"
    return f"Synthetic {spec.label} ({spec.duration:.0f} s{spread})"


def build_demo(model_spec: str | None = None, limits: Limits | None = None) -> gr.Blocks:
    """The Space's user interface, with the model loaded and the examples rendered."""
    limits = limits or Limits.from_env()
    predictor = Predictor.load(model_spec)
    examples = example_videos(SPACE_TMP / "examples")
    with gr.Blocks(title="GESTURES seizure video classifier", delete_cache=CACHE_SWEEP) as demo:
        gr.Markdown("# GESTURES: seizure video classification (FOS vs TCS)\n"
                    "Upload a video of a seizure (or pick a synthetic example) to classify it as a focal onset "
                    "seizure (**FOS**) or a focal to bilateral tonic-clonic seizure (**TCS**), with the "
                    f"probability of TCS over time. Limits: {limits.max_mb:g} MB, {limits.max_minutes:g} min. "
                    "Videos are deleted as soon as they have been analysed.")
        gr.Markdown(f"Model: {predictor.name}", elem_id="model")
        if predictor.demo:
            gr.Markdown(f"⚠️ {DEMO_NOTICE}", elem_id="demo-notice")
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Seizure video", sources=["upload"])
                button = gr.Button("Analyse", variant="primary")
                gr.Examples([[str(path)] for path in examples], inputs=[video],
                            label="Synthetic examples (ground truth)",
                            example_labels=[caption(spec) for spec in examples.values()])
            with gr.Column():
                label = gr.Label(label="Classification", num_top_classes=2, elem_id="label")
                plot = gr.Plot(label="Timeline", elem_id="timeline")
                details = gr.Markdown(elem_id="details")

        def run(video_path: str | None, progress: gr.Progress = gr.Progress(track_tqdm=True)):  # noqa: B008
            try:
                return analyse(predictor, video_path, progress, limits, {path.name: spec for path, spec in
                                                                         examples.items()})
            finally:
                if video_path:
                    discard_upload(video_path, keep=video.keep_in_cache)

        button.click(run, inputs=[video], outputs=[label, plot, details], api_name="analyse")
    demo.queue(default_concurrency_limit=1, max_size=16)
    return demo


if __name__ == "__main__":
    build_demo(os.environ.get("GESTURES_MODEL") or None).launch()
