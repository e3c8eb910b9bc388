"""Micro benchmark of the streaming video reader: decode + resample to 15 fps + resize to 112.

Encodes a synthetic H.264 video (640x480, 30 fps, 60 s by default: a moving bar over a noisy textured
background) in a temporary folder, then runs each stage in a fresh process and prints its best throughput
over ``--repeat`` runs in video-seconds per second and its peak resident memory (``getrusage``), with the
RSS before the runs. The load average shows whether other processes competed for the CPUs.

    python benchmarks/decode.py [--duration 60] [--size 640 480] [--fps 30] [--crf 16 23] [--repeat 3]
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
import psutil

from gestures_hub.video import iter_frames, iter_snippets, probe_video, write_test_video


def decode_only(path: Path) -> None:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            pass


def frames_15fps_112(path: Path) -> None:
    for _ in iter_frames(path, fps=15.0, size=112):
        pass


def snippets_stride_8(path: Path) -> None:
    for _ in iter_snippets(path):
        pass


def snippets_dense(path: Path) -> None:
    for _ in iter_snippets(path, stride=1, batch_size=32):
        pass


STAGES = {
    "decode only (all frames, no conversion)": decode_only,
    "iter_frames: decode + 15 fps + resize 112": frames_15fps_112,
    "iter_snippets: + normalise, stride 8": snippets_stride_8,
    "iter_snippets: stride 1 (dense), batch 32": snippets_dense,
}


def run_stage(name: str, path: Path, repeat: int) -> None:
    """Child process: run one stage ``repeat`` times, print the best seconds and RSS (bytes) before / at peak."""
    before = psutil.Process().memory_info().rss
    seconds = float("inf")
    for _ in range(repeat):
        tic = time.perf_counter()
        STAGES[name](path)
        seconds = min(seconds, time.perf_counter() - tic)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "before": before, "peak": peak}))


def benchmark(args: argparse.Namespace, folder: Path, crf: int) -> None:
    path = folder / f"benchmark_crf{crf}.mp4"
    tic = time.perf_counter()
    write_test_video(path, duration=args.duration, fps=args.fps, size=tuple(args.size), pattern="bar", crf=crf)
    info = probe_video(path)
    megabits = path.stat().st_size * 8 / 1e6 / info.duration
    print(
        f"\n{info.width}x{info.height} {info.fps:g} fps {info.duration:g} s {info.codec}, crf {crf}: "
        f"{megabits:.2f} Mbit/s (encoded in {time.perf_counter() - tic:.0f} s)\n"
    )
    print(f"| {'stage':<42} | video-s/s | RSS before -> peak (MiB) | load avg |")
    print(f"|{'-' * 44}|-----------|--------------------------|----------|")
    for name in STAGES:
        child = [sys.executable, __file__, "--stage", name, "--video", str(path), "--repeat", str(args.repeat)]
        result = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
        memory = f"{result['before'] / 2**20:.0f} -> {result['peak'] / 2**20:.0f}"
        print(f"| {name:<42} | {info.duration / result['seconds']:9.1f} | {memory:>24} | {os.getloadavg()[0]:8.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--crf", type=int, nargs="+", default=[16, 23], help="x264 quality: sets the bit rate")
    parser.add_argument("--repeat", type=int, default=3, help="runs per stage; the fastest is reported")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--video", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        run_stage(args.stage, args.video, args.repeat)
        return
    print(f"{psutil.cpu_count()} CPUs, PyAV {av.__version__}")
    with tempfile.TemporaryDirectory() as folder:
        for crf in args.crf:
            benchmark(args, Path(folder), crf)


if __name__ == "__main__":
    main()
