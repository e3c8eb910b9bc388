"""Benchmark of feature extraction on long videos: decoding, encoder, end to end, naive; throughput and memory.

Generates a 640x480 30 fps H.264 video (``--length`` seconds, default one minute; a moving bar over a noisy textured
background), makes the longer ones (``--lengths``, in multiples of it) by stream-copy concatenation, then, for every
model of ``--models`` and stride of ``--strides``, runs every stage in a fresh process and prints tables of throughput
(video-seconds per second) and host peak memory (sampled by psutil during the stage: the stage process's resident set
plus its decoder processes' private memory; and each one's lifetime maximum RSS, model loading included) per video
length (the real one, probed), and the issue's targets, each met or missed:

- end to end >= 0.9 x the encoder-only throughput of the fastest faithful configuration (longest end-to-end video);
- end to end >= 4 x a naive pipeline that decodes the whole video first (same run, shortest video);
- flat memory: on the longest video, the host peak of the stage's last quarter <= 1.1 x that of its first (decode
  and end to end; the ratio to the shortest video's peak is printed too, but the peak of a memory that swings with
  every batch grows with the time it is sampled, so it overstates growth);
- the automatically chosen precision keeps features within cosine 0.9999 of float32.

With ``--device cuda`` the encoder rows run on the GPU (with its achieved TFLOP/s, counted by
``torch.utils.flop_counter``, the fraction of the GPU's bf16 peak, its utilisation and peak memory), and the decode
ceiling is measured with ``--decode-workers`` decoder processes (:mod:`gestures_hub.decode_workers`); end to end uses
the largest count. ``--try-compile`` adds the automatic runtime under ``torch.compile`` to the encoder rows (always on
CUDA). ``--train-encoder`` measures training the encoder (snippets/s, peak memory, with and without gradient
checkpointing, bf16): CUDA only. Defaults are quick on a CPU (r2plus1d_18, stride 8, 1 and 10 minutes); the issue's
matrix is

    python benchmarks/extract.py --device cuda --models r2plus1d_34 r2plus1d_18 --strides 8 1 --lengths 1 10 60
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import psutil
import torch

from gestures_hub.decode_workers import (
    DecodePool,
    DecodeSettings,
    auto_decode_workers,
    auto_range_seconds,
    chunk_snippets_for,
)
from gestures_hub.model.video_reader import iter_snippets, probe_video
from gestures_hub.presets import load_model
from gestures_hub.sample_videos import write_test_video
from gestures_hub.snippet_encoder import Runtime, SnippetEncoder, choose_runtime


def concatenate(source: Path, copies: int, target: Path) -> Path:
    """Stream-copy ``copies`` repetitions of ``source`` into ``target`` (no re-encoding)."""
    with av.open(str(source)) as first:
        span = first.streams.video[0].duration
    with av.open(str(target), "w") as output:
        with av.open(str(source)) as template:
            stream = output.add_stream_from_template(template.streams.video[0])
        for copy in range(copies):
            with av.open(str(source)) as container:
                for packet in container.demux(container.streams.video[0]):
                    if packet.dts is None:
                        continue
                    packet.pts += copy * span
                    packet.dts += copy * span
                    packet.stream = stream
                    output.mux(packet)
    return target


def snippet_settings(model) -> dict:
    config = model.config
    return dict(fps=config.fps, frames_per_snippet=config.frames_per_snippet, size=config.image_size,
                mean=config.image_mean, std=config.image_std)


BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0}
"""Dense bf16 tensor-core peaks (vendor data sheets, without sparsity), by a part of the device name."""
WORKERS = 0
"""Decoder processes of the decode and end-to-end stages (``--decode-workers``; 0: a thread, as extraction on a CPU)."""


def bf16_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def pooled(path: Path, model, runtime: Runtime, stride: int, encode) -> float:
    """Run ``path`` through a decode pool of ``WORKERS`` processes, its ranges spread over them."""
    config = model.config
    settings = DecodeSettings(config.fps, config.image_size, config.frame_geometry, config.frames_per_snippet, stride,
                              chunk_snippets_for(runtime.batch_size, stride))
    duration = probe_video(path).duration
    with DecodePool(WORKERS, settings) as pool:
        for result in pool.run([(path, settings.ranges(duration, auto_range_seconds(duration, WORKERS)))], encode):
            assert result.error is None, result.error
    return duration


def stage_decode(path: Path, model, runtime: Runtime, stride: int) -> float:
    if WORKERS:
        return pooled(path, model, runtime, stride, lambda frames, count, _: lambda: torch.zeros(count, 1))
    for _ in iter_snippets(path, stride=stride, batch_size=runtime.batch_size, **snippet_settings(model)):
        pass
    return probe_video(path).duration


def stage_end_to_end(path: Path, model, runtime: Runtime, stride: int) -> float:
    encoder = SnippetEncoder(model, runtime)
    if WORKERS:
        return pooled(path, model, runtime, stride, encoder.submit)
    features, _ = encoder.video(path, stride)
    assert np.isfinite(features).all()
    return probe_video(path).duration


def stage_naive(path: Path, model, runtime: Runtime, stride: int) -> float:
    """Decode every frame at full resolution into memory, then resample, resize, normalise and encode."""
    config = model.config
    with av.open(str(path)) as container:
        frames = [(float(frame.time), frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    times = np.array([time for time, _ in frames])
    duration = times[-1] + (times[1] - times[0])
    picks = np.searchsorted(times, np.arange(0, duration, 1 / config.fps) + 1e-3, side="right") - 1
    video = torch.from_numpy(np.stack([frames[index][1] for index in picks])).permute(0, 3, 1, 2).float() / 255
    height, width = video.shape[-2:]
    scale = config.image_size / min(height, width)
    video = torch.nn.functional.interpolate(video, size=(round(height * scale), round(width * scale)),
                                            mode="bilinear", antialias=True)
    top, left = (video.shape[-2] - config.image_size) // 2, (video.shape[-1] - config.image_size) // 2
    video = video[..., top: top + config.image_size, left: left + config.image_size]
    video = (video - torch.tensor(config.image_mean)[:, None, None]) / torch.tensor(config.image_std)[:, None, None]
    starts = range(0, len(video) - config.frames_per_snippet + 1, stride)
    snippets = torch.stack([video[start: start + config.frames_per_snippet].transpose(0, 1) for start in starts])
    with torch.inference_mode():
        for batch in snippets.split(runtime.batch_size):
            model.gestures.encode_snippets(batch)
    return duration


def stage_encoder(path: Path, model, runtime: Runtime, stride: int) -> dict:
    """Encoder only, on a batch of real snippets repeated for at least ``ENCODER_SECONDS`` and ``ENCODER_SNIPPETS``:
    the video-seconds encoded and the seconds it took (after a warm-up batch, which compiles under ``torch.compile``).
    """
    batch = next(iter(iter_snippets(path, stride=stride, batch_size=runtime.batch_size, **snippet_settings(model))))
    encoder = SnippetEncoder(model, runtime)
    encoder(batch.pixel_values)  # warm-up
    repeats, tic = 0, time.perf_counter()
    while repeats * len(batch) < ENCODER_SNIPPETS or time.perf_counter() - tic < ENCODER_SECONDS:
        encoder(batch.pixel_values)
        repeats += 1
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
    return {"video_seconds": repeats * len(batch) * stride / model.config.fps, "seconds": time.perf_counter() - tic,
            "compiled": encoder.runtime.compile}


def snippet_flops(model, runtime: Runtime) -> float:
    """FLOPs of encoding one snippet (``torch.utils.flop_counter``; a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    config = model.config
    snippet = torch.zeros(1, 3, config.frames_per_snippet, config.image_size, config.image_size)
    with FlopCounterMode(display=False) as counter:
        SnippetEncoder(model, replace(runtime, batch_size=1, compile=False))(snippet)
    return float(counter.get_total_flops())


ENCODER_SNIPPETS = 16
ENCODER_SECONDS = 10.0  # a sustained figure: 1-2 s bursts varied by 10-20 % from run to run
STAGES = {"decode": stage_decode, "encoder": stage_encoder, "end_to_end": stage_end_to_end, "naive": stage_naive}


class HostMemory:
    """Peak memory of this process and its descendants (the decoder processes) together, sampled every ``interval`` s
    in a thread: this process's resident set plus the others' unique set sizes (their private memory: the libraries
    and the shared frame slots they map count once, in this process)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.stop = interval, threading.Event()
        self.samples: list[tuple[float, int]] = []  # (seconds since the start, bytes)
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me, start = psutil.Process(), time.perf_counter()
        while not self.stop.is_set():
            total = me.memory_info().rss
            for process in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # exited meanwhile
                    total += process.memory_full_info().uss
            self.samples.append((time.perf_counter() - start, total))
            self.stop.wait(self.interval)

    @property
    def peak(self) -> int:
        return max((total for _, total in self.samples), default=0)

    def quarter_peaks(self) -> tuple[int, int]:
        """The peaks of the first and of the last quarter of the samples' time: equal spans of one run, so that
        growth shows apart from the peaks of the allocator's swings, whose highest grows with the samples taken."""
        end = self.samples[-1][0] if self.samples else 0.0
        first = max((total for at, total in self.samples if at <= end / 4), default=0)
        return first, max((total for at, total in self.samples if at >= 3 * end / 4), default=0)

    def __enter__(self) -> HostMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join()


def run_stage(args: argparse.Namespace) -> None:
    """Child process: one stage on one video; prints seconds, video-seconds processed and peak memory."""
    torch.manual_seed(0)
    model, _ = load_model(args.model)
    runtime = runtime_from(args.runtime)
    global WORKERS
    WORKERS = args.decode_workers[0]
    with HostMemory() as memory:
        tic = time.perf_counter()
        outcome = STAGES[args.stage](args.video, model, runtime, args.stride)
        seconds = time.perf_counter() - tic
    result = {"seconds": seconds} | (outcome if isinstance(outcome, dict) else {"video_seconds": outcome})
    first_quarter, last_quarter = memory.quarter_peaks()
    result |= {"peak": memory.peak, "first_quarter": first_quarter, "last_quarter": last_quarter,
               "own_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
               "decoder_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}
    if runtime.device.type == "cuda":
        result |= {"device_peak": torch.cuda.max_memory_allocated(), "utilisation": torch.cuda.utilization()}
    print(json.dumps(result))


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def runtime_from(text: str) -> Runtime:
    device, precision, layout, batch, compiled = text.split(",")
    return Runtime(torch.device(device), PRECISIONS[precision], layout == "channels_last", int(batch),
                   compiled == "compiled")


def runtime_text(runtime: Runtime) -> str:
    precision = next(name for name, dtype in PRECISIONS.items() if dtype == runtime.dtype)
    return (f"{runtime.device},{precision},{'channels_last' if runtime.channels_last else 'contiguous'},"
            f"{runtime.batch_size},{'compiled' if runtime.compile else 'eager'}")


def measure(model: str, stride: int, stage: str, video: Path, runtime: Runtime, workers: int = 0) -> dict:
    child = [sys.executable, __file__, "--stage", stage, "--video", str(video), "--models", model,
             "--strides", str(stride), "--runtime", runtime_text(runtime), "--decode-workers", str(workers)]
    done = subprocess.run(child, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"stage {stage} of {video.name} ({model}, stride {stride}) failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.splitlines()[-1])
    result["throughput"] = result["video_seconds"] / result["seconds"]
    return result


def cosine_to_fp32(model_name: str, stride: int, video: Path, runtime: Runtime) -> float:
    torch.manual_seed(0)
    model, _ = load_model(model_name)
    batch = next(iter(iter_snippets(video, stride=stride, batch_size=8, **snippet_settings(model))))
    reference = SnippetEncoder(model, Runtime(torch.device("cpu"), None, False, 8))(batch.pixel_values)
    chosen = SnippetEncoder(model, runtime)(batch.pixel_values)
    return float(torch.nn.functional.cosine_similarity(reference, chosen, dim=1).min())


def encoder_configurations(auto: Runtime, try_compile: bool) -> list[Runtime]:
    """Candidate encoder settings: both layouts in float32, bfloat16 where native, a few batch sizes (larger on a
    GPU); with ``try_compile``, the automatic runtime under ``torch.compile`` too."""
    device = auto.device
    batches = (1, 4, 8) if device.type == "cpu" else (32, 128, 256)
    candidates = [Runtime(device, None, layout, batch) for layout in (False, True) for batch in batches]
    if auto.dtype is not None:
        candidates += [Runtime(device, auto.dtype, True, batch) for batch in batches]
    return candidates + [replace(auto, compile=True)] * try_compile


def train_encoder(args: argparse.Namespace) -> None:
    """Training the encoder on CUDA, bf16: snippets/s and peak memory with and without gradient checkpointing."""
    if not torch.cuda.is_available():
        print("--train-encoder: needs CUDA (no GPU here); nothing measured.")
        return
    print("| model | gradient checkpointing | batch | snippets/s | peak memory (GiB) |\n|---|---|---|---|---|")
    for model_name, checkpointing in ((name, on) for name in args.models for on in (False, True)):
        torch.manual_seed(0)
        model, _ = load_model(model_name)
        gestures = model.gestures.cuda().train()
        if checkpointing:
            gestures.gradient_checkpointing_enable()
        config = model.config
        batch = args.train_batch
        snippets = torch.randn(batch, 3, config.frames_per_snippet, config.image_size, config.image_size,
                               device="cuda")
        optimiser = torch.optim.AdamW(gestures.parameters(), lr=1e-5)
        torch.cuda.reset_peak_memory_stats()
        for step in range(6):
            if step == 1:
                torch.cuda.synchronize()
                tic = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = gestures._encode_for_forward(snippets).float().square().mean()
            loss.backward()
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        rate = 5 * batch / (time.perf_counter() - tic)
        print(f"| {model_name} | {'on' if checkpointing else 'off'} | {batch} | {rate:.1f} | "
              f"{torch.cuda.max_memory_allocated() / 2**30:.2f} |", flush=True)


def length_label(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def verdict(value: float, target: float, at_least: bool = True) -> str:
    return "met" if (value >= target if at_least else value <= target) else "MISSED"


def benchmark(args: argparse.Namespace, model_name: str, stride: int, videos: dict[int, Path]) -> None:
    """Every stage of one model at one stride on every video; prints the tables and the targets."""
    torch.manual_seed(0)
    model, _ = load_model(model_name)
    auto = choose_runtime(model.config.encoder, args.device, compile=args.compile)
    peak_tflops = bf16_peak(auto.device)
    flops = snippet_flops(model, auto)
    fps = model.config.fps
    del model
    durations = {copies: probe_video(video).duration for copies, video in videos.items()}
    shortest, longest = min(videos), max(videos)
    print(f"\n## {model_name}, stride {stride}: automatic runtime {auto.describe()}\n\n"
          f"encoder: {flops / 1e9:.2f} GFLOP per snippet ({flops * fps / stride / 1e9:.1f} GFLOP per video-s); bf16 "
          f"peak of this device: {'unknown' if peak_tflops is None else f'{peak_tflops:g} TFLOP/s'}\n")
    cosine = cosine_to_fp32(model_name, stride, videos[shortest], replace(auto, compile=False))
    configurations = encoder_configurations(replace(auto, compile=False), args.try_compile or auto.compile)
    print("| encoder configuration | video-s/s | TFLOP/s | of bf16 peak | GPU util | device peak (MiB) | load avg |\n"
          "|---|---|---|---|---|---|---|", flush=True)
    faithful = []
    for runtime in configurations:
        result = measure(model_name, stride, "encoder", videos[shortest], runtime)
        tflops = result["throughput"] * fps / stride * flops / 1e12
        share = "unknown" if peak_tflops is None else f"{tflops / peak_tflops:.1%}"
        label = runtime.describe() + (" (fell back to eager)" if runtime.compile and not result["compiled"] else "")
        device_peak = f"{result['device_peak'] / 2**20:.0f}" if "device_peak" in result else "n/a"
        print(f"| {label} | {result['throughput']:.2f} | {tflops:.3f} | {share} | {result.get('utilisation', 'n/a')} "
              f"| {device_peak} | {os.getloadavg()[0]:.1f} |", flush=True)
        if runtime.dtype is None or cosine >= 0.9999:  # compiled ones check themselves (SnippetEncoder)
            faithful.append((runtime, result["throughput"]))
    fastest, fastest_throughput = max(faithful, key=lambda item: item[1])
    print(f"\nfastest faithful encoder configuration: {fastest.describe()} ({fastest_throughput:.2f} video-s/s); the "
          f"automatic one keeps features within cosine {cosine:.6f} of fp32 contiguous\n")

    workers = max(args.decode_workers)
    rows: dict[tuple[int, str], dict] = {}
    print("| video | stage | video-s/s | host peak (MiB) | first / last quarter peak (MiB) | encoder process max RSS "
          "(MiB) | largest decoder max RSS (MiB) | load avg |\n|---|---|---|---|---|---|---|---|")
    for copies, video in sorted(videos.items()):
        stages = [(f"decode, {n} workers", "decode", n) for n in args.decode_workers]
        stages += [(f"end_to_end, {workers} workers", "end_to_end", workers)] * (copies in args.end_to_end_lengths)
        stages += [("naive", "naive", 0)] * (copies == shortest)
        for label, stage, n in stages:
            runtime = auto if stage != "naive" else Runtime(torch.device("cpu"), None, False, auto.batch_size)
            result = measure(model_name, stride, stage, video, runtime, n)
            rows[copies, stage if stage != "decode" or n == workers else f"decode{n}"] = result
            decoders = f"{result['decoder_rss'] / 2**20:.0f}" if n else "n/a"
            print(f"| {length_label(durations[copies])} | {label} | {result['throughput']:.2f} | "
                  f"{result['peak'] / 2**20:.0f} | {result['first_quarter'] / 2**20:.0f} / "
                  f"{result['last_quarter'] / 2**20:.0f} | {result['own_rss'] / 2**20:.0f} | {decoders} | "
                  f"{os.getloadavg()[0]:.1f} |", flush=True)

    print(f"\ntargets ({model_name}, stride {stride}):")
    measured = [copies for copies in sorted(videos) if (copies, "end_to_end") in rows]
    if measured:
        on = measured[-1]
        ratio = rows[on, "end_to_end"]["throughput"] / fastest_throughput
        print(f"- end to end ({length_label(durations[on])}) / fastest faithful encoder-only = {ratio:.2f} "
              f"(target >= 0.9): {verdict(ratio, 0.9)}")
    if (shortest, "end_to_end") in rows:
        speedup = rows[shortest, "end_to_end"]["throughput"] / rows[shortest, "naive"]["throughput"]
        print(f"- end to end / naive ({length_label(durations[shortest])}) = {speedup:.2f} (target >= 4): "
              f"{verdict(speedup, 4)}")
    print(f"- cosine to fp32 = {cosine:.6f} (target >= 0.9999): {verdict(cosine, 0.9999)}")
    for stage in ("decode", "end_to_end"):
        if (longest, stage) in rows:
            row = rows[longest, stage]
            drift = row["last_quarter"] / row["first_quarter"]
            print(f"- {stage} ({length_label(durations[longest])}): host peak of the last quarter / the first = "
                  f"{drift:.3f} (target <= 1.1): {verdict(drift, 1.1, at_least=False)}")
        if longest != shortest and (longest, stage) in rows and (shortest, stage) in rows:
            growth = rows[longest, stage]["peak"] / rows[shortest, stage]["peak"]
            print(f"  (host peak {length_label(durations[longest])} / {length_label(durations[shortest])} = "
                  f"{growth:.3f}: a longer run also meets more of the allocator's swings)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help="presets or model folders, random weights are fine (default: "
                                                    "r2plus1d_18 on a CPU; r2plus1d_34 and r2plus1d_18 on CUDA)")
    parser.add_argument("--strides", type=int, nargs="+", help="snippet strides (default: 8 on a CPU; 8 and 1 on CUDA)")
    parser.add_argument("--lengths", type=int, nargs="+",
                        help="video lengths in multiples of --length (minutes by default; default: 1 10 on a CPU, "
                             "1 10 60 on CUDA)")
    parser.add_argument("--end-to-end-lengths", type=int, nargs="+",
                        help="lengths also run end to end (default: all of --lengths)")
    parser.add_argument("--length", type=float, default=60.0, help="seconds of the generated base video (default 60)")
    parser.add_argument("--crf", type=int, default=23, help="x264 quality of the generated video")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--decode-workers", type=int, nargs="+",
                        help="decoder process counts for the decode ceiling, the largest used end to end (default: 0 "
                             "on a CPU, 0 and the automatic count on CUDA)")
    parser.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                        help="torch.compile of the end-to-end encoder, as `gestures extract --compile`")
    parser.add_argument("--try-compile", action="store_true",
                        help="add the compiled automatic runtime to the encoder rows (always on CUDA)")
    parser.add_argument("--train-encoder", action="store_true", help="measure training the encoder (CUDA only)")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--video", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--runtime", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.models = args.models or (["r2plus1d_34", "r2plus1d_18"] if cuda else ["r2plus1d_18"])
    args.strides = args.strides or ([8, 1] if cuda else [8])
    if args.stage:
        args.model, args.stride = args.models[0], args.strides[0]
        run_stage(args)
        return
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here.")
    if args.train_encoder:
        train_encoder(args)
        return
    args.lengths = sorted(set(args.lengths or ([1, 10, 60] if cuda else [1, 10])))
    args.end_to_end_lengths = args.end_to_end_lengths or args.lengths
    args.decode_workers = args.decode_workers or ([0, auto_decode_workers(torch.device("cuda"))] if cuda else [0])

    print(f"{os.cpu_count()} CPUs (load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}), torch "
          f"{torch.__version__}, PyAV {av.__version__}{', ' + torch.cuda.get_device_name() if cuda else ''}; models "
          f"{' '.join(args.models)}, strides {' '.join(map(str, args.strides))}, decode workers "
          f"{' '.join(map(str, args.decode_workers))}")
    with tempfile.TemporaryDirectory() as folder:
        one = write_test_video(Path(folder) / "base.mp4", duration=args.length, fps=30.0, size=(640, 480),
                               pattern="bar", crf=args.crf)
        videos = {n: one if n == 1 else concatenate(one, n, Path(folder) / f"x{n}.mp4") for n in args.lengths}
        megabits = one.stat().st_size * 8 / 1e6 / args.length
        print(f"videos: 640x480 30 fps H.264 crf {args.crf} ({megabits:.2f} Mbit/s), "
              f"{', '.join(length_label(probe_video(video).duration) for video in videos.values())}")
        for model_name in args.models:
            for stride in args.strides:
                benchmark(args, model_name, stride, videos)


if __name__ == "__main__":
    main()
