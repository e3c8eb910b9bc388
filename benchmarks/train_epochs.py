"""Time ``gestures train``'s epochs with denormal floats flushed to zero (the default) and kept (IEEE).

As a model converges, its gradients and AdamW's moments reach denormal values (below 1.2e-38), on which x86 CPUs
compute up to 100x slower; ``gestures train`` flushes them to zero (:func:`gestures_hub.denormals.flushed_denormals`,
``GESTURES_FLUSH_DENORMALS=0`` keeps them). This trains fold 0 of the paper-shaped features of
``benchmarks/train_grid.py`` both ways, each in a fresh process, and prints the seconds per epoch early and late in
training, with the last training loss (the same both ways, up to the rounding of values below 1e-30).

    python benchmarks/train_epochs.py                          # BLSTM, 16 segments, 60 epochs, torch's threads
    python benchmarks/train_epochs.py --features DIR --epochs 100 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from train_grid import make_dataset

from gestures_hub.metrics import markdown_table


def train_fold(features: Path, out_dir: Path, args: argparse.Namespace, flush: bool) -> tuple[pd.DataFrame, float]:
    """Train fold 0 in a fresh process; its per-epoch log and the wall time of the whole command."""
    env = os.environ | {"GESTURES_FLUSH_DENORMALS": "1" if flush else "0", "HF_HUB_OFFLINE": "1",
                        "OMP_NUM_THREADS": str(args.threads)}  # torch's thread count at start-up
    command = [sys.executable, "-m", "gestures_hub", "train", "--features", str(features), "--output-dir", str(out_dir),
               "--fold", "0", "--no-final", "--epochs", str(args.epochs), "--aggregation", args.aggregation,
               "--num-segments", str(args.segments)]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        mode = "flushed" if flush else "kept"
        raise SystemExit(f"gestures train failed ({mode} denormals):\n{result.stderr[-3000:]}")
    return pd.read_csv(out_dir / "fold-0" / "log.csv"), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, help="a features dataset (default: write the paper-shaped one)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--aggregation", default="blstm")
    parser.add_argument("--segments", type=int, default=16)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    window = max(1, min(10, args.epochs // 3))
    with tempfile.TemporaryDirectory(prefix="gestures-train-epochs-") as tmp:
        features = args.features or make_dataset(Path(tmp) / "features")
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}; "
              f"fold 0 of {features}, {args.aggregation} with {args.segments} segments, {args.epochs} epochs")
        rows = []
        for flush in (True, False):
            log, wall = train_fold(features, Path(tmp) / f"flush-{int(flush)}", args, flush)
            rows.append({"denormals": "flushed (default)" if flush else "kept (GESTURES_FLUSH_DENORMALS=0)",
                         f"s/epoch, epochs 1-{window}": round(log["seconds"][:window].mean(), 3),
                         f"s/epoch, last {window}": round(log["seconds"][-window:].mean(), 3),
                         "command s": round(wall, 1), "last train loss": round(log["train_loss"].iloc[-1], 5)})
        print(markdown_table(list(rows[0]), [list(row.values()) for row in rows]))
        print(f"Load average (1, 5, 15 min) at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
