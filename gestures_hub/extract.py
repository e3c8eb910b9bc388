"""``gestures extract``: videos listed in a manifest become a features dataset, one row per video.

Each video is streamed once by the model's video processor (:mod:`gestures_hub.model.video_processing_gestures`):
decoding runs in a background thread a few batches ahead of the encoder, so memory stays flat whatever the video's
length. Rows are written shard by shard,
atomically; a rerun skips the videos already written, and under ``accelerate launch`` the videos are split
across processes. A video that cannot be used is reported (``failures.csv`` and the summary) and never stops
the others.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .features import LABEL_NAMES, FeatureSettings, FeatureShardWriter, atomic_write
from .model import GesturesForVideoClassification, GesturesVideoProcessor
from .model.video_reader import VideoError, VideoWarning
from .presets import load_model

REQUIRED_COLUMNS = ("video", "patient", "seizure", "label")
OPTIONAL_COLUMNS = ("view", "onset_bilateral", "synthetic")
FAILURES_FILENAME = "failures.csv"
CNN_ENCODERS = ("r2plus1d_34", "r2plus1d_tiny", "r2plus1d_18", "r3d_18", "mc3_18")


@dataclass(frozen=True)
class ManifestRow:
    """One video to extract: ``video`` is the id written to the dataset, ``path`` where to read it."""

    video: str
    path: Path
    patient: str
    seizure: str
    label: str
    view: str = ""
    onset_bilateral: float | None = None
    synthetic: bool = False


@dataclass(frozen=True)
class Runtime:
    """How the encoder runs: device, autocast dtype (None: float32), memory format and batch size."""

    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool
    batch_size: int

    def describe(self) -> str:
        precision = "fp32" if self.dtype is None else str(self.dtype).removeprefix("torch.")
        layout = "channels_last_3d" if self.channels_last else "contiguous"
        return f"{self.device.type}, {precision}, {layout}, batch {self.batch_size}"


@dataclass
class ExtractionReport:
    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)
    damage: dict[str, dict[str, object]] = field(default_factory=dict)
    """Per damaged video, its :class:`~gestures_hub.model.video_reader.DecodeReport` as a dict."""
    video_seconds: float = 0.0
    damaged_shards: dict[str, str] = field(default_factory=dict)
    """Per shard found unreadable on resume (set aside, its videos extracted again), what was wrong."""


def read_manifest(path: str | Path, *, allow_outside_paths: bool = False) -> list[ManifestRow]:
    """Read and check a manifest CSV (UTF-8, with or without BOM; separated by commas, semicolons or tabs).

    Video paths are relative to the manifest's folder, and must stay inside it (symlinks and ``..`` resolved) unless
    ``allow_outside_paths``; the video id is the path relative to that folder (as written for outside paths).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Manifest {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"Manifest {path} is not UTF-8 text ({error}); save it as UTF-8 (Excel: CSV UTF-8).") from None
    reader = csv.DictReader(io.StringIO(text), delimiter=max(",;\t", key=text.partition("\n")[0].count))
    missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(
            f"Manifest {path} lacks the column(s) {', '.join(missing)} (its header has: "
            f"{', '.join(reader.fieldnames or []) or 'nothing'}); it needs {', '.join(REQUIRED_COLUMNS)} "
            f"(optional: {', '.join(OPTIONAL_COLUMNS)})."
        )
    folder = path.parent.resolve()
    rows = [_manifest_row(path, folder, number, record, allow_outside_paths)
            for number, record in enumerate(reader, start=2)]
    duplicates = sorted({row.video for row in rows if sum(other.video == row.video for other in rows) > 1})
    if duplicates:
        raise ValueError(f"Manifest {path} lists these videos more than once: {', '.join(duplicates)}.")
    return rows


def _manifest_row(
    manifest: Path, folder: Path, line: int, record: dict[str, str], allow_outside_paths: bool
) -> ManifestRow:
    def fail(message: str) -> ValueError:
        return ValueError(f"Manifest {manifest}, line {line}: {message}")

    values = {key: (record.get(key) or "").strip() for key in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)}
    for key in ("video", "patient", "seizure"):
        if not values[key]:
            raise fail(f"the '{key}' column is empty.")
    if values["label"] not in ("", *LABEL_NAMES):
        raise fail(f"label must be FOS, TCS or empty, got {values['label']!r}.")
    onset = None
    if values["onset_bilateral"]:
        try:
            onset = float(values["onset_bilateral"])
        except ValueError:
            raise fail(f"onset_bilateral must be a number of seconds, got {values['onset_bilateral']!r}.") from None
    video = Path(os.path.normpath(folder / values["video"]))  # absolute; ``..`` removed
    inside = video.is_relative_to(folder)
    if not (inside and video.resolve().is_relative_to(folder) or allow_outside_paths):
        raise fail(f"the video path {values['video']!r} leads outside the manifest's folder {folder} (to "
                   f"{video.resolve()}). Move the video into that folder, or allow such paths "
                   "(allow_outside_paths=True, --allow-outside-paths) if you trust the manifest.")
    return ManifestRow(
        video=video.relative_to(folder).as_posix() if inside else values["video"],
        path=video,
        patient=values["patient"],
        seizure=values["seizure"],
        label=values["label"],
        view=values["view"],
        onset_bilateral=onset,
        synthetic=values["synthetic"].lower() in ("1", "true", "yes"),
    )


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: CUDA GPUs with bf16, CPUs with AVX-512 BF16/AMX (elsewhere
    bfloat16 is emulated and far slower than float32)."""
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else torch.ops.mkldnn._is_mkldnn_bf16_supported()


def auto_precision(device: torch.device) -> str:
    """The fastest faithful autocast precision on ``device``: ``bf16`` where it is native (:func:`native_bf16`),
    ``fp16`` on other GPUs, else ``fp32``."""
    return "bf16" if native_bf16(device) else "fp16" if device.type == "cuda" else "fp32"


def choose_runtime(
    encoder: str, device: str | None = None, precision: str = "auto", batch_size: int | None = None
) -> Runtime:
    """The fastest faithful way to run ``encoder`` here, unless overridden.

    Autocast with :func:`auto_precision` (bfloat16 where the hardware computes it natively). CNN encoders use
    ``channels_last_3d``, faster on CPU. Batches: 32 snippets on a GPU; 1 on a CPU, where larger batches only
    add memory traffic (``benchmarks/extract.py`` compares them).
    """
    resolved = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if precision == "auto":
        precision = auto_precision(resolved)
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}.")
    default_batch = 32 if resolved.type == "cuda" else 1
    return Runtime(resolved, dtypes[precision], encoder in CNN_ENCODERS, batch_size or default_batch)


class SnippetEncoder:
    """Runs a model's encoder on batches of snippets with a :class:`Runtime`; returns float32 CPU features."""

    def __init__(self, model: GesturesForVideoClassification, runtime: Runtime) -> None:
        self.config = model.config
        self.processor = GesturesVideoProcessor(model.config)
        self.runtime = runtime
        self.model = model.gestures.to(runtime.device).eval()
        if runtime.channels_last:
            self.model.to(memory_format=torch.channels_last_3d)

    @torch.inference_mode()
    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        snippets = pixel_values.to(self.runtime.device, non_blocking=True)
        if self.runtime.channels_last:
            snippets = snippets.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(self.runtime.device.type, dtype=self.runtime.dtype, enabled=self.runtime.dtype is not None):
            features = self.model.encode_snippets(snippets)
        return features.float().cpu()

    def video(self, path: str | Path, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Features ``(n_snippets, feature_dim)`` and start times (s) of one whole video, read by the model's video
        processor."""
        features, starts = [], []
        for batch in self.processor.stream(path, stride=stride, batch_size=self.runtime.batch_size):
            features.append(self(batch.pixel_values))
            starts.append(batch.start_times)
        return torch.cat(features).numpy(), torch.cat(starts).numpy().astype(np.float32)


def extract(
    manifest: str | Path,
    model: str | Path,
    out: str | Path,
    *,
    weights: str | Path | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    precision: str = "auto",
    videos_per_shard: int = 8,
    progress: bool = True,
    allow_outside_paths: bool = False,
) -> ExtractionReport:
    """Extract the features of every video of ``manifest`` into the dataset folder ``out`` (resumable).

    ``allow_outside_paths``: accept video paths leading outside the manifest's folder (see :func:`read_manifest`).
    """
    from accelerate import PartialState

    rows = read_manifest(manifest, allow_outside_paths=allow_outside_paths)
    classifier, pretrained = load_model(model, weights=weights)
    config = classifier.config
    if config.encoder == "none":
        raise ValueError(f"Model {model!r} has no encoder (it takes precomputed features); pick one with an encoder.")
    state = PartialState(cpu=device == "cpu" or (device is None and not torch.cuda.is_available()))
    runtime = choose_runtime(config.encoder, device or str(state.device), precision, batch_size)
    if not pretrained and state.is_main_process:
        _warn_random_weights(model)
    settings = FeatureSettings(
        encoder=config.encoder,
        fps=config.fps,
        frames_per_snippet=config.frames_per_snippet,
        stride=stride or config.frames_per_snippet,
        feature_dim=config.feature_dim,
        image_size=config.image_size,
        geometry=config.frame_geometry,
        model=str(model) if weights is None else f"{model} + {Path(str(weights).split('#', 1)[0]).name}",
        pretrained=pretrained,
        synthetic=any(row.synthetic for row in rows),
    )
    encoder = SnippetEncoder(classifier, runtime)
    report = ExtractionReport()
    with state.main_process_first():  # the main process writes the settings and clears stale temporary files
        writer = FeatureShardWriter(
            out, settings, videos_per_shard, rank=state.process_index, world_size=state.num_processes
        )
    state.wait_for_everyone()  # every process has read which videos are done before any writes
    todo = [row for row in rows if row.video not in writer.done]
    report.skipped = [row.video for row in rows if row.video in writer.done]
    mine = todo[state.process_index :: state.num_processes]
    with writer:
        bar = tqdm(mine, desc=f"extract [{runtime.describe()}]", unit="video",
                   disable=not progress or not state.is_local_main_process)
        for row in bar:
            _extract_one(encoder, row, settings.stride, writer, report)
            bar.set_postfix(video_s=f"{report.video_seconds:.0f}")
    report = _gather(report, state)
    report.damaged_shards = writer.damaged  # only the main process checks the shards
    if state.is_main_process:
        write_failures(Path(out), report.failures)
    return report


def _extract_one(
    encoder: SnippetEncoder, row: ManifestRow, stride: int, writer: FeatureShardWriter, report: ExtractionReport
) -> None:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            features, starts = encoder.video(row.path, stride)
    except (VideoError, OSError, RuntimeError, ValueError) as error:
        report.failures[row.video] = str(error)
        return
    except MemoryError as error:
        report.failures[row.video] = str(VideoError(
            row.path, f"memory ran out while extracting it ({str(error) or type(error).__name__})",
            "Free memory (fewer parallel processes, a smaller --batch-size) and rerun: the videos written are skipped.",
        ))
        return
    if caught:
        report.warnings[row.video] = "; ".join(str(warning.message) for warning in caught)
    damage: list[str] = []
    for warning in caught:
        if isinstance(warning.message, VideoWarning) and warning.message.report is not None:
            report.damage[row.video] = asdict(warning.message.report)
            damage = warning.message.report.problems()
    duration = float(starts[-1]) + encoder.config.snippet_duration
    writer.add({
        "video": row.video,
        "patient": row.patient,
        "seizure": row.seizure,
        "view": row.view,
        "label": row.label,
        "duration": duration,
        "onset_bilateral": row.onset_bilateral,
        "damage": damage,
        "start_times": starts,
        "features": features,
    })
    report.extracted.append(row.video)
    report.video_seconds += duration


def _gather(report: ExtractionReport, state) -> ExtractionReport:
    """Merge the reports of every process (the skipped videos are the same everywhere)."""
    if state.num_processes == 1:
        return report
    from accelerate.utils import gather_object

    merged = ExtractionReport(skipped=report.skipped)
    for part in gather_object([report]):
        merged.extracted += part.extracted
        merged.failures |= part.failures
        merged.warnings |= part.warnings
        merged.damage |= part.damage
        merged.video_seconds += part.video_seconds
    return merged


def write_failures(out: Path, failures: dict[str, str]) -> None:
    """List the failed videos in ``failures.csv`` (removed when a run has none)."""
    path = out / FAILURES_FILENAME
    if not failures:
        path.unlink(missing_ok=True)
        return
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["video", "reason"], *sorted(failures.items())])
    atomic_write(path, lambda file: file.write(buffer.getvalue().encode()))


def _warn_random_weights(model: str | Path) -> None:
    bar = "!" * 100
    print(
        f"\n{bar}\nWARNING: the encoder of {str(model)!r} has RANDOM weights: no pretrained weights were loaded.\n"
        "The features will not mean anything; this is only useful for tests. Pass --weights FILE (e.g. an IG-65M\n"
        f"or torchvision Kinetics checkpoint) or a trained model folder / hub id.\n{bar}\n",
        file=sys.stderr,
        flush=True,
    )


def summarise(report: ExtractionReport, out: str | Path) -> str:
    lines = [
        f"Extracted {len(report.extracted)} video(s) ({report.video_seconds:.0f} s of video) into {out}; "
        f"{len(report.skipped)} already there; {len(report.failures)} failed."
    ]
    lines += [f"  DAMAGED shard {shard}: {problem}" for shard, problem in sorted(report.damaged_shards.items())]
    lines += [f"  WARNING {video}: {message}" for video, message in sorted(report.warnings.items())]
    lines += [f"  FAILED  {video}: {reason}" for video, reason in sorted(report.failures.items())]
    if report.failures:
        lines.append(f"The failures are listed in {Path(out) / FAILURES_FILENAME}; fix them and rerun to add them.")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    try:
        report = extract(
            args.manifest, args.model, args.out, weights=args.weights, stride=args.stride,
            batch_size=args.batch_size, device=args.device, precision=args.precision,
            videos_per_shard=args.videos_per_shard, progress=not args.quiet,
            allow_outside_paths=args.allow_outside_paths,
        )
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if PartialState().is_main_process:
        print(summarise(report, args.out))
    return 1 if report.failures else 0


def main(argv: list[str] | None = None) -> int:
    from .cli import run_command
    from .commands import standalone_parser

    return run_command(standalone_parser("extract", "gestures_hub.extract").parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["extract", "read_manifest", "choose_runtime", "native_bf16", "auto_precision", "write_failures",
           "SnippetEncoder", "Runtime", "ExtractionReport"]
