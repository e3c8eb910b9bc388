"""Benchmark of feature extraction on long videos: decoding, encoder, end to end, naive; throughput and memory.

Generates a 640x480 30 fps H.264 video of one minute (a moving bar over a noisy textured background), makes the
10- and 60-minute ones by stream-copy concatenation, then runs every stage in a fresh process and prints a
table of throughput (video-seconds per second) and peak RSS per video length, and the issue's targets:

- end to end >= 0.9 x the encoder-only throughput of the fastest faithful configuration;
- end to end >= 4 x a naive pipeline that decodes the whole video first (same run, 1-minute video);
- peak RSS of the 60-minute video <= 1.1 x that of the 1-minute video (per stage);
- the automatically chosen precision keeps features within cosine 0.9999 of float32.

    python benchmarks/extract.py [--minutes 1 10 60] [--end-to-end-minutes 1 10 60] [--model r2plus1d_18]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from gestures_hub.extract import Runtime, SnippetEncoder, choose_runtime
from gestures_hub.model.video_reader import iter_snippets, probe_video
from gestures_hub.presets import load_model
from gestures_hub.sample_videos import write_test_video


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


def stage_decode(path: Path, model, runtime: Runtime, stride: int) -> float:
    for _ in iter_snippets(path, stride=stride, batch_size=runtime.batch_size, **snippet_settings(model)):
        pass
    return probe_video(path).duration


def stage_end_to_end(path: Path, model, runtime: Runtime, stride: int) -> float:
    features, _ = SnippetEncoder(model, runtime).video(path, stride)
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


def stage_encoder(path: Path, model, runtime: Runtime, stride: int) -> float:
    """Encoder only, on a batch of real snippets repeated: returns the video-seconds encoded."""
    batch = next(iter(iter_snippets(path, stride=stride, batch_size=runtime.batch_size, **snippet_settings(model))))
    encoder = SnippetEncoder(model, runtime)
    encoder(batch.pixel_values)  # warm-up
    repeats = max(1, ENCODER_SNIPPETS // len(batch))
    for _ in range(repeats):
        encoder(batch.pixel_values)
    return repeats * len(batch) * stride / model.config.fps


ENCODER_SNIPPETS = 16
STAGES = {"decode": stage_decode, "encoder": stage_encoder, "end_to_end": stage_end_to_end, "naive": stage_naive}


def run_stage(args: argparse.Namespace) -> None:
    """Child process: one stage on one video; prints seconds, video-seconds processed and peak RSS."""
    torch.manual_seed(0)
    model, _ = load_model(args.model)
    runtime = runtime_from(args.runtime)
    tic = time.perf_counter()
    video_seconds = STAGES[args.stage](args.video, model, runtime, args.stride)
    seconds = time.perf_counter() - tic
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "video_seconds": video_seconds, "peak": peak}))


def runtime_from(text: str) -> Runtime:
    precision, layout, batch = text.split(",")
    dtypes = {"fp32": None, "bf16": torch.bfloat16}
    return Runtime(torch.device("cpu"), dtypes[precision], layout == "channels_last", int(batch))


def runtime_text(runtime: Runtime) -> str:
    precision = "fp32" if runtime.dtype is None else "bf16"
    return f"{precision},{'channels_last' if runtime.channels_last else 'contiguous'},{runtime.batch_size}"


def measure(args: argparse.Namespace, stage: str, video: Path, runtime: Runtime) -> dict:
    child = [sys.executable, __file__, "--stage", stage, "--video", str(video), "--model", args.model,
             "--stride", str(args.stride), "--runtime", runtime_text(runtime)]
    result = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    result["throughput"] = result["video_seconds"] / result["seconds"]
    return result


def cosine_to_fp32(args: argparse.Namespace, video: Path, runtime: Runtime) -> float:
    torch.manual_seed(0)
    model, _ = load_model(args.model)
    batch = next(iter(iter_snippets(video, stride=args.stride, batch_size=8, **snippet_settings(model))))
    reference = SnippetEncoder(model, Runtime(torch.device("cpu"), None, False, 8))(batch.pixel_values)
    chosen = SnippetEncoder(model, runtime)(batch.pixel_values)
    return float(torch.nn.functional.cosine_similarity(reference, chosen, dim=1).min())


def encoder_configurations(auto: Runtime) -> list[Runtime]:
    """Candidate encoder settings: both layouts in float32, bfloat16 where native, a few batch sizes."""
    cpu = torch.device("cpu")
    candidates = [Runtime(cpu, None, layout, batch) for layout in (False, True) for batch in (1, 4, 8)]
    if auto.dtype is not None:
        candidates += [Runtime(cpu, auto.dtype, True, batch) for batch in (1, 4, 8)]
    return candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 10, 60])
    parser.add_argument("--end-to-end-minutes", type=int, nargs="+", default=[1, 10, 60],
                        help="lengths also run end to end (the encoder makes long ones slow on a CPU)")
    parser.add_argument("--model", default="r2plus1d_18", help="preset or model folder (random weights are fine)")
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--crf", type=int, default=23, help="x264 quality of the generated video")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--video", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--runtime", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        run_stage(args)
        return

    model, _ = load_model(args.model)
    auto = choose_runtime(model.config.encoder, "cpu")
    del model
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, PyAV {av.__version__}, model {args.model}, "
          f"stride {args.stride}; automatic runtime: {auto.describe()}")
    with tempfile.TemporaryDirectory() as folder:
        one = write_test_video(Path(folder) / "1min.mp4", duration=60, fps=30.0, size=(640, 480),
                               pattern="bar", crf=args.crf)
        videos = {1: one, **{m: concatenate(one, m, Path(folder) / f"{m}min.mp4") for m in args.minutes if m != 1}}
        megabits = one.stat().st_size * 8 / 1e6 / 60
        print(f"videos: 640x480 30 fps H.264 crf {args.crf} ({megabits:.2f} Mbit/s); lengths {sorted(videos)} min\n")

        configurations = encoder_configurations(auto)
        encoder_results = [(runtime, measure(args, "encoder", one, runtime)) for runtime in configurations]
        print("| encoder configuration | video-s/s |\n|---|---|")
        for runtime, result in encoder_results:
            print(f"| {runtime.describe()} | {result['throughput']:.2f} |")
        fastest, fastest_result = max(encoder_results, key=lambda item: item[1]["throughput"])
        cosine = cosine_to_fp32(args, one, auto)
        print(f"\nfastest encoder configuration: {fastest.describe()}; automatic one ({auto.describe()}) keeps "
              f"features within cosine {cosine:.6f} of fp32 contiguous\n")

        rows = {}
        print("| video | stage | video-s/s | peak RSS (MiB) | load avg |\n|---|---|---|---|---|")
        for minutes, video in sorted(videos.items()):
            stages = ["decode"] + ["end_to_end"] * (minutes in args.end_to_end_minutes) + ["naive"] * (minutes == 1)
            for stage in stages:
                runtime = auto if stage != "naive" else Runtime(torch.device("cpu"), None, False, auto.batch_size)
                result = rows[minutes, stage] = measure(args, stage, video, runtime)
                print(f"| {minutes} min | {stage} | {result['throughput']:.2f} | {result['peak'] / 2**20:.0f} | "
                      f"{os.getloadavg()[0]:.1f} |", flush=True)

    print("\ntargets:")
    end_to_end = rows[1, "end_to_end"]["throughput"]
    ratio = end_to_end / fastest_result["throughput"]
    print(f"- end to end / fastest encoder-only = {ratio:.2f} (target >= 0.9): {'PASS' if ratio >= 0.9 else 'FAIL'}")
    speedup = end_to_end / rows[1, "naive"]["throughput"]
    print(f"- end to end / naive = {speedup:.2f} (target >= 4): {'PASS' if speedup >= 4 else 'FAIL'}")
    print(f"- cosine to fp32 = {cosine:.6f} (target >= 0.9999): {'PASS' if cosine >= 0.9999 else 'FAIL'}")
    longest = max(videos)
    for stage in ("decode", "end_to_end"):
        if (longest, stage) in rows and (1, stage) in rows:
            growth = rows[longest, stage]["peak"] / rows[1, stage]["peak"]
            print(f"- {stage}: peak RSS {longest} min / 1 min = {growth:.3f} (target <= 1.1): "
                  f"{'PASS' if growth <= 1.1 else 'FAIL'}")


if __name__ == "__main__":
    main()
