"""gestures quickstart end to end, reduced: a tiny synthetic cohort, 2 folds, a few epochs."""

import csv
import json

from gestures_hub.cli import main
from gestures_hub.predict import DEMO_NOTICE


def test_quickstart_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    code = main(["quickstart", "--out", str(out), "--patients", "5", "--folds", "2", "--epochs", "2",
                 "--max-duration", "12"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "SYNTHETIC" in printed and DEMO_NOTICE in printed
    assert (out / "training" / "metrics.md").is_file()
    model_dir = out / "training" / "final-video"
    assert (model_dir / "SYNTHETIC").is_file() and (model_dir / "model.safetensors").is_file()
    predictions = list((out / "prediction").glob("*.json"))
    assert len(predictions) == 1 and (out / "prediction" / f"{predictions[0].stem}.png").is_file()
    prediction = json.loads(predictions[0].read_text())
    assert prediction["demo"] is True and prediction["label"] in ("FOS", "TCS")
    held_out = prediction["video"]
    assert held_out.split("/")[-1].startswith("syn2024p005")
    assert "syn2024p005" not in (out / "cohort" / "train_manifest.csv").read_text()
    with (out / "cohort" / "manifest.csv").open(newline="") as file:
        truth = next(row for row in csv.DictReader(file) if row["video"] == f"videos/{held_out.split('/')[-1]}")
    label, onset = truth["label"], truth["onset_bilateral"]
    assert f"ground truth (synthetic): {label}{f', spread at {float(onset):.1f} s' if onset else ''}" in printed
    args = json.loads((out / "training" / "training_args.json").read_text())
    assert (args["timeline_weight"], args["final_epochs"]) == (0.5, 2)  # the final model learns the timeline
    for line in ("cohort", "features", "metrics", "model", "timeline", "plot"):
        assert f"  {line}" in printed
