"""Documented options, each run for its effect: predict (--model, --stride, repeated names, features-only models, the
CSV), push (--dataset-id, --space-id, --license, --token), synth (--workers, --tcs-fraction), the Space's
GESTURES_MODEL, the 32-frame preset, torchvision R(2+1)D-18 / MC3-18 checkpoints and reproduce's workers."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_features
from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard
from torch import nn
from torchvision.models.video import resnet as tv

import gestures_hub.hub as hub
from gestures_hub import GesturesForVideoClassification
from gestures_hub.cli import main
from gestures_hub.importers import load_weights
from gestures_hub.model import SYNTHETIC_NOTICE as DEMO_NOTICE
from gestures_hub.model import GesturesVideoProcessor
from gestures_hub.model.video_reader import count_snippets
from gestures_hub.presets import DEMO_MODEL_DIR, get_config
from gestures_hub.reproduce import ReproduceArguments, grid_report, load_bank, run_grid
from gestures_hub.sample_videos import write_test_video

REPO = Path(__file__).resolve().parents[1]
FPS = 15  # the demo model's rate: the test videos need no resampling, so frame counts are exact
FRAMES_PER_SNIPPET = 8  # the demo model's snippets


# --- gestures predict -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 4 s video at 15 fps: 60 frames."""
    return write_test_video(tmp_path_factory.mktemp("clip") / "clip.mp4", duration=4.0, fps=FPS, pattern="bar")


@pytest.fixture(scope="module")
def resaved_demo(tmp_path_factory) -> Path:
    """The embedded demo model, loaded and saved again with save_pretrained."""
    folder = tmp_path_factory.mktemp("resaved-demo")
    GesturesForVideoClassification.from_pretrained(DEMO_MODEL_DIR).save_pretrained(folder)
    return folder


def predict_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["predict", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_predict_model_folder_is_loaded_and_named(clip, resaved_demo, tmp_path, capsys):
    """--model DIR: the folder's model runs (same weights as the embedded demo, so the same probabilities) and the
    outputs name the folder instead of the embedded model."""
    code, default = predict_json(capsys, str(clip), "--out", str(tmp_path / "default"))
    assert code == 0 and default["model"] == "embedded demo model (gestures_hub/demo_model)"
    code, chosen = predict_json(capsys, str(clip), "--model", str(resaved_demo), "--out", str(tmp_path / "dir"))
    assert code == 0
    assert chosen["model"] == str(resaved_demo) and chosen["predictions"][0]["model"] == str(resaved_demo)
    assert chosen["demo"] is True and chosen["notice"] == DEMO_NOTICE  # the saved config keeps the synthetic flag
    assert not chosen["predictions"][0]["random_weights"]
    # identical weights, identical frames, same process and threads: bit-identical results
    assert chosen["predictions"][0]["probabilities"] == default["predictions"][0]["probabilities"]
    assert chosen["predictions"][0]["timeline"] == default["predictions"][0]["timeline"]
    assert f"# model: {resaved_demo}" in (tmp_path / "dir" / "clip.csv").read_text().splitlines()


def test_predict_stride_sets_the_timeline(clip, tmp_path, capsys):
    """--stride 4: count_snippets(60, 8, 4) = 14 snippets starting every 4/15 s (the default stride gives 7)."""
    frames = 4 * FPS
    for stride, expected in ((None, count_snippets(frames, FRAMES_PER_SNIPPET)),
                             (4, count_snippets(frames, FRAMES_PER_SNIPPET, 4))):
        flags = [] if stride is None else ["--stride", str(stride)]
        code, report = predict_json(capsys, str(clip), *flags, "--out", str(tmp_path / str(stride)))
        assert code == 0
        timeline = report["predictions"][0]["timeline"]
        assert len(timeline) == expected
        # to_dict rounds times to 4 decimals, hence 1e-4
        np.testing.assert_allclose([row["time"] for row in timeline],
                                   np.arange(expected) * (stride or FRAMES_PER_SNIPPET) / FPS, atol=1e-4)
    assert (count_snippets(frames, FRAMES_PER_SNIPPET), count_snippets(frames, FRAMES_PER_SNIPPET, 4)) == (7, 14)


def test_predict_same_file_name_in_two_folders_and_the_csv(tmp_path, capsys):
    """Two videos named clip.mp4 (4 s and 5 s) give clip.* and clip-2.*, each with its own video's timeline; the CSV
    has its comment lines, the header and one row per snippet whose probabilities sum to 1."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_test_video(tmp_path / "a" / "clip.mp4", duration=4.0, fps=FPS, pattern="bar")
    second = write_test_video(tmp_path / "b" / "clip.mp4", duration=5.0, fps=FPS, pattern="bar")
    out = tmp_path / "out"
    code, report = predict_json(capsys, str(first), str(second), "--out", str(out))
    assert code == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(
        f"{stem}.{suffix}" for stem in ("clip", "clip-2") for suffix in ("csv", "json", "png"))
    assert all(path.stat().st_size > 0 for path in out.iterdir())
    for stem, video, seconds in (("clip", first, 4), ("clip-2", second, 5)):
        summary = json.loads((out / f"{stem}.json").read_text())
        assert summary["video"] == str(video)
        n = count_snippets(seconds * FPS, FRAMES_PER_SNIPPET)
        assert len(summary["timeline"]) == n
        lines = (out / f"{stem}.csv").read_text().splitlines()
        comments = [line for line in lines if line.startswith("#")]
        familiarity = summary["familiarity"]
        assert comments == [f"# video: {video}", "# model: embedded demo model (gestures_hub/demo_model)",
                            f"# label: {summary['label']}",
                            # a test-pattern clip is nothing like the demo model's synthetic cohort
                            f"# UNLIKE THE TRAINING DATA ({familiarity['unusual_fraction']:.0%} of snippets unusual, "
                            f"threshold {familiarity['video_threshold']:.0%}): this prediction may mean nothing",
                            f"# {DEMO_NOTICE}"]
        assert lines[:len(comments)] == comments  # comments come first
        rows = list(csv.reader(lines[len(comments):]))
        assert rows[0] == ["start_time_s", "p_FOS", "p_TCS", "unusualness", "unusual"]
        assert len(rows) - 1 == n
        values = np.array(rows[1:], dtype=float)[:, :3]
        np.testing.assert_allclose(values[:, 0], np.arange(n) * FRAMES_PER_SNIPPET / FPS, atol=5e-4)  # "%.3f"
        # each probability is written with 5 decimals (error <= 5e-6 each), the pair sums to 1 in float32
        np.testing.assert_allclose(values[:, 1:].sum(axis=1), 1.0, atol=2e-5)
        # the same probabilities as the JSON's full floats, up to that 5-decimal rounding (plus float slack)
        np.testing.assert_allclose(values[:, 1:], [[row["FOS"], row["TCS"]] for row in summary["timeline"]],
                                   atol=5e-6 + 1e-9)
    assert [p["video"] for p in report["predictions"]] == [str(first), str(second)]


def test_predict_with_a_features_only_model_is_a_clear_error(clip, tmp_path, capsys):
    folder = tmp_path / "features-model"
    GesturesForVideoClassification(get_config("tiny-features")).save_pretrained(folder)
    capsys.readouterr()  # save_pretrained's progress bar
    assert main(["predict", str(clip), "--model", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after transformers' loading progress bar
    assert err.startswith("gestures predict: error: ")
    assert "takes precomputed features (encoder='none')" in err and str(folder) in err
    assert not (tmp_path / "out").exists()


# --- gestures push ----------------------------------------------------------------------------------------------


@dataclass
class FakeHub:
    """Records what a push asks of the Hub, and the token of each client that asked."""

    repos: list[dict] = field(default_factory=list)
    commits: list[dict] = field(default_factory=list)
    tokens: list[str | None] = field(default_factory=list)

    def create_repo(self, repo_id, **kwargs):
        self.repos.append({"repo_id": repo_id, **kwargs})

    def list_repo_files(self, repo_id, **kwargs):
        return [".gitattributes"]

    def create_commit(self, repo_id, operations, **kwargs):
        self.commits.append({"repo_id": repo_id, "operations": list(operations), **kwargs})
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/abc", commit_message="",
                          commit_description="", oid="abc")


def network_call(*args, **kwargs):
    raise AssertionError("the push reached the network")


def recording(fake: FakeHub, name: str):
    """An ``HfApi`` method that notes the client's token and forwards the call to ``fake``."""
    def method(api, *args, **kwargs):
        fake.tokens.append(api.token)
        return getattr(fake, name)(*args, **kwargs)

    return method


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setattr(hub, "is_offline_mode", lambda: False)
    for name in ("upload_folder", "upload_file", "preupload_lfs_files", "whoami"):
        monkeypatch.setattr(HfApi, name, network_call)
    for name in ("create_repo", "list_repo_files", "create_commit"):
        monkeypatch.setattr(HfApi, name, recording(fake, name))
    return fake


def test_push_card_options_and_token(fake_hub, tmp_path, capsys):
    model_dir = tmp_path / "model"
    GesturesForVideoClassification(get_config("tiny-features")).save_pretrained(model_dir)
    assert main(["push", str(model_dir), "--repo-id", "org/gestures-blstm", "--allow-no-eval", "--dataset-id",
                 "org/seizure-features", "--space-id", "org/gestures-space", "--license", "apache-2.0",
                 "--token", "hf_secret_test"]) == 0
    assert fake_hub.tokens == ["hf_secret_test"] * 3  # create_repo, list_repo_files, create_commit
    (commit,) = fake_hub.commits
    readme = next(op.path_or_fileobj for op in commit["operations"]
                  if isinstance(op, CommitOperationAdd) and op.path_in_repo == "README.md")
    (tmp_path / "README.md").write_bytes(readme)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.datasets == ["org/seizure-features"]
    assert card.data.license == "apache-2.0"
    assert "https://huggingface.co/spaces/org/gestures-space" in card.text

    # without the options: no dataset, no Space link, the default license, and the saved login (no token)
    fake_hub.commits.clear()
    fake_hub.tokens.clear()
    assert main(["push", str(model_dir), "--repo-id", "org/gestures-blstm", "--allow-no-eval"]) == 0
    readme = next(op.path_or_fileobj for op in fake_hub.commits[0]["operations"] if op.path_in_repo == "README.md")
    (tmp_path / "README.md").write_bytes(readme)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.datasets is None and card.data.license == "mit" and "huggingface.co/spaces/" not in card.text
    assert fake_hub.tokens == [None] * 3
    capsys.readouterr()


# --- gestures synth ---------------------------------------------------------------------------------------------

SYNTH = ["synth", "--patients", "1", "--seizures-per-patient", "3", "--min-duration", "2", "--max-duration", "3",
         "--fps", "10", "--size", "64x48", "--seed", "5", "--quiet"]


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def labels(folder: Path) -> list[str]:
    with (folder / "manifest.csv").open(newline="") as file:
        return [row["label"] for row in csv.DictReader(file)]


def test_synth_workers_give_the_same_bytes(tmp_path, capsys):
    assert main([*SYNTH, "--out", str(tmp_path / "one"), "--workers", "1"]) == 0
    assert main([*SYNTH, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    one, two = tree_bytes(tmp_path / "one"), tree_bytes(tmp_path / "two")
    assert len([name for name in one if name.endswith(".mp4")]) == 3
    assert one == two
    capsys.readouterr()


def test_synth_tcs_fraction_sets_the_label_mix(tmp_path, capsys):
    for fraction, expected in (("1.0", "TCS"), ("0.0", "FOS")):
        out = tmp_path / fraction
        assert main([*SYNTH, "--out", str(out), "--workers", "1", "--tcs-fraction", fraction]) == 0
        assert labels(out) == [expected] * 3
        assert f"3 SYNTHETIC videos ({3 * (expected == 'TCS')} TCS, {3 * (expected == 'FOS')} FOS)" in \
            capsys.readouterr().out
    assert main([*SYNTH, "--out", str(tmp_path / "bad"), "--tcs-fraction", "1.5"]) == 2
    assert "tcs_fraction must be in [0, 1]" in capsys.readouterr().err


# --- the Space with GESTURES_MODEL ------------------------------------------------------------------------------


def test_space_predictor_loads_the_gestures_model_folder(resaved_demo, tmp_path, monkeypatch):
    """space_server.py always starts the embedded model (it pops GESTURES_MODEL, with no override), so the app's
    Predictor.load is tested in-process with the folder GESTURES_MODEL would name."""
    monkeypatch.setenv("GESTURES_SPACE_TMP", str(tmp_path / "space"))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "space" / "gradio"))
    spec = importlib.util.spec_from_file_location("gestures_space_app_under_test", REPO / "space" / "app.py")
    app = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, app)
    spec.loader.exec_module(app)
    assert Path(app.SPACE_TMP) == tmp_path / "space"
    demo = app.Predictor.load(str(resaved_demo))
    assert demo.description == str(resaved_demo) and demo.pretrained and demo.demo
    assert demo.name == ("GESTURES demo model (compact R(2+1)D encoder, BLSTM aggregator, 64x64 frames at 15 fps), "
                         "trained on synthetic videos only")
    folder = tmp_path / "real"
    GesturesForVideoClassification(get_config("tiny-videomae")).save_pretrained(folder)
    other = app.Predictor.load(str(folder))
    assert not other.demo and other.pretrained
    assert other.name == f"GESTURES model (VideoMAE encoder, BLSTM aggregator, 32x32 frames at 15 fps) from {folder}"


# --- presets and torchvision checkpoints ------------------------------------------------------------------------


def test_blstm_32f_preset_runs_32_frame_snippets(one_thread):
    config = get_config("gestures-blstm-32f", image_size=32)
    assert config.frames_per_snippet == 32 and config.encoder == "r2plus1d_34" and config.aggregation == "blstm"
    assert GesturesVideoProcessor(config).snippet_stride == 32  # snippets are cut 32 frames apart by default
    torch.manual_seed(0)
    model = GesturesForVideoClassification(config).eval()
    with torch.no_grad():
        out = model(pixel_values=torch.randn(1, 2, 3, 32, 32, 32))
    assert out.logits.shape == (1, 2) and out.snippet_features.shape == (1, 2, 512)
    assert torch.isfinite(out.logits).all()


def randomise_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize("name", ["r2plus1d_18", "mc3_18"])
def test_torchvision_checkpoints_load_with_dataparallel_prefix(name, tmp_path, one_thread):
    torch.manual_seed(0)
    reference = getattr(tv, name)(weights=None)
    randomise_batchnorm(reference)  # so that the running statistics must be loaded too
    torch.save({f"module.{k}": v for k, v in reference.state_dict().items()}, tmp_path / f"{name}.pth")
    model = GesturesForVideoClassification(get_config(name, image_size=32)).eval()
    x = torch.randn(1, 3, 8, 32, 32)
    reference.fc = nn.Identity()
    with torch.no_grad():
        before = model.gestures.encode_snippets(x)
        assert load_weights(model, tmp_path / f"{name}.pth") == "video_resnet"
        # the same float32 operations in the same order: torch.testing's float32 defaults (1.3e-6 relative)
        torch.testing.assert_close(model.gestures.encode_snippets(x), reference.eval()(x))
    assert not torch.allclose(before, model.gestures.encode_snippets(x).detach())  # the weights did change


# --- gestures reproduce --workers -------------------------------------------------------------------------------


def test_reproduce_workers_give_the_same_results(tmp_path, one_thread):
    """workers=2 (each process on one thread) trains the same stacks as workers=1 in this process (one thread too):
    identical probabilities and metrics, exactly."""
    rng = np.random.default_rng(0)
    sequences = [rng.standard_normal((int(rng.integers(12, 24)), 4)) + 0.8 * (i % 2) for i in range(16)]
    features = write_features(tmp_path / "f", sequences, [i % 2 for i in range(16)])
    reports, results = {}, {}
    for workers in (1, 2):
        options = ReproduceArguments(features=features, output_dir=str(tmp_path / str(workers)),
                                     protocols=["patient"], aggregations=["blstm"], segments=[4], gammas=[2.0],
                                     folds=2, epochs=2, hidden_size=4, batch_size=8, precision="fp32",
                                     workers=workers)
        bank = load_bank(options)
        results[workers] = run_grid(options, bank)
        reports[workers] = grid_report(bank, options, results[workers])
    assert len(results[1]) == len(results[2]) >= 1
    for a, b in zip(results[1], results[2], strict=True):
        assert (a.spec.gammas, a.spec.folds) == (b.spec.gammas, b.spec.folds) and a.best_epochs == b.best_epochs
        assert len(a.probabilities) == len(a.spec.folds)
        for pa, pb in zip(a.probabilities, b.probabilities, strict=True):
            assert set(pa) == set(pb) == {"middle", "dense"}
            for key in pa:
                assert np.array_equal(pa[key], pb[key]), key
    one, two = (reports[w]["protocols"]["patient"] for w in (1, 2))
    assert len(one["settings"]) == 1 and [fold["fold"] for fold in one["settings"][0]["folds"]] == [0, 1]
    assert as_json(one) == as_json(two)  # every per-fold and summary metric, and the comparison


def as_json(value) -> str:
    """Canonical JSON; numpy values as lists (exact floats), anything else by its repr."""
    def plain(item):
        return item.tolist() if hasattr(item, "tolist") else repr(item)

    return json.dumps(value, sort_keys=True, default=plain)
