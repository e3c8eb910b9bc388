"""The cross-validation report of a training run (:mod:`gestures_hub.train`) and the files of its output directory.

``metrics.json`` (:func:`cross_validation_report`) and ``metrics.md`` with its figures, ``predictions.csv``,
``patients.csv``, ``README.md`` (what each entry of the output directory holds), the ``--calibrate`` temperature in
the final models and ``cv_metrics.json`` in every exported model (:func:`write_report`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .arguments import PROTOCOLS
from .calibration import apply_temperature, reliability_diagram, temperature_report
from .curves import curve_figures
from .features import read_json_state
from .intervals import Bootstrap
from .metrics import (
    EVALUATION_TITLES,
    SEIZURE_LEVEL,
    metrics_markdown,
    patient_order,
    patient_table,
    pooled_predictions,
    spread_metrics,
    summarize_folds,
)
from .splits import short_seizures

if TYPE_CHECKING:
    from .train import Run

EVALUATIONS = ("middle", "dense")
CV_METRICS_FILE = "cv_metrics.json"
FINAL_FEATURES, FINAL_VIDEO = "final-features", "final-video"
"""The models trained on all videos, named by what they take: snippet features, or video (``pixel_values``)."""


def cross_validation_report(run: Run, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``metrics.json`` report of the finished folds: protocol, dataset, settings, per-fold metrics, their
    summary with intervals (``--confidence``, ``--bootstrap``; :mod:`gestures_hub.intervals`), calibration and
    operating points, the fitted temperature with ``--calibrate`` (:mod:`gestures_hub.calibration`) and the
    per-patient table."""
    args, table = run.args, run.bank.table
    timeline = all("spread" in fold for fold in results)
    evaluations = [name + level for name in EVALUATIONS for level in ("", SEIZURE_LEVEL)]
    folds = [{key: fold[key] for key in ("fold", "num_val", "best_epoch", *evaluations, *(("spread",) * timeline))}
             for fold in results]
    labels = np.concatenate([fold["labels"] for fold in results])
    dropped = short_seizures(table, run.min_seizure_duration)
    bootstrap = Bootstrap(args.confidence, args.bootstrap, args.seed)
    return {
        "protocol": {"group_by": args.group_by, "folds": args.folds, "seed": args.seed,
                     "description": PROTOCOLS[args.group_by].format(k=args.folds),
                     "min_seizure_duration": run.min_seizure_duration, "evaluate_discarded": args.evaluate_discarded,
                     "short_seizures": [f"{patient}/{seizure}" for patient, seizure in
                                        zip(dropped["patient"], dropped["seizure"], strict=True)],
                     "discarded_views": table.loc[table["discarded"], "video"].tolist()},
        "dataset": {"path": run.bank.path, "num_videos": len(table), "num_patients": int(table["patient"].nunique()),
                    "synthetic": bool(run.bank.settings.get("synthetic", False))},
        "settings": args.to_dict(),
        "folds": folds,
        "intervals": bootstrap.describe(),
        "summary": summarize_folds(results, bootstrap),
        **({"timeline": spread_metrics(labels, *([value for fold in results for value in fold[key]]
                                                 for key in ("onsets", "spread_times")))} if timeline else {}),
        **({"temperature": temperature_report(labels, np.concatenate([fold["probabilities"][CALIBRATED_EVALUATION]
                                                                      for fold in results]), CALIBRATED_EVALUATION)}
           if args.calibrate else {}),
        "patients": patient_table(results),
    }


CALIBRATED_EVALUATION = "dense"
"""What ``--calibrate`` fits the temperature on: every snippet of a video, what the pipeline and predict compute."""
CALIBRATED_EXPORTS = (FINAL_FEATURES, FINAL_VIDEO, "final-ensemble")
"""The exported models that ``--calibrate`` stores the temperature in (those present)."""


def store_temperature(run: Run, temperature: dict[str, Any]) -> None:
    """Write the fitted temperature into the config of every final model present, and list them in ``temperature``
    (``models``)."""
    temperature["models"] = []
    for name in CALIBRATED_EXPORTS:
        path = run.output_dir / name / "config.json"
        if path.is_file():
            config = read_json_state(path, f"the configuration of the {name} model")
            run.write_json(path, {**config, "temperature": temperature["temperature"]})
            temperature["models"].append(name)


def write_figures(run: Run, report: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """The reliability diagram, ROC and precision-recall curves and confusion matrices next to ``metrics.md``, and
    their file names in ``report["figures"]``."""
    evaluations = pooled_predictions(results)
    curves = {EVALUATION_TITLES[name]: (predictions.labels, predictions.scores)
              for name, predictions in evaluations.items()}
    temperature = report.get("temperature")
    if temperature:
        dense = evaluations[temperature["evaluation"]]
        curves[f"{EVALUATION_TITLES[temperature['evaluation']]}, T = {temperature['temperature']:.2f}"] = (
            dense.labels, apply_temperature(dense.scores, temperature["temperature"]))
    synthetic = report["dataset"]["synthetic"]
    reliability = reliability_diagram(curves, run.output_dir / "reliability.png",
                                      f"Out-of-fold reliability{' (synthetic data)' if synthetic else ''}")
    bootstrap = Bootstrap(**{key: report["intervals"][key] for key in ("confidence", "resamples", "seed")})
    report["figures"] = {"reliability": reliability.name,
                         **curve_figures(evaluations, EVALUATION_TITLES, run.output_dir, bootstrap,
                                         patient_order(results), "Synthetic data, not patients" if synthetic else "")}


OUTPUT_README = """# {title}

Written by `gestures train` (gestures-hub {version}). What each entry holds:

| entry | what it is |
|---|---|
| `metrics.md`, `metrics.json` | cross-validation results, per view and per seizure (names defined in metrics.md) |
| `predictions.csv` | the validation TCS probability of every video, per fold |
| `patients.csv`, `*.png` | per-patient results; reliability diagram, ROC and PR curves, confusion matrices |
| `training_args.json` | the options of this run (`--resume` needs the same) |
| `fold-<i>/best/` | the best epoch of fold i: a model folder (`from_pretrained`) that takes {best_input} |
| `fold-<i>/checkpoint/`, `fold-<i>/log.csv` | the state `--resume` continues from; one row per epoch |
| `final-features/` | the model trained on all usable videos, on features: takes snippet features, not video |
| `final-video/` | the final model that takes video (`pixel_values`: the pipeline, `gestures predict`) |
| `final-ensemble/` | with `--encoder`: the fold models behind it, one encoder pass, mean probability |
| `final-run/` | the state of the final model's training, for `--resume` |
| `processes/` | which processes ran and a digest of the weights each trained |

Models that take snippet features need features extracted as the training data was (see its settings); models that
take video read files through their video processor (`AutoVideoProcessor`, the pipeline, `gestures predict`).
"""


def write_output_readme(run: Run) -> None:
    """``OUTPUT_DIR/README.md``: what each folder and file of the run holds, and which models take video."""
    from . import __version__

    video = run.args.train_encoder
    best_input = "video (`pixel_values`)" if video else "snippet features (`snippet_features`), not video"
    title = "GESTURES training run" + (" (SYNTHETIC data)" if run.bank.settings.get("synthetic") else "")
    (run.output_dir / "README.md").write_text(OUTPUT_README.format(title=title, version=__version__,
                                                                   best_input=best_input))


def write_report(run: Run, report: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """``metrics.json``, ``metrics.md`` and its figures, ``predictions.csv``, ``patients.csv``; the temperature into
    the final models (``--calibrate``) and ``cv_metrics.json`` into every exported model (main process)."""
    if not run.is_main:
        return
    write_output_readme(run)
    if "temperature" in report:
        store_temperature(run, report["temperature"])
    write_figures(run, report, results)
    run.write_json(run.output_dir / "metrics.json", report)
    (run.output_dir / "metrics.md").write_text(metrics_markdown(report))
    pd.DataFrame(report["patients"]).to_csv(run.output_dir / "patients.csv", index=False)
    rows = [{"fold": fold["fold"], "video": video, "patient": fold["patients"][i], "seizure": fold["seizures"][i],
             "label": label,
             **{f"tcs_probability_{name}": fold["probabilities"][name][i] for name in EVALUATIONS},
             **({"onset_bilateral": fold["onsets"][i], "spread_time": fold["spread_times"][i]} if "spread" in fold
                else {})}
            for fold in results for i, (video, label) in enumerate(zip(fold["videos"], fold["labels"], strict=True))]
    pd.DataFrame(rows).to_csv(run.output_dir / "predictions.csv", index=False)
    exports = [run.output_dir / f"fold-{fold['fold']}" / "best" for fold in results] + [
        run.output_dir / name for name in (FINAL_FEATURES, FINAL_VIDEO)]
    for directory in exports:
        if directory.is_dir():
            run.write_json(directory / CV_METRICS_FILE, report)



def report_left_out(run: Run) -> None:
    """Say which seizures are too short for the protocol and which views are discarded (main process)."""
    if not run.is_main:
        return
    table = run.bank.table
    short = short_seizures(table, run.min_seizure_duration)
    if len(short):
        listed = ", ".join(f"{p}/{s} ({d:.1f} s)" for p, s, d in zip(short["patient"], short["seizure"],
                                                                   short["duration"], strict=True))
        print(f"Leaving out {len(short)} seizure(s) shorter than {run.min_seizure_duration:g} s "
              f"(--min-seizure-duration): {listed}", file=sys.stderr)
    discarded = table.loc[table["discarded"], "video"].tolist()
    if discarded:
        use = "validated on, never trained on" if run.args.evaluate_discarded else "left out (--evaluate-discarded " \
              "validates on them)"
        print(f"{len(discarded)} view(s) marked discarded are {use}: {', '.join(discarded)}", file=sys.stderr)

