"""``gestures extract``: videos listed in a manifest become a features dataset, one row per video.

Each video is streamed once by the model's video processor (:mod:`gestures_hub.model.video_processing_gestures`):
decoding runs in a background thread a few batches ahead of the encoder, so memory stays flat whatever the video's
length; with ``decode_workers`` (automatic on a GPU) decoder processes feed the encoder instead, long videos split
into time ranges decoded in parallel (:mod:`gestures_hub.decode_workers`), with identical features. Rows are written
shard by shard, atomically; a rerun skips the videos already written, and under ``accelerate launch`` the videos are
split across processes, a video longer than an even share of the work by its time ranges
(:mod:`gestures_hub.rank_split`). A video that cannot be used is reported (``failures.csv`` and the summary) and never
stops the others.
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

from .decode_workers import (
    DecodePool,
    DecodeSettings,
    auto_decode_workers,
    auto_range_seconds,
    chunk_snippets_for,
    failure_message,
)
from .features import LABEL_NAMES, FeatureSettings, FeatureShardWriter, atomic_write
from .model.video_reader import DecodeReport, VideoError, VideoWarning, probe_video
from .presets import load_model
from .rank_split import RankPlan, clear_parts, extract_parts, join_parts, plan_ranks
from .snippet_encoder import SnippetEncoder, choose_runtime
from .torchcodec_decode import choose_decoder

REQUIRED_COLUMNS = ("video", "patient", "seizure", "label")
OPTIONAL_COLUMNS = ("view", "onset_bilateral", "synthetic")
FAILURES_FILENAME = "failures.csv"


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
    split: dict[str, int] = field(default_factory=dict)
    """Per long video split across processes (``accelerate launch``) and joined, into how many parts."""
    decoder: str = ""
    """Which decoder read the videos, and why (:func:`~gestures_hub.torchcodec_decode.choose_decoder`)."""


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
    compile: str = "auto",
    videos_per_shard: int = 8,
    progress: bool = True,
    allow_outside_paths: bool = False,
    decode_workers: int | None = None,
    range_seconds: float | None = None,
    decoder: str = "auto",
) -> ExtractionReport:
    """Extract the features of every video of ``manifest`` into the dataset folder ``out`` (resumable).

    ``compile``: ``torch.compile`` the encoder (``auto``: on CUDA only,
    :func:`~gestures_hub.snippet_encoder.auto_compile`).
    ``allow_outside_paths``: accept video paths leading outside the manifest's folder (see :func:`read_manifest`).
    ``decode_workers``: decoder processes (None: :func:`~gestures_hub.decode_workers.auto_decode_workers`; 0: decode
    in a thread of this process). ``range_seconds``: with workers, split videos into ranges of about that many
    seconds decoded in parallel (None: automatic, :func:`~gestures_hub.decode_workers.auto_range_seconds`).
    ``decoder``: ``auto``, ``pyav`` or ``torchcodec`` (:func:`~gestures_hub.torchcodec_decode.choose_decoder`, checked
    on the manifest's first video); torchcodec decodes in this process, on the encoder's device.
    """
    from accelerate import PartialState

    rows = read_manifest(manifest, allow_outside_paths=allow_outside_paths)
    classifier, pretrained = load_model(model, weights=weights)
    config = classifier.config
    if config.encoder == "none":
        raise ValueError(f"Model {model!r} has no encoder (it takes precomputed features); pick one with an encoder.")
    state = PartialState(cpu=device == "cpu" or (device is None and not torch.cuda.is_available()))
    runtime = choose_runtime(config.encoder, device or str(state.device), precision, batch_size, compile)
    if decode_workers is not None and decode_workers < 0:
        raise ValueError(f"decode_workers must be >= 0 (0: decode in this process), got {decode_workers}.")
    decoder, why = choose_decoder(decoder, runtime.device, rows[0].path if rows else None, fps=config.fps,
                                  size=config.image_size, geometry=config.frame_geometry, decode_workers=decode_workers)
    if state.is_main_process:
        print(f"gestures extract: decoder {decoder} ({why})", file=sys.stderr, flush=True)
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
    encoder = SnippetEncoder(classifier, runtime, decoder)
    if batch_size is None:
        encoder.fit_batch_to_memory()
    report = ExtractionReport(decoder=f"{decoder}: {why}")
    with state.main_process_first():  # the main process writes the settings and clears stale temporary files
        writer = FeatureShardWriter(
            out, settings, videos_per_shard, rank=state.process_index, world_size=state.num_processes
        )
        if state.is_main_process:
            clear_parts(Path(out))
    state.wait_for_everyone()  # every process has read which videos are done before any writes
    todo = [row for row in rows if row.video not in writer.done]
    report.skipped = [row.video for row in rows if row.video in writer.done]
    decode = DecodeSettings(config.fps, config.image_size, config.frame_geometry, config.frames_per_snippet,
                            settings.stride, chunk_snippets_for(encoder.runtime.batch_size, settings.stride))
    workers = 0 if decoder == "torchcodec" else auto_decode_workers(
        runtime.device, decode.chunk_frames * config.image_size ** 2 * 3) if decode_workers is None else decode_workers
    durations = [_duration(row) for row in todo] if state.num_processes > 1 else [None] * len(todo)
    plan = plan_ranks(durations, decode, state.process_index, state.num_processes, workers)
    mine = [todo[index] for index in plan.whole]
    with writer:
        decoders = f"{workers} decoders" if decoder == "pyav" else f"{decoder} decoder"
        bar = tqdm(total=len(mine) + len(plan.parts), unit="video", disable=not progress or not
                   state.is_local_main_process, desc=f"extract [{encoder.runtime.describe()}, {decoders}]")
        if plan.split:  # first, so that the processes wait for each other only as long as their parts differ
            _extract_split(encoder, todo, plan, workers, decode, Path(out), writer, report, bar, state)
        if workers:
            _extract_with_workers(encoder, mine, decode, workers, range_seconds, writer, report, bar)
        for row in mine if not workers else ():
            _extract_one(encoder, row, settings.stride, writer, report)
            bar.update()
            bar.set_postfix(video_s=f"{report.video_seconds:.0f}")
        bar.close()
    report = _gather(report, state)
    report.damaged_shards = writer.damaged  # only the main process checks the shards
    if state.is_main_process:
        write_failures(Path(out), report.failures)
    return report


def _duration(row: ManifestRow) -> float | None:
    """The announced duration of a video (None if it cannot be read: its extraction reports why)."""
    try:
        return probe_video(row.path).duration
    except (VideoError, OSError):
        return None


def _extract_split(
    encoder: SnippetEncoder, rows: list[ManifestRow], plan: RankPlan, workers: int, decode: DecodeSettings, out: Path,
    writer: FeatureShardWriter, report: ExtractionReport, bar: tqdm, state,
) -> None:
    """This process's parts of the videos split across processes (:mod:`gestures_hub.rank_split`), then, once every
    process has written its own, the rows of the split videos it owns."""
    extract_parts(encoder, [row.path for row in rows], [row.video for row in rows], plan.parts, workers, decode, out,
                  bar)
    state.wait_for_everyone()
    for index, count in plan.owns.items():
        row = rows[index]
        joined = join_parts(out, row.video, count, decode)
        if joined is None:  # a part failed (e.g. damage that ranges cannot decode identically): the video whole
            _extract_one(encoder, row, decode.stride, writer, report)
            continue
        damaged = joined.report if joined.report.problems() else None
        _add_row(writer, report, row, joined.features, joined.start_times, encoder.config.snippet_duration, damaged,
                 joined.warnings)
        report.split[row.video] = count


def _extract_one(
    encoder: SnippetEncoder, row: ManifestRow, stride: int, writer: FeatureShardWriter, report: ExtractionReport
) -> None:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            features, starts = encoder.video(row.path, stride)
    except (VideoError, OSError, RuntimeError, ValueError, MemoryError) as error:
        report.failures[row.video] = failure_message(row.path, error)
        return
    decoded = [w.message.report for w in caught if isinstance(w.message, VideoWarning) and w.message.report is not None]
    _add_row(writer, report, row, features, starts, encoder.config.snippet_duration,
             decoded[-1] if decoded else None, [str(warning.message) for warning in caught])


def _extract_with_workers(
    encoder: SnippetEncoder, rows: list[ManifestRow], decode: DecodeSettings, workers: int,
    range_seconds: float | None, writer: FeatureShardWriter, report: ExtractionReport, bar: tqdm,
) -> None:
    """Extract ``rows`` with a :class:`~gestures_hub.decode_workers.DecodePool` of ``workers`` decoder processes."""
    planned: list[tuple[ManifestRow, list]] = []
    for row in rows:
        try:
            duration = probe_video(row.path, min_duration=encoder.config.snippet_duration).duration
        except (VideoError, OSError) as error:
            report.failures[row.video] = failure_message(row.path, error)
            bar.update()
            continue
        seconds = auto_range_seconds(duration, workers) if range_seconds is None else range_seconds
        planned.append((row, decode.ranges(duration, seconds)))
    with DecodePool(workers, decode) as pool:
        for result in pool.run([(row.path, ranges) for row, ranges in planned], encoder.submit):
            row = planned[result.index][0]
            if result.error is not None:
                report.failures[row.video] = result.error
            else:
                damaged = result.report if result.report is not None and result.report.problems() else None
                _add_row(writer, report, row, result.features, result.start_times, encoder.config.snippet_duration,
                         damaged, result.warnings)
            bar.update()
            bar.set_postfix(video_s=f"{report.video_seconds:.0f}")


def _add_row(
    writer: FeatureShardWriter, report: ExtractionReport, row: ManifestRow, features: np.ndarray, starts: np.ndarray,
    snippet_duration: float, damaged: DecodeReport | None, warning_texts: list[str],
) -> None:
    """Write one extracted video and record it (its warnings, and ``damaged``: its decode report if it found damage)."""
    if warning_texts:
        report.warnings[row.video] = "; ".join(warning_texts)
    damage: list[str] = []
    if damaged is not None:
        report.damage[row.video] = asdict(damaged)
        damage = damaged.problems()
    duration = float(starts[-1]) + snippet_duration
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

    merged = ExtractionReport(skipped=report.skipped, decoder=report.decoder)
    for part in gather_object([report]):
        merged.extracted += part.extracted
        merged.failures |= part.failures
        merged.warnings |= part.warnings
        merged.damage |= part.damage
        merged.split |= part.split
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
    lines += [f"  SPLIT   {video}: its time ranges were extracted by {parts} processes"
              for video, parts in sorted(report.split.items())]
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
            batch_size=args.batch_size, device=args.device, precision=args.precision, compile=args.compile,
            videos_per_shard=args.videos_per_shard, progress=not args.quiet,
            allow_outside_paths=args.allow_outside_paths, decode_workers=args.decode_workers,
            range_seconds=args.range_seconds, decoder=args.decoder,
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


__all__ = ["extract", "read_manifest", "write_failures", "ExtractionReport"]
