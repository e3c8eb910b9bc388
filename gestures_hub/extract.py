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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
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
from .heap import release_free_heap
from .model import GesturesForVideoClassification, GesturesVideoProcessor
from .model.video_reader import DecodeReport, VideoError, VideoWarning, normalisation, probe_video
from .presets import load_model
from .rank_split import RankPlan, clear_parts, extract_parts, join_parts, plan_ranks
from .torchcodec_decode import choose_decoder, stream_snippets

TRIM_EVERY = 32
"""Batches between two :func:`~gestures_hub.heap.release_free_heap` calls (about 20 s of work on a CPU)."""
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
    """How the encoder runs: device, autocast dtype (None: float32), memory format, batch size, ``torch.compile``."""

    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool
    batch_size: int
    compile: bool = False

    def describe(self) -> str:
        precision = "fp32" if self.dtype is None else str(self.dtype).removeprefix("torch.")
        layout = "channels_last_3d" if self.channels_last else "contiguous"
        return f"{self.device.type}, {precision}, {layout}, batch {self.batch_size}{', compiled' * self.compile}"


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


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: CUDA GPUs with bf16, CPUs with AVX-512 BF16/AMX (elsewhere
    bfloat16 is emulated and far slower than float32)."""
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else torch.ops.mkldnn._is_mkldnn_bf16_supported()


def auto_precision(device: torch.device) -> str:
    """The fastest faithful autocast precision on ``device``: ``bf16`` where it is native (:func:`native_bf16`),
    ``fp16`` on other GPUs, else ``fp32``."""
    return "bf16" if native_bf16(device) else "fp16" if device.type == "cuda" else "fp32"


COMPILE_MODES = ("auto", "on", "off")
COMPILE_COSINE = 0.9999
"""A compiled encoder is kept only if its features on the first batch are within this cosine of eager float32's."""


def auto_compile(device: torch.device) -> bool:
    """Whether ``--compile auto`` compiles the encoder on ``device``: on CUDA, where inductor fuses the convolutions'
    epilogues and removes launch overhead (the first batch checks it stays faithful, :attr:`SnippetEncoder.encode`);
    never on a CPU, where it was measured slower (r2plus1d_18 bf16 batch 1: 234 vs 108 ms a snippet, the demo encoder
    bf16 batch 4: 3.1 vs 2.6 ms, both after an 80 s compilation; interleaved runs on 2 loaded cores, torch 2.14)."""
    return device.type == "cuda"


def choose_runtime(
    encoder: str, device: str | None = None, precision: str = "auto", batch_size: int | None = None,
    compile: str = "off",
) -> Runtime:
    """The fastest faithful way to run ``encoder`` here, unless overridden.

    Autocast with :func:`auto_precision` (bfloat16 where the hardware computes it natively). CNN encoders use
    ``channels_last_3d``, faster on CPU. Batches: 32 snippets on a GPU; 8 on a CPU (``benchmarks/extract.py``
    compares them: r2plus1d_18 bf16 on 2 quiet cores, 7.4-8.3 video-s/s at batch 8, 7.2-8.1 at 4, 6.4-6.7 at 1).
    ``compile``: ``on``, ``off``, or ``auto`` (:func:`auto_compile`: on CUDA only).
    """
    resolved = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if precision == "auto":
        precision = auto_precision(resolved)
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}.")
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile must be auto, on or off, got {compile!r}.")
    default_batch = 32 if resolved.type == "cuda" else 8
    compiled = compile == "on" or compile == "auto" and auto_compile(resolved)
    return Runtime(resolved, dtypes[precision], encoder in CNN_ENCODERS, batch_size or default_batch, compiled)


def batch_for_memory(free_bytes: int, bytes_per_snippet: int, *, fraction: float = 0.5, cap: int = 512) -> int:
    """The largest batch (a multiple of 8, at least 1, at most ``cap``) whose activations take ``fraction`` of
    ``free_bytes`` of device memory at ``bytes_per_snippet`` each."""
    fits = int(fraction * free_bytes // max(1, bytes_per_snippet))
    return max(1, min(cap, fits // 8 * 8 or fits))


class SnippetEncoder:
    """Runs a model's encoder on batches of snippets with a :class:`Runtime`; returns float32 CPU features.

    On CUDA: cuDNN autotuning, and uint8 frames (:meth:`submit`) go through pinned buffers, copied to the device
    without blocking while the previous chunk computes; they are normalised on the device. ``decoder``: how
    :meth:`video` reads a file, ``"pyav"`` (the model's video processor) or ``"torchcodec"`` (on the encoder's device).
    """

    def __init__(self, model: GesturesForVideoClassification, runtime: Runtime, decoder: str = "pyav") -> None:
        self.config = model.config
        self.decoder = decoder
        self.batches = 0  # encoded so far: every TRIM_EVERY, the heap's free memory goes back to the system
        self.processor = GesturesVideoProcessor(model.config)
        self.runtime = runtime
        self.model = model.gestures.to(runtime.device).eval()
        if runtime.channels_last:
            self.model.to(memory_format=torch.channels_last_3d)
        self.encode = self._compiled_first if runtime.compile else self.model.encode_snippets
        self.cuda = runtime.device.type == "cuda"
        if self.cuda:
            torch.backends.cudnn.benchmark = True
        scale, shift = normalisation(model.config.image_mean, model.config.image_std)
        self.scale, self.shift = torch.from_numpy(scale).to(runtime.device), torch.from_numpy(shift).to(runtime.device)
        self.staging: list[torch.Tensor] = []

    @torch.inference_mode()
    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.batches += 1
        if self.batches % TRIM_EVERY == 0:
            release_free_heap()
        return self._encode(pixel_values.to(self.runtime.device, non_blocking=True)).float().cpu()

    def _encode(self, snippets: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor] | None = None
                ) -> torch.Tensor:
        """Device features of device snippets ``(N, 3, T, H, W)`` (with ``encode``: that function, e.g. eager)."""
        if self.runtime.channels_last:
            snippets = snippets.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(self.runtime.device.type, dtype=self.runtime.dtype, enabled=self.runtime.dtype is not None):
            return (encode or self.encode)(snippets)

    def _compiled_first(self, snippets: torch.Tensor) -> torch.Tensor:
        """The first batch with ``torch.compile``: the compiled encoder is kept if its features are within
        ``COMPILE_COSINE`` of eager float32's, else (or if compiling fails) the eager one, with a warning."""
        compiled = torch.compile(self.model.encode_snippets)
        try:
            features = compiled(snippets)
        except Exception as error:  # noqa: BLE001 - any compiler failure (no C++ compiler, unsupported op): eager
            return self._fall_back(f"it failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})", snippets)
        with torch.autocast(self.runtime.device.type, enabled=False):
            reference = self.model.encode_snippets(snippets.float())
        cosine = torch.nn.functional.cosine_similarity(features.float(), reference, dim=1).min().item()
        if not cosine >= COMPILE_COSINE:
            return self._fall_back(f"its features are only within cosine {cosine:.6f} of float32's (at least "
                                   f"{COMPILE_COSINE} is needed)", snippets)
        self.encode = compiled
        return features

    def _fall_back(self, why: str, snippets: torch.Tensor) -> torch.Tensor:
        warnings.warn(f"torch.compile of the encoder is not used: {why}; the encoder runs eagerly.", stacklevel=3)
        self.runtime = replace(self.runtime, compile=False)
        self.encode = self.model.encode_snippets
        return self.encode(snippets)

    @torch.inference_mode()
    def submit(self, frames: torch.Tensor, count: int, stride: int) -> Callable[[], torch.Tensor]:
        """Start encoding ``count`` snippets, one every ``stride`` of the uint8 frames ``(n, H, W, 3)``; returns a
        function giving their float32 CPU features. ``frames`` may be reused once that function has returned."""
        if self.cuda:  # through a pinned buffer: the copy does not block, and is ordered before the compute
            size = frames.numel()
            fits = [index for index, buffer in enumerate(self.staging) if buffer.numel() >= size]
            buffer = self.staging.pop(fits[0]) if fits else torch.empty(size, dtype=torch.uint8, pin_memory=True)
            frames = buffer[:size].view(frames.shape).copy_(frames).to(self.runtime.device, non_blocking=True)
        # (rgb * scale) - shift in float32, as the reader's NumPy normalisation: the same values
        pixels = frames.permute(0, 3, 1, 2).float().mul_(self.scale).sub_(self.shift)
        index = (torch.arange(count, device=pixels.device)[:, None] * stride
                 + torch.arange(self.config.frames_per_snippet, device=pixels.device))
        snippets = pixels[index].transpose(1, 2)  # (count, 3, T, H, W)
        features = torch.cat([self._encode(batch) for batch in snippets.split(self.runtime.batch_size)]).float()
        if not self.cuda:
            return lambda: features
        host = torch.empty(features.shape, dtype=features.dtype, pin_memory=True).copy_(features, non_blocking=True)
        done = torch.cuda.Event()
        done.record()

        def result() -> torch.Tensor:
            done.synchronize()
            self.staging.append(buffer)
            return host

        return result

    def fit_batch_to_memory(self) -> None:
        """On CUDA, set the batch size from the free device memory and the activation memory of a probe batch."""
        if not self.cuda:
            return
        probe = 4
        shape = (probe, 3, self.config.frames_per_snippet, self.config.image_size, self.config.image_size)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        with torch.inference_mode():
            self._encode(torch.zeros(shape, device=self.runtime.device), self.model.encode_snippets)  # not compiled
        per_snippet = (torch.cuda.max_memory_allocated() - before) // probe
        free, _ = torch.cuda.mem_get_info()
        self.runtime = replace(self.runtime, batch_size=batch_for_memory(free, per_snippet))

    def video(self, path: str | Path, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Features ``(n_snippets, feature_dim)`` and start times (s) of one whole video, read by the model's video
        processor (or, with the torchcodec decoder, the same snippets from :func:`stream_snippets`)."""
        features, starts = [], []
        batches = self.processor.stream(path, stride=stride, batch_size=self.runtime.batch_size) if (
            self.decoder == "pyav") else stream_snippets(path, self.config, device=self.runtime.device,
                                                         stride=stride or self.processor.snippet_stride,
                                                         batch_size=self.runtime.batch_size)
        for batch in batches:
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
    compile: str = "auto",
    videos_per_shard: int = 8,
    progress: bool = True,
    allow_outside_paths: bool = False,
    decode_workers: int | None = None,
    range_seconds: float | None = None,
    decoder: str = "auto",
) -> ExtractionReport:
    """Extract the features of every video of ``manifest`` into the dataset folder ``out`` (resumable).

    ``compile``: ``torch.compile`` the encoder (``auto``: on CUDA only, :func:`auto_compile`).
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


__all__ = ["extract", "read_manifest", "choose_runtime", "native_bf16", "auto_precision", "auto_compile",
           "write_failures", "SnippetEncoder", "Runtime", "ExtractionReport", "batch_for_memory"]
