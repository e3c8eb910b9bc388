"""``gestures quickstart``: the whole GESTURES workflow on a small SYNTHETIC cohort, offline, in minutes.

Renders a synthetic cohort, extracts snippet features with the demo model's encoder, trains the BLSTM with
patient-grouped cross-validation and a timeline loss on the cohort's spread times (:mod:`gestures_hub.train`),
exports a video-in model, reloads it through ``AutoModelForVideoClassification.from_pretrained(...,
trust_remote_code=True)`` and predicts a video of a patient held out from everything, next to its ground truth. All
data is synthetic: nothing here says anything about real seizures.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .arguments import UsageError

TIMELINE_WEIGHT = 0.5  # of the per-snippet spread loss (--timeline-weight), as for the embedded demo model
BANNER = "SYNTHETIC DATA — procedurally rendered videos, not patient data; the model is a demo, not for clinical use"


@dataclass(frozen=True)
class QuickstartOptions:
    """Size of the run: the defaults take a few minutes on a 2-core CPU."""

    out: Path = Path("gestures-quickstart")
    force: bool = False
    """Delete an earlier run in ``out`` first; otherwise it is resumed (finished steps are kept)."""
    patients: int = 16
    seed: int = 2024
    folds: int = 4
    epochs: int = 60
    max_duration: float = 30.0


class Steps:
    """Prints ``[i/6] what`` as each step starts, and how long the previous one took."""

    def __init__(self) -> None:
        self.started = self.previous = time.perf_counter()

    def __call__(self, number: int, text: str) -> None:
        now = time.perf_counter()
        if number > 1:
            print(f"      (step {number - 1}: {now - self.previous:.1f} s)", flush=True)
        self.previous = now
        print(f"[{number}/6] {text}", flush=True)

    def done(self) -> None:
        print(f"      (step 6: {time.perf_counter() - self.previous:.1f} s)", flush=True)


def split_manifest(manifest: Path) -> tuple[Path, dict[str, str]]:
    """Write ``train_manifest.csv`` without the last patient; return it and the manifest row of that patient's first
    video."""
    with manifest.open(newline="") as file:
        rows = list(csv.DictReader(file))
    held_out = rows[-1]["patient"]
    train_path = manifest.with_name("train_manifest.csv")
    with train_path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(row for row in rows if row["patient"] != held_out)
    return train_path, next(row for row in rows if row["patient"] == held_out)


def ground_truth(row: dict[str, str]) -> str:
    """What the synthetic cohort's manifest says of a video: its label and, for TCS, when it spread."""
    spread = f", spread at {float(row['onset_bilateral']):.1f} s" if row["onset_bilateral"] else ""
    return f"ground truth (synthetic): {row['label']}{spread}"


def quickstart(options: QuickstartOptions) -> dict[str, Path]:
    """Run the workflow; returns where its outputs were written."""
    from transformers import AutoModelForVideoClassification

    from .arguments import TrainingArguments
    from .extract import extract, summarise
    from .predict import DEMO_MODEL_DIR, predict_video, summary_line, write_outputs
    from .synthetic import generate_cohort
    from .train import train

    out = options.out
    if options.force and out.exists():
        shutil.rmtree(out)
    print(BANNER, flush=True)
    step = Steps()
    manifest = out / "cohort" / "manifest.csv"
    if manifest.is_file():  # rendering is deterministic: an earlier run's cohort is the same one
        step(1, f"reusing the synthetic cohort of an earlier run in {out} (--force starts over)")
    else:
        step(1, f"rendering {options.patients} synthetic patients (seed {options.seed}), the last one held out")
        manifest = generate_cohort(out / "cohort", options.patients, options.seed, fps=15, size=(160, 120),
                                   max_duration=options.max_duration)
    train_manifest, held_out = split_manifest(manifest)
    held_out_video = manifest.parent / held_out["video"]

    step(2, "extracting snippet features with the demo model's encoder (trained on synthetic videos)")
    report = extract(train_manifest, str(DEMO_MODEL_DIR), out / "features", device="cpu")
    print(summarise(report, out / "features"), flush=True)

    step(3, f"training the BLSTM with patient-grouped {options.folds}-fold cross-validation, then on all videos")
    run_dir = out / "training"
    # The timeline loss teaches when TCS seizures spread (the cohort knows). The synthetic classes separate within a
    # few epochs, where validation F1 ties at 1 and would keep the first such epoch; the validation loss, timeline
    # included, goes on improving, so it picks the best epochs.
    train(TrainingArguments(features=str(out / "features"), output_dir=str(run_dir), folds=options.folds,
                            epochs=options.epochs, timeline_weight=TIMELINE_WEIGHT, metric_for_best_model="loss",
                            seed=options.seed, encoder=str(DEMO_MODEL_DIR), resume=run_dir.is_dir()))
    print((run_dir / "metrics.md").read_text(), flush=True)

    step(4, "exporting the video-in model (demo encoder + trained BLSTM)")
    model_dir = run_dir / "final-video"  # its config says trained_on_synthetic_data, as the features did

    step(5, "reloading it with AutoModelForVideoClassification.from_pretrained(..., trust_remote_code=True)")
    model = AutoModelForVideoClassification.from_pretrained(str(model_dir), trust_remote_code=True).eval()

    step(6, f"predicting the held-out synthetic video {held_out_video.name}")
    onset = float(held_out["onset_bilateral"]) if held_out["onset_bilateral"] else None
    prediction = predict_video(model, held_out_video, description=f"{model_dir} (synthetic quickstart model)",
                               true_label=held_out["label"], true_onset=onset)
    paths = write_outputs(prediction, out / "prediction", held_out_video.stem)
    print(summary_line(prediction), flush=True)
    print(f"  {ground_truth(held_out)}", flush=True)
    print(f"  ({model.config.notice})", flush=True)
    step.done()
    return {"cohort": manifest, "features": out / "features", "metrics": run_dir / "metrics.md", "model": model_dir,
            "timeline": paths["csv"], "plot": paths["png"]}


def run(args: argparse.Namespace) -> int:
    if args.patients < args.folds + 1:
        raise UsageError(f"--patients must be at least --folds + 1 = {args.folds + 1} (one patient is held out).")
    start = time.perf_counter()
    options = QuickstartOptions(out=args.out, force=args.force, patients=args.patients, seed=args.seed,
                                folds=args.folds, epochs=args.epochs, max_duration=args.max_duration)
    try:
        paths = quickstart(options)
    except ValueError as error:  # e.g. other options than the run being resumed
        if not (args.out / "training").is_dir() or args.force:
            raise
        raise UsageError(f"{error} To start over with these options: gestures quickstart --force.") from error
    print(f"\nDone in {time.perf_counter() - start:.0f} s. Everything below is SYNTHETIC:")
    for name, path in paths.items():
        print(f"  {name:<9} {path}")
    print(BANNER)
    return 0
