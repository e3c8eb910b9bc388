"""Peak memory of the transformers pipeline on a 1-minute and a 30-minute video: it must stay flat.

    .venv/bin/python benchmarks/pipeline_memory.py [--minutes 1 30] [--size 160x120]

The embedded demo model is saved with ``save_pretrained`` and loaded in a fresh process, without ``gestures_hub``, by
``pipeline(model=DIR, trust_remote_code=True)``, which runs it on each video (15 fps H.264 test videos with a moving
bar); each run's peak RSS comes from ``getrusage``. Target: the 30-minute peak <= 1.2x the 1-minute peak (the pipeline
keeps snippet features, never the pixels of the whole video).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

from gestures_hub import GesturesForVideoClassification
from gestures_hub.predict import DEMO_MODEL_DIR
from gestures_hub.sample_videos import write_test_video
from gestures_hub.snippet_encoder import native_bf16

RUN = textwrap.dedent(
    """
    import json, resource, sys, time
    sys.modules["gestures_hub"] = None
    from transformers import pipeline

    model_dir, video = sys.argv[1:]
    pipe = pipeline(model=model_dir, trust_remote_code=True, device="cpu")
    start = time.perf_counter()
    result = pipe(video, return_timeline=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "snippets": len(result["snippet_times"]),
                      "label": result["label"]}))
    """
)


def measure(model_dir: Path, video: Path, script: Path) -> dict:
    result = subprocess.run([sys.executable, str(script), str(model_dir), str(video)], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 30.0], help="video lengths (default: 1 30)")
    parser.add_argument("--size", default="160x120", help="video width x height in pixels (default: 160x120)")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, native bf16: {native_bf16(torch.device('cpu'))}, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model_dir = folder / "demo"
        GesturesForVideoClassification.from_pretrained(DEMO_MODEL_DIR).save_pretrained(model_dir)
        (folder / "run.py").write_text(RUN)
        rows = []
        for minutes in args.minutes:
            start = time.perf_counter()
            video = write_test_video(folder / f"{minutes:g}min.mp4", duration=minutes * 60, fps=15,
                                     size=(width, height), pattern="bar")
            encode = time.perf_counter() - start
            rows.append({"minutes": minutes, "encode_s": encode, **measure(model_dir, video, folder / "run.py")})
    print("\n| video | snippets | pipeline time | video-s/s | peak RSS |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['minutes']:g} min {width}x{height} | {row['snippets']} | {row['seconds']:.1f} s | "
              f"{row['minutes'] * 60 / row['seconds']:.0f} | {row['peak_mib']:.0f} MiB |")
    if len(rows) > 1:
        ratio = rows[-1]["peak_mib"] / rows[0]["peak_mib"]
        verdict = "PASS" if ratio <= 1.2 else "FAIL"
        print(f"\npeak RSS {rows[-1]['minutes']:g} min / {rows[0]['minutes']:g} min: {ratio:.3f} (target <= 1.2): "
              f"{verdict}")


if __name__ == "__main__":
    main()
