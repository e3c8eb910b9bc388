"""Model and dataset cards: rendered from real folders, parsed back with huggingface_hub."""

import json
import re
import shutil
from fnmatch import fnmatch
from importlib.resources import files
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch
from cards_fixtures import (
    EXAMPLE_CV_METRICS,
    make_cv_metrics,
    save_tiny_model,
    training_args,
    write_features,
)
from huggingface_hub import DatasetCard, ModelCard

from gestures_hub.cards import render_dataset_card, render_model_card

REPO = "org/gestures-blstm-features"
MODEL_SECTIONS = ("## Model description", "## How to use", "## Training data", "## Training procedure",
                  "## Evaluation", "## Intended use", "## Out-of-scope use", "## Limitations and risks",
                  "## Citation")
SYNTHETIC_WARNING = "**⚠️ This model was trained on SYNTHETIC videos, for demonstration only."


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


def model_dir_with(tmp_path: Path, tiny_model_dir: Path, cv_metrics=None, args=None) -> Path:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    if cv_metrics is not None:
        (model_dir / "cv_metrics.json").write_text(json.dumps(cv_metrics))
    if args is not None:
        (model_dir / "training_args.json").write_text(json.dumps(args))
    return model_dir


def saved_and_loaded(card, path: Path, card_class):
    card.save(path)
    return card_class.load(path)


def body(card) -> str:
    """The Markdown after the YAML block."""
    return card.text


def test_model_card_carries_the_cross_validation_results(tmp_path, tiny_model_dir):
    cv = json.loads(EXAMPLE_CV_METRICS.read_text())
    model_dir = model_dir_with(tmp_path, tiny_model_dir, cv, training_args())
    card = saved_and_loaded(render_model_card(model_dir, repo_id=REPO, dataset_id="org/gestures-features",
                                              space_id="org/gestures-demo"), tmp_path / "README.md", ModelCard)

    data = card.data
    assert (data.library_name, data.pipeline_tag, data.license) == ("transformers", "video-classification", "mit")
    assert data.tags == ["gestures", "epilepsy", "seizure", "video-classification"]
    assert data.datasets == ["org/gestures-features"]
    assert data.model_name == "gestures-blstm-features"
    reported = {(r.metric_type, r.metric_args["snippets"]): r for r in data.eval_results}
    hub_ids = {"accuracy": "accuracy", "f1": "f1", "precision": "precision", "recall": "recall", "auroc": "roc_auc"}
    assert len(reported) == 2 * len(hub_ids)
    for mode in ("middle", "dense"):
        for key, hub_id in hub_ids.items():
            result = reported[hub_id, mode]
            assert result.metric_value == pytest.approx(cv["summary"][mode]["mean"][key], abs=5e-5)
            assert result.metric_args["std"] == pytest.approx(cv["summary"][mode]["std"][key], abs=5e-5)
            assert result.task_type == "video-classification"
            assert "patient-grouped stratified 10-fold cross-validation" in result.dataset_name
            assert result.dataset_args["group_by"] == "patient" and result.dataset_args["folds"] == 10

    text = body(card)
    positions = [text.index(section) for section in MODEL_SECTIONS]
    assert positions == sorted(positions)
    assert "not a medical device" in text and SYNTHETIC_WARNING not in text
    assert "| Snippet encoder | `none`" in text and "bidirectional LSTM, 1 layer(s) of 8 hidden units" in text
    assert f'from_pretrained("{REPO}", trust_remote_code=True)' in text
    assert f"gestures predict VIDEO --model {REPO}" in text
    assert "https://huggingface.co/spaces/org/gestures-demo" in text
    assert "| `lr` | 0.01 |" in text
    fold_rows = [line for line in text.splitlines() if re.match(r"\| \d+ \| \d+ \| \d+ \|", line)]
    assert len(fold_rows) == 2 * 10
    assert "| **mean ± sd** | | | 0.956 ± 0.029 |" in text
    assert "| **pooled** | 354 | | 0.955 |" in text and "TN 198 · FP 6 · FN 10 · TP 140" in text
    assert "Pérez-García" in text and "2106.12014" in text and "MICCAI 2021" in text
    assert "Ourselin" in text and "Transfer Learning of Deep Spatiotemporal Networks" in text


def test_usage_snippet_runs_against_the_model(tmp_path, tiny_model_dir):
    model_dir = model_dir_with(tmp_path, tiny_model_dir, make_cv_metrics())
    text = body(render_model_card(model_dir, repo_id=REPO))
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1).replace(REPO, str(model_dir))
    namespace: dict = {}
    exec(snippet, namespace)
    assert namespace["probabilities"].shape == (1, 2)
    assert torch.allclose(namespace["probabilities"].sum(-1), torch.ones(1))


@pytest.mark.parametrize("marker", ["cv_metrics", "config"])
def test_synthetic_model_card_warns_at_the_top(tmp_path, tiny_model_dir, marker):
    model_dir = model_dir_with(tmp_path, tiny_model_dir, make_cv_metrics(synthetic=marker == "cv_metrics"),
                               training_args())
    if marker == "config":
        config = json.loads((model_dir / "config.json").read_text())
        (model_dir / "config.json").write_text(json.dumps({**config, "trained_on_synthetic_data": True}))
    card = saved_and_loaded(render_model_card(model_dir, repo_id="org/gestures-demo"), tmp_path / "README.md",
                            ModelCard)
    assert "synthetic-data" in card.data.tags
    first_lines = "\n".join(body(card).strip().splitlines()[:4])
    assert SYNTHETIC_WARNING in first_lines and "not for clinical use" in body(card)[:400]


def test_seizure_wise_folds_are_flagged(tmp_path, tiny_model_dir):
    model_dir = model_dir_with(tmp_path, tiny_model_dir, make_cv_metrics(group_by="seizure"))
    text = body(render_model_card(model_dir, repo_id=REPO))
    evaluation = text[text.index("## Evaluation"):text.index("## Intended use")]
    limitations = text[text.index("## Limitations and risks"):]
    assert "**seizure-wise**" in evaluation and "Seizure-wise folds leak patient identity" in limitations


def test_card_without_evaluation(tmp_path, tiny_model_dir):
    model_dir = model_dir_with(tmp_path, tiny_model_dir)
    with pytest.raises(FileNotFoundError, match="cv_metrics.json not found.*--allow-no-eval"):
        render_model_card(model_dir, repo_id=REPO)
    card = saved_and_loaded(render_model_card(model_dir, repo_id=REPO, allow_no_eval=True), tmp_path / "README.md",
                            ModelCard)
    assert card.data.eval_results is None and "model-index" not in card.content
    assert "**This model has not been evaluated**" in body(card)
    assert "the training procedure is not recorded" in body(card)
    assert all(section in body(card) for section in MODEL_SECTIONS)


def test_card_says_whether_the_timeline_was_trained(tmp_path, tiny_model_dir):
    model_dir = model_dir_with(tmp_path, tiny_model_dir, args={"timeline_weight": 0.5, "loss": "weighted"})
    card = render_model_card(model_dir, repo_id=REPO, allow_no_eval=True)
    assert "trained to show when a TCS seizure becomes bilateral: a per-snippet loss\n(weight 0.5)" in body(card)
    assert "not trained on their own" not in body(card)
    unrecorded = render_model_card(model_dir_with(tmp_path / "b", tiny_model_dir), repo_id=REPO, allow_no_eval=True)
    assert "trained to show" not in body(unrecorded) and "not trained on their own" not in body(unrecorded)


def test_clear_errors_for_bad_folders(tmp_path, tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        render_model_card(tmp_path / "nowhere", repo_id=REPO)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        render_model_card(tmp_path / "empty", repo_id=REPO)
    model_dir = model_dir_with(tmp_path, tiny_model_dir)
    (model_dir / "cv_metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="cv_metrics.json is not valid JSON"):
        render_model_card(model_dir, repo_id=REPO)
    (model_dir / "cv_metrics.json").write_text(json.dumps({"folds": []}))
    with pytest.raises(ValueError, match=r"lacks \['protocol', 'dataset', 'summary'\]"):
        render_model_card(model_dir, repo_id=REPO)
    with pytest.raises(FileNotFoundError, match="no Parquet shards"):
        render_dataset_card(tmp_path / "empty", repo_id="org/features")


def test_dataset_card_has_configs_and_schema(tmp_path):
    features_dir = write_features(tmp_path / "features")
    card = saved_and_loaded(render_dataset_card(features_dir, repo_id="org/gestures-features", license="cc-by-4.0",
                                                source="Converted from doi 10.5522/04/14781771."),
                            tmp_path / "README.md", DatasetCard)
    configs = card.data.configs
    assert configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}]
    shards = sorted(p.relative_to(features_dir).as_posix() for p in features_dir.rglob("*.parquet"))
    assert shards and all(fnmatch(shard, configs[0]["data_files"][0]["path"]) for shard in shards)
    assert card.data.license == "cc-by-4.0" and card.data.size_categories == ["n<1K"]
    assert card.data.task_categories == ["video-classification"] and "synthetic-data" not in card.data.tags

    text = body(card)
    for section in ("## Dataset structure", "### Schema", "### Splits", "## Extraction settings", "## Provenance",
                    "## Privacy", "## Citation"):
        assert section in text
    assert "| `features` | float32 array (n_snippets, 16) |" in text
    assert "| `label` | class label (0 = FOS, 1 = TCS) |" in text
    assert "| `start_times` | list of float32 |" in text and "| `video` | string |" in text
    assert "6 videos of 3 seizures from 2 patients: 4 FOS, 2 TCS, 0 unknown." in text
    assert "| `encoder` | r2plus1d_34 |" in text and "| `stride` | 1 |" in text and "| `synthetic` | false |" in text
    assert "encoder of `gestures-blstm`" in text and "random weights" not in text
    assert "Converted from doi 10.5522/04/14781771." in text
    assert "no frames" in text and "low but not zero" in text
    assert 'load_features("org/gestures-features")' in text


def test_dataset_card_configs_work_with_datasets(tmp_path):
    features_dir = write_features(tmp_path / "features")
    render_dataset_card(features_dir, repo_id="org/gestures-features").save(features_dir / "README.md")
    dataset = datasets.load_dataset(str(features_dir), split="train")
    assert dataset.num_rows == 6 and dataset.features["features"].shape == (None, 16)


def test_synthetic_dataset_card_warns(tmp_path):
    features_dir = write_features(tmp_path / "features", synthetic=True)
    card = render_dataset_card(features_dir, repo_id="org/gestures-features-synthetic")
    assert "synthetic-data" in card.data.tags
    assert "**⚠️ SYNTHETIC data" in "\n".join(body(card).strip().splitlines()[:4])


def test_templates_ship_with_the_package():
    templates = files("gestures_hub") / "card_templates"
    names = ("model_card.md.j2", "dataset_card.md.j2")
    assert all((templates / name).is_file() for name in names)
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["gestures_hub"]
    assert all(any(fnmatch(f"card_templates/{name}", pattern) for pattern in patterns) for name in names)


def test_model_card_from_a_real_training_run(tmp_path):
    """Train a tiny model with cross-validation (`gestures train --calibrate`), then render the card of its exported
    final model: intervals, calibration, the temperature and the operating points, with metrics.json's numbers."""
    from helpers import events_dataset

    from gestures_hub.cli import main

    features = events_dataset(tmp_path / "features", "presence", num_videos=24, length=30)
    assert main(["train", "--features", features, "--output-dir", str(tmp_path / "run"), "--num-segments", "4",
                 "--folds", "3", "--epochs", "4", "--hidden-size", "8", "--batch-size", "8", "--calibrate",
                 "--bootstrap", "500"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    final = tmp_path / "run" / "final-features"
    assert json.loads((final / "cv_metrics.json").read_text()) == metrics
    temperature = metrics["temperature"]
    assert json.loads((final / "config.json").read_text())["temperature"] == temperature["temperature"]
    assert temperature["models"] == ["final-features"] and temperature["evaluation"] == "dense"
    assert json.loads((tmp_path / "run" / "fold-0" / "best" / "config.json").read_text()).get("temperature", 1.0) == 1
    assert temperature["after"]["log_loss"] <= temperature["before"]["log_loss"]
    assert temperature["after"]["accuracy"] == temperature["before"]["accuracy"]
    assert metrics["intervals"] == {"method": metrics["intervals"]["method"], "confidence": 0.95, "resamples": 500,
                                    "seed": 0}
    for name in ("reliability", "roc", "pr", "confusion"):
        assert (tmp_path / "run" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{name}]({name}.png)" in (tmp_path / "run" / "metrics.md").read_text()
    patients = pd.read_csv(tmp_path / "run" / "patients.csv")
    assert len(patients) == 24 and patients["views"].sum() == 24  # one video per patient in this dataset
    card = render_model_card(final, repo_id="org/gestures-synthetic-demo")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    results = {(r.metric_type, r.metric_args["snippets"], r.metric_args["level"]): r.metric_value
               for r in loaded.data.eval_results}
    assert set(metrics["summary"]) == {"middle", "middle_seizure", "dense", "dense_seizure"}
    for mode, summary in metrics["summary"].items():
        key = (mode.removesuffix("_seizure"), "seizure" if mode.endswith("_seizure") else "view")
        assert results[("accuracy", *key)] == round(summary["mean"]["accuracy"], 4)
        assert results[("f1", *key)] == round(summary["mean"]["f1"], 4)
    assert "### Middle snippets, per seizure" in loaded.text and "| Fold | Seizures | Best epoch |" in loaded.text
    assert "synthetic-data" in loaded.data.tags
    assert "They were not trained on their own (the paper's seizure-level loss only)" in loaded.text

    seizure = metrics["summary"]["middle_seizure"]
    low, high = seizure["interval"]["accuracy"]
    assert f"| **pooled** | 24 | | {seizure['pooled']['accuracy']:.3f} ({low:.3f}-{high:.3f}) |" in loaded.text
    assert "95% confidence intervals:\nBCa bootstrap resampling patients" in loaded.text
    calibration = seizure["calibration"]
    assert (f"ECE {calibration['ece']:.3f} (10 equal-width\nbins of the TCS probability), Brier score "
            f"{calibration['brier']:.3f}, log-loss {calibration['log_loss']:.3f}.") in loaded.text
    point = seizure["operating_points"][0]
    low, high = point["interval"]
    assert (f"| 90% | {point['sensitivity']:.3f} ({low:.3f}-{high:.3f}) | {point['threshold']:.3f} | "
            f"{point['specificity']:.3f} |") in loaded.text
    assert f"**Temperature scaling**: T = {temperature['temperature']:.3f}" in loaded.text
    assert "**All of these numbers come from synthetic videos**" in loaded.text
