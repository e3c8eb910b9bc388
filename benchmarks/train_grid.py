"""Time the ablation grid of ``gestures reproduce`` on a synthetic features dataset shaped like the paper's.

The dataset is shaped like the study's (GESTURES.md): 183 seizures (106 FOS, 77 TCS) of 68 patients, two camera views
each with 6 views discarded (patient out of view): 366 streams. Durations are log-normal around the paper's medians,
within its ranges (FOS median 53 s, 16-701 s; TCS median 93 s, 51-1098 s), about 298 minutes per view. Features are
512-d, one per start frame at 15 fps (stride 1), as the original code extracted them. The grid is the paper's:
mean/LSTM/BLSTM x 2/4/8/16 segments x gamma 1/1.25/2/4/middle (60 settings) x 10 folds.

    python benchmarks/train_grid.py                     # the full grid, one protocol, 400 epochs
    python benchmarks/train_grid.py --epochs 10         # quick: time 10 epochs and project to 400
    python benchmarks/train_grid.py --workers 2         # two processes with one thread each
    python benchmarks/train_grid.py --precision fp32    # float32 projections even where bfloat16 is native

Where bfloat16 is native (``--precision auto`` picks it), the grid is timed a second time with float32 projections,
the figure for CPUs without native bfloat16 (``--no-fp32`` skips it). The LSTM's elementwise steps are compiled
with ``torch.compile`` (``GESTURES_COMPILE=0``: eager); the measured time includes compiling.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gestures_hub import lstm_kernels
from gestures_hub.arguments import ReproduceArguments
from gestures_hub.features import FeatureSettings, FeatureShardWriter
from gestures_hub.metrics import markdown_table
from gestures_hub.reproduce import compute_dtype, load_bank, run_grid

TARGET_SECONDS = 15 * 60
PAPER_EPOCHS = 400


def paper_durations(rng: np.random.Generator) -> tuple[list[int], list[float]]:
    """Labels (1 = TCS) and durations (s) of 183 seizures with the paper's medians and ranges."""
    sigma = 0.82  # log-normal spread that gives about 298 minutes in all with these medians
    labels, durations = [], []
    for label, count, median, low, high in ((0, 106, 53.0, 16.0, 701.0), (1, 77, 93.0, 51.0, 1098.0)):
        drawn = np.clip(median * np.exp(sigma * rng.standard_normal(count)), low, high)
        drawn[:2] = low, high  # the extremes of the range
        drawn[2] = median
        labels += [label] * count
        durations += drawn.tolist()
    return labels, durations


def make_dataset(out_dir: Path, seed: int = 0, feature_dim: int = 512) -> Path:
    """Write the synthetic features dataset to ``out_dir``: TCS videos carry a weak late, sustained signal."""
    rng = np.random.default_rng(seed)
    labels, durations = paper_durations(rng)
    patients = np.concatenate([np.arange(68), rng.integers(0, 68, size=len(labels) - 68)])
    discarded = set(rng.choice(len(labels) * 2, size=6, replace=False).tolist())  # (seizure * 2 + view)
    settings = FeatureSettings(encoder="synthetic", fps=15.0, frames_per_snippet=8, stride=1, feature_dim=feature_dim,
                               image_size=112, geometry="crop_and_pad", synthetic=True)
    direction = rng.standard_normal(feature_dim).astype(np.float32)
    with FeatureShardWriter(out_dir, settings, videos_per_shard=16) as writer:
        for seizure, (label, patient, duration) in enumerate(zip(labels, patients, durations, strict=True)):
            length = int(duration * 15) - 8 + 1
            onset = int(rng.uniform(0.3, 0.7) * length) if label else None
            for number, view in enumerate(("Large", "Small")):
                features = np.abs(rng.standard_normal((length, feature_dim), dtype=np.float32))
                if onset is not None:
                    features[onset:] += 0.3 * direction
                writer.add({
                    "video": f"{patient:03d}_{seizure:03d}_{view[0]}", "patient": f"{patient:03d}",
                    "seizure": f"{seizure:03d}", "view": view, "label": label, "duration": duration,
                    "onset_bilateral": None if onset is None else onset / 15, "num_snippets": length,
                    "discarded": seizure * 2 + number in discarded,
                    "start_times": np.arange(length, dtype=np.float32) / 15, "features": features,
                })
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=PAPER_EPOCHS, help="epochs to run (projected to 400)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--protocols", nargs="+", default=["seizure"], choices=("seizure", "seizure-duration",
                                                                             "patient"))
    parser.add_argument("--aggregations", nargs="+", default=["mean", "lstm", "blstm"])
    parser.add_argument("--segments", nargs="+", type=int, default=[2, 4, 8, 16])
    parser.add_argument("--features", type=Path, help="reuse this dataset instead of writing a new one")
    parser.add_argument("--threads", type=int, help="torch threads of the main process (workers=1)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="dtype of the LSTM's matrix products (see gestures reproduce --help)")
    parser.add_argument("--no-fp32", action="store_true",
                        help="where bfloat16 is native, skip timing the grid again in float32")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="gestures-grid-") as tmp:
        started = time.perf_counter()
        features = args.features or make_dataset(Path(tmp) / "features")
        print(f"Dataset: {features} ({time.perf_counter() - started:.0f} s to write)")
        options = ReproduceArguments(features=str(features), output_dir=tmp, protocols=args.protocols,
                                     aggregations=args.aggregations, segments=args.segments, epochs=args.epochs,
                                     workers=args.workers, precision=args.precision)
        bank = load_bank(options)
        minutes = bank.table.drop_duplicates(["patient", "seizure"])["duration"].sum() / 60
        print(f"{len(bank)} videos ({int(bank.table['discarded'].sum())} discarded), {minutes:.0f} minutes per view, "
              f"{bank.features.shape[0]} vectors of {bank.features.shape[1]} features "
              f"({bank.features.numel() * 4 / 2**30:.2f} GiB); torch threads {torch.get_num_threads()}, "
              f"workers {args.workers}; bfloat16 native on this CPU: {compute_dtype('auto', 'cpu') == torch.bfloat16}")
        precisions = [args.precision]
        if compute_dtype(args.precision, "cpu") == torch.bfloat16 and args.precision == "auto" and not args.no_fp32:
            precisions.append("fp32")  # the figure for CPUs without native bfloat16
        for precision in precisions:
            dtype = compute_dtype(precision, "cpu")
            kernels = dtype == torch.bfloat16 and lstm_kernels.extension() is not None
            print(f"\n## LSTM matrix products in {dtype}, recurrence in "
                  f"{'the C++ kernels (AMX)' if kernels else 'compiled Python steps'} "
                  f"(load average {os.getloadavg()[0]:.2f})")
            started = time.perf_counter()
            results = run_grid(dataclasses.replace(options, precision=precision), bank)
            wall = time.perf_counter() - started
            threads = max(1, (os.cpu_count() or 1) // args.workers) if args.workers > 1 else torch.get_num_threads()
            print(f"Load average (1, 5, 15 min) at the end: {os.getloadavg()}")
            report(results, wall, args.epochs, args.workers, args.workers * threads)


def report(results: list, wall: float, epochs: int, workers: int, cores: int) -> None:
    """Per stack: measured wall and CPU seconds and their projection to 400 epochs (the epochs after the first, which
    also compiles the fused steps, at their measured rate); then the totals."""
    if epochs < 2:
        raise SystemExit("--epochs must be at least 2: the first epoch includes compiling, the others give the rate.")
    rows, totals = [], {"wall": 0.0, "cpu": 0.0, "wall@400": 0.0, "cpu@400": 0.0}
    for result in sorted(results, key=lambda r: (r.spec.protocol, r.spec.aggregation, r.spec.num_segments)):
        spec, seconds = result.spec, result.seconds
        projected = {kind: seconds[kind] + (seconds[f"train_{kind}"] - seconds[f"first_epoch_{kind}"])
                     / (epochs - 1) * (PAPER_EPOCHS - epochs) for kind in ("wall", "cpu")}
        for kind in ("wall", "cpu"):
            totals[kind] += seconds[kind]
            totals[f"{kind}@400"] += projected[kind]
        rows.append([spec.protocol, spec.aggregation, spec.num_segments, len(spec.folds), f"{seconds['wall']:.1f}",
                     f"{seconds['cpu']:.1f}", f"{projected['wall']:.0f}", f"{projected['cpu']:.0f}"])
    rows.append(["total", "", "", sum(len(r.spec.folds) for r in results), f"{totals['wall']:.1f}",
                 f"{totals['cpu']:.1f}", f"{totals['wall@400']:.0f}", f"{totals['cpu@400']:.0f}"])
    print(markdown_table(["Protocol", "Aggregation", "Segments", "Models", "Wall s", "CPU s",
                          f"Wall s @{PAPER_EPOCHS}", f"CPU s @{PAPER_EPOCHS}"], rows))
    projected_wall = wall + (totals["wall@400"] - totals["wall"]) / workers
    dedicated = totals["cpu@400"] / cores
    verdict = "met" if min(projected_wall, dedicated) <= TARGET_SECONDS else "missed"
    print(f"\nEpochs run: {epochs}. Grid wall time: {wall:.0f} s measured, {projected_wall:.0f} s projected to "
          f"{PAPER_EPOCHS} epochs ({projected_wall / 60:.1f} min).")
    print(f"On {cores} dedicated core(s) (CPU time / cores): {dedicated:.0f} s = {dedicated / 60:.1f} min. "
          f"Target {TARGET_SECONDS / 60:.0f} min: {verdict}.")


if __name__ == "__main__":
    main()
