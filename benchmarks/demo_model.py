"""Benchmark the embedded demo model on a fresh synthetic cohort (seeds never used to train it).

::

    .venv/bin/python benchmarks/demo_model.py [--patients 20] [--seed 777] [--size 160x120]

Prints the seizure-level accuracy (target >= 0.95), the median error of the detected bilateral-spread time on the
TCS videos (target <= 5 s; a TCS video without a detected spread counts as an infinite error), and the wall time
of ``gestures predict`` on a 2-minute video, process start-up included (target <= 60 s).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gestures_hub.predict import load_predictor, predict_video
from gestures_hub.synthetic import generate_cohort, sample_cohort
from gestures_hub.synthetic_render import render_video

TRAINING_SEED = 1000  # scripts/train_demo_model.py


def cohort_results(folder: Path, patients: int, seed: int, size: tuple[int, int]) -> dict[str, float]:
    manifest = generate_cohort(folder, patients, seed, size=size)
    model, description, _ = load_predictor()
    correct, errors = [], []
    with manifest.open(newline="") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        prediction = predict_video(model, manifest.parent / row["video"], description=description)
        correct.append(prediction.label == row["label"])
        if row["label"] == "TCS":
            spread = prediction.spread_time
            errors.append(float("inf") if spread is None else abs(spread - float(row["onset_bilateral"])))
    return {"videos": len(rows), "accuracy": float(np.mean(correct)), "tcs_videos": len(errors),
            "median_spread_error_s": float(np.median(errors)), "spread_missed": int(np.isinf(errors).sum())}


def predict_wall_time(folder: Path, seed: int, size: tuple[int, int]) -> float:
    spec = sample_cohort(1, seed, seizures_per_patient=1, min_duration=120.0, max_duration=120.0, size=size)[0]
    video = render_video(spec, folder / "two_minutes.mp4")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gestures_hub", "predict", str(video), "--out", str(folder / "out")],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--size", default="160x120", help="video size WxH (default 160x120)")
    args = parser.parse_args()
    if args.seed == TRAINING_SEED:
        parser.error(f"seed {TRAINING_SEED} trained the demo model; pick another")
    size = tuple(int(side) for side in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        results = cohort_results(Path(tmp) / "cohort", args.patients, args.seed, size)
        seconds = predict_wall_time(Path(tmp), args.seed + 1, size)
    print(f"synthetic cohort seed {args.seed}, {args.patients} patients, {results['videos']} videos at {args.size}")
    print(f"accuracy                      {results['accuracy']:.3f}  (target >= 0.95)")
    print(f"median spread-time error      {results['median_spread_error_s']:.2f} s over {results['tcs_videos']} TCS "
          f"videos, {results['spread_missed']} without a detected spread  (target <= 5 s)")
    print(f"gestures predict, 2-min video {seconds:.1f} s wall time  (target <= 60 s)")


if __name__ == "__main__":
    main()
