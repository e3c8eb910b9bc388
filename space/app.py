"""GESTURES demo Space: classify a whole seizure video as FOS or TCS and show a per-snippet timeline.

Settings (environment variables):

* ``GESTURES_MODEL``: Hub id or local folder of a GESTURES video model (default: the embedded demo model,
  trained on synthetic videos only);
* ``GESTURES_MAX_MB`` (default 200) and ``GESTURES_MAX_MINUTES`` (default 10): upload limits;
* ``GESTURES_MAX_WAITING`` (default 16): requests that may wait in the queue; more are refused as busy;
* ``GESTURES_SPACE_TMP``: scratch folder holding gradio's upload cache (``GRADIO_TEMP_DIR``, unless set) and
  the rendered synthetic examples (default: a private folder of this server, ``<system temp>/gestures-space-*``);
* ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``: where ``python app.py`` serves (read by gradio).

gradio stores uploads by content hash, so identical uploads share one path; each upload is therefore given a
private hard link of its own (``PrivateUploads``), which its request deletes when it ends, and the shared path
is removed as soon as no upload is being received. A request the queue refuses has its upload deleted too
(``UploadGuard``); SIGINT and SIGTERM stop the server within seconds and remove the scratch folder's contents.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRATCH_GIVEN = bool(os.environ.get("GESTURES_SPACE_TMP"))
SPACE_TMP = Path(os.environ.get("GESTURES_SPACE_TMP") or tempfile.mkdtemp(prefix="gestures-space-")).resolve()
"""This server's scratch folder: ``GESTURES_SPACE_TMP``, or else a fresh private (0700) one, so that two servers on
one machine never share uploads."""
os.environ.setdefault("GRADIO_TEMP_DIR", str(SPACE_TMP / "gradio"))  # gradio reads it at import time

import gradio as gr  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.types import ASGIApp, Message, Receive, Scope, Send  # noqa: E402

from gestures_hub.model import GesturesVideoClassificationPipeline  # noqa: E402
from gestures_hub.model.video_reader import VideoError, probe_video  # noqa: E402
from gestures_hub.predict import (  # noqa: E402
    Prediction,
    familiarity_text,
    load_predictor,
    predict_video,
    video_pipeline,
)
from gestures_hub.synthetic import SeizureSpec, sample_cohort  # noqa: E402
from gestures_hub.synthetic_render import render_video  # noqa: E402
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
    max_waiting: int = 16
    """Requests that may wait in the queue (one runs at a time); gradio refuses more as busy."""

    @classmethod
    def from_env(cls) -> Limits:
        """Read ``GESTURES_MAX_MB``, ``GESTURES_MAX_MINUTES`` and ``GESTURES_MAX_WAITING`` (unset: the defaults)."""
        return cls(
            max_mb=float(os.environ.get("GESTURES_MAX_MB") or cls.max_mb),
            max_minutes=float(os.environ.get("GESTURES_MAX_MINUTES") or cls.max_minutes),
            max_waiting=int(os.environ.get("GESTURES_MAX_WAITING") or cls.max_waiting),
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


class PrivateUploads:
    """Each upload's own path, so that identical uploads never delete each other's file.

    gradio stores an upload at ``<cache>/<content hash>/<name>``: two users (or one, twice) sending the same video
    get one shared path, and the first request to end would delete it under the others. Right after gradio has
    stored an upload, ``private`` hard-links it to a fresh folder of its own under ``root`` (inside gradio's cache,
    where gradio accepts inputs) and retires the shared path, which is deleted as soon as no upload is being
    received (while one is, gradio may be about to hand out that same path again). A request deletes only its
    own private path (``discard``). Private paths are recorded in ``record`` (gradio's upload set), so gradio's
    ``delete_cache`` sweep also covers requests that were queued and then abandoned."""

    def __init__(self, cache: Path, keep: Collection[str], record: set[str]) -> None:
        cache.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="private-", dir=cache)).resolve()
        self.keep = keep
        """Paths never deleted (the examples' cached copies: an upload of an example's content lands on them)."""
        self.record = record
        self._lock = threading.Lock()
        self._receiving = 0
        self._retired: set[Path] = set()

    @contextmanager
    def receiving(self) -> Iterator[None]:
        """Around each upload request: retired shared paths are deleted when none is being received."""
        with self._lock:
            self._receiving += 1
        try:
            yield
        finally:
            with self._lock:
                self._receiving -= 1
                if not self._receiving:
                    self._delete_retired()

    def private(self, shared: str) -> str:
        """Hard-link the upload gradio just stored at ``shared`` to a path of its own; retire ``shared``."""
        with self._lock:
            private = Path(tempfile.mkdtemp(dir=self.root)) / Path(shared).name
            os.link(shared, private)
            self._retired.add(Path(shared).resolve())
            self.record.add(str(private))
        return str(private)

    def discard(self, path: str) -> None:
        """Delete a private upload and its folder; any other path (an example, a shared path) is left alone."""
        file = Path(path).resolve()
        if file.parent.parent != self.root:
            return
        file.unlink(missing_ok=True)
        with suppress(OSError):
            file.parent.rmdir()

    def _delete_retired(self) -> None:
        keep = {Path(path).resolve() for path in self.keep}
        for shared in self._retired - keep:
            shared.unlink(missing_ok=True)
            with suppress(OSError):  # still holds another file
                shared.parent.rmdir()
        self._retired.clear()


def file_paths(value: Any) -> Iterator[str]:
    """The ``path`` of every file in a request's JSON (gradio's ``FileData`` objects, however nested)."""
    if isinstance(value, dict):
        if isinstance(value.get("path"), str):
            yield value["path"]
        for item in value.values():
            yield from file_paths(item)
    elif isinstance(value, list):
        for item in value:
            yield from file_paths(item)


class UploadGuard:
    """ASGI middleware around gradio's routes: answers ``/upload`` with private paths (``PrivateUploads``), and
    deletes the uploads named by a ``/queue/join`` or ``/call/`` request that gradio does not queue (e.g. "Queue is
    full"), which no request would otherwise ever delete."""

    def __init__(self, app: ASGIApp, uploads: PrivateUploads) -> None:
        self.app = app
        self.uploads = uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope["path"] if scope["type"] == "http" and scope["method"] == "POST" else ""
        if route.endswith("/gradio_api/upload"):
            with self.uploads.receiving():
                await self._upload(scope, receive, send)
        elif route.endswith("/gradio_api/queue/join") or "/gradio_api/call/" in route:
            await self._join(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message = {}
        body = bytearray()

        async def hold(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                body.extend(message.get("body", b""))

        await self.app(scope, receive, hold)
        if start["status"] == 200:
            body = bytearray(json.dumps([self.uploads.private(path) for path in json.loads(body)]).encode())
            start["headers"] = [(key, value) for key, value in start["headers"] if key.lower() != b"content-length"]
            start["headers"].append((b"content-length", str(len(body)).encode()))
        await send(start)
        await send({"type": "http.response.body", "body": bytes(body)})

    async def _join(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = bytearray()
        status = 0

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def read() -> Message:
            message = await receive()
            request.extend(message.get("body", b""))
            return message

        try:
            await self.app(scope, read, record)
        finally:
            if status != 200:  # not queued: no request will delete these uploads
                with suppress(ValueError):
                    for path in file_paths(json.loads(request)):
                        self.uploads.discard(path)


def summary(prediction: Prediction, seconds: float) -> str:
    """Markdown describing the result (and the ground truth of a synthetic example) and how long it took."""
    confidence = prediction.probabilities[prediction.label]
    lines = [f"### Prediction: {prediction.label} ({confidence:.0%})"]
    if prediction.unfamiliar:
        lines.append(f"⚠️ **{familiarity_text(prediction)}.** The model has not seen videos like this one.")
    if prediction.probability_std is not None:
        lines.append(f"Mean of {len(prediction.member_probabilities)} fold models: ± "
                     f"{prediction.probability_std[prediction.label]:.0%} (SD) across them.")
    if prediction.calibrated:
        lines.append(f"Probabilities calibrated (temperature {prediction.temperature:.3g}, fitted on the training "
                     "run's out-of-fold predictions).")
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
    if not os.path.isfile(video_path):
        raise user_error("This video is no longer on the server: each upload is deleted once it has been analysed. "
                         "Upload it again.", title="Video no longer here")
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


@dataclass(frozen=True)
class Space:
    """The user interface and the private uploads it deletes."""

    demo: gr.Blocks
    uploads: PrivateUploads


def build_demo(model_spec: str | None = None, limits: Limits | None = None) -> Space:
    """The Space's user interface, with the model loaded and the examples rendered."""
    limits = limits or Limits.from_env()
    predictor = Predictor.load(model_spec)
    examples = example_videos(SPACE_TMP / "examples")
    with gr.Blocks(title="GESTURES seizure video classifier", delete_cache=CACHE_SWEEP) as demo:
        gr.Markdown("# GESTURES: seizure video classification (FOS vs TCS)\n"
                    "Upload a video of a seizure (or pick a synthetic example) to classify it as a focal onset "
                    "seizure (**FOS**) or a focal to bilateral tonic-clonic seizure (**TCS**), with the "
                    f"probability of TCS over time. Limits: {limits.max_mb:g} MB, {limits.max_minutes:g} min. "
                    "Videos are deleted as soon as they have been analysed. Videos are analysed one at a time, "
                    f"with up to {limits.max_waiting} waiting; when the Space is busy, try again in a minute.")
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
        uploads = PrivateUploads(Path(os.environ["GRADIO_TEMP_DIR"]), keep=video.keep_in_cache,
                                 record=demo.upload_file_set)

        def run(video_path: str | None, progress: gr.Progress = gr.Progress(track_tqdm=True)):  # noqa: B008
            try:
                return analyse(predictor, video_path, progress, limits, {path.name: spec for path, spec in
                                                                         examples.items()})
            finally:
                if video_path:
                    uploads.discard(video_path)

        button.click(run, inputs=[video], outputs=[label, plot, details], api_name="analyse")
    demo.queue(default_concurrency_limit=1, max_size=limits.max_waiting)
    return Space(demo, uploads)


STOP_TIMEOUT = 2.0
"""Seconds a stopping server waits for gradio to close before it removes its files and exits regardless."""


def remove_scratch(uploads: PrivateUploads) -> None:
    """Delete everything this server stored: its private uploads, every upload gradio recorded, gradio's cache and
    the examples if they are in the scratch folder, and the scratch folder itself unless it was given."""
    shutil.rmtree(uploads.root, ignore_errors=True)
    for path in list(uploads.record):
        Path(path).unlink(missing_ok=True)
    for folder in (SPACE_TMP / "gradio", SPACE_TMP / "examples"):
        shutil.rmtree(folder, ignore_errors=True)
    if not SCRATCH_GIVEN:
        shutil.rmtree(SPACE_TMP, ignore_errors=True)


def serve(space: Space) -> None:
    """Serve until SIGINT or SIGTERM; then close gradio (waiting at most ``STOP_TIMEOUT``), remove the scratch
    folder's contents and exit with ``os._exit``: a running analysis is not waited for (it runs in one of AnyIO's
    worker threads, which cannot be interrupted and, not being daemons, would hold the process until it ends)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    logger.info("scratch folder: %s", SPACE_TMP)
    space.demo.launch(prevent_thread_lock=True,
                      app_kwargs={"middleware": [Middleware(UploadGuard, uploads=space.uploads)]})
    stop.wait()
    logger.info("stopping: closing the server and removing %s", SPACE_TMP if not SCRATCH_GIVEN else
                f"the uploads, gradio's cache and the examples in {SPACE_TMP}")
    closing = threading.Thread(target=space.demo.close, daemon=True)
    closing.start()
    closing.join(STOP_TIMEOUT)
    remove_scratch(space.uploads)
    logger.info("stopped")
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    serve(build_demo(os.environ.get("GESTURES_MODEL") or None))
