"""``gestures push`` / ``push-features``: exactly which files would be committed, and every refusal.

The Hub client is replaced at the methods the push calls (``HfApi.create_repo``, ``list_repo_files``,
``create_commit``); the other upload paths and the HTTP transport raise if reached, and huggingface_hub's own
offline guard stays on (HF_HUB_OFFLINE=1 from conftest), so nothing here can reach the network.
"""

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from cards_fixtures import make_cv_metrics, save_tiny_model, training_args, write_features
from helpers import UNIT_FILES
from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, DatasetCard, HfApi, ModelCard

import gestures_hub.hub as hub
from gestures_hub.cli import main
from gestures_hub.hub import PushRefused, push_features, push_model

MODEL_FILES = {"README.md", "config.json", "video_preprocessor_config.json", "model.safetensors", *UNIT_FILES,
               "training_args.json", "cv_metrics.json"}
FEATURE_FILES = {"README.md", "gestures_features.json", "data/train-00000.parquet", "data/train-00001.parquet"}
OFFLINE = "offline mode is on; unset HF_HUB_OFFLINE to push"


def network_call(*args, **kwargs):
    raise AssertionError("the push reached the network")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every way out raises: uploads the push must not use, and the HTTP transport itself."""
    for name in ("upload_folder", "upload_file", "preupload_lfs_files", "whoami"):
        monkeypatch.setattr(HfApi, name, network_call)
    monkeypatch.setattr(httpx2.Client, "send", network_call)


@dataclass
class FakeHub:
    """Records what a push asks of the Hub."""

    remote_files: list[str] = field(default_factory=lambda: [".gitattributes"])
    repos: list[dict] = field(default_factory=list)
    commits: list[dict] = field(default_factory=list)

    def create_repo(self, repo_id, **kwargs):
        self.repos.append({"repo_id": repo_id, **kwargs})

    def list_repo_files(self, repo_id, **kwargs):
        return list(self.remote_files)

    def create_commit(self, repo_id, operations, **kwargs):
        self.commits.append({"repo_id": repo_id, "operations": list(operations), **kwargs})
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/abc", commit_message="",
                          commit_description="", oid="abc")

    @property
    def added(self) -> dict[str, object]:
        (commit,) = self.commits
        operations = commit["operations"]
        return {op.path_in_repo: op.path_or_fileobj for op in operations if isinstance(op, CommitOperationAdd)}

    @property
    def deleted(self) -> set[str]:
        (commit,) = self.commits
        return {op.path_in_repo for op in commit["operations"] if isinstance(op, CommitOperationDelete)}


def as_api_method(record):
    """An ``HfApi`` method that forwards its arguments (without the client) to ``record``."""
    return lambda api, *args, **kwargs: record(*args, **kwargs)


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHub:
    """Online as far as the push can tell, with the Hub calls it makes recorded."""
    fake = FakeHub()
    monkeypatch.setattr(hub, "is_offline_mode", lambda: False)
    for name in ("create_repo", "list_repo_files", "create_commit"):
        monkeypatch.setattr(HfApi, name, as_api_method(getattr(fake, name)))
    return fake


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def model_dir(tmp_path, tiny_model_dir) -> Path:
    """A trained model folder as training leaves it: weights, code, outputs, and clutter that must stay local."""
    model_dir = tmp_path / "run"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "cv_metrics.json").write_text(json.dumps(make_cv_metrics()))
    (model_dir / "training_args.json").write_text(json.dumps(training_args()))
    for clutter in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "notes.txt",
                    "checkpoint-20/model.safetensors", "checkpoint-20/optimizer.pt", ".cache/huggingface/x.lock",
                    "runs/events.out.tfevents.1", "fold-3/model.safetensors"):
        (model_dir / clutter).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / clutter).write_bytes(b"local only")
    return model_dir


@pytest.fixture
def features_dir(tmp_path) -> Path:
    features_dir = write_features(tmp_path / "features")
    for clutter in ("data/.train-00002.parquet.x1.tmp", "cache-0123.arrow", "notes.txt", "data/extra.csv"):
        (features_dir / clutter).write_bytes(b"local only")
    return features_dir


def test_push_commits_exactly_the_model_files(fake_hub, model_dir, tmp_path):
    info = push_model(model_dir, "org/gestures-blstm", dataset_id="org/gestures-features")

    assert fake_hub.repos == [{"repo_id": "org/gestures-blstm", "repo_type": "model", "private": None,
                               "exist_ok": True}]
    (commit,) = fake_hub.commits
    assert commit["repo_type"] == "model" and commit["commit_message"].startswith("Upload GESTURES model")
    assert set(fake_hub.added) == MODEL_FILES and not fake_hub.deleted
    for name in MODEL_FILES - {"README.md"}:
        assert Path(fake_hub.added[name]) == model_dir / name
    (tmp_path / "README.md").write_bytes(fake_hub.added["README.md"])
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.eval_results and card.data.datasets == ["org/gestures-features"]
    assert info.commit_url.startswith("https://huggingface.co/org/gestures-blstm")


def test_cli_push_options(fake_hub, model_dir, capsys):
    assert main(["push", str(model_dir), "--repo-id", "org/gestures-blstm", "--private", "--commit-message",
                 "first model", "--token", "hf_test"]) == 0
    assert fake_hub.repos[0]["private"] is True
    assert fake_hub.commits[0]["commit_message"] == "first model"
    assert "Pushed to https://huggingface.co/org/gestures-blstm" in capsys.readouterr().out


def test_repush_deletes_stale_weights_only(fake_hub, model_dir):
    fake_hub.remote_files = [".gitattributes", "README.md", "model-00001-of-00002.safetensors",
                             "model.safetensors.index.json", "model.safetensors", "figure.png"]
    push_model(model_dir, "org/gestures-blstm")
    assert fake_hub.deleted == {"model-00001-of-00002.safetensors", "model.safetensors.index.json"}
    assert set(fake_hub.added) == MODEL_FILES


def test_refuses_a_model_without_evaluation(fake_hub, model_dir, capsys):
    (model_dir / "cv_metrics.json").unlink()
    with pytest.raises(PushRefused, match="without evaluation results.*--allow-no-eval"):
        push_model(model_dir, "org/gestures-blstm")
    assert main(["push", str(model_dir), "--repo-id", "org/gestures-blstm"]) == 1
    assert "gestures push: error:" in capsys.readouterr().err
    assert not fake_hub.repos and not fake_hub.commits


def test_allow_no_eval_pushes_a_card_that_says_so(fake_hub, model_dir, tmp_path):
    (model_dir / "cv_metrics.json").unlink()
    assert main(["push", str(model_dir), "--repo-id", "org/gestures-blstm", "--allow-no-eval"]) == 0
    assert set(fake_hub.added) == MODEL_FILES - {"cv_metrics.json"}
    (tmp_path / "README.md").write_bytes(fake_hub.added["README.md"])
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.eval_results is None and "**This model has not been evaluated**" in card.text


@pytest.mark.parametrize("marker", ["cv_metrics", "config"])
def test_synthetic_models_must_say_so_in_their_name(fake_hub, model_dir, marker):
    if marker == "cv_metrics":
        (model_dir / "cv_metrics.json").write_text(json.dumps(make_cv_metrics(synthetic=True)))
    else:
        config = json.loads((model_dir / "config.json").read_text())
        (model_dir / "config.json").write_text(json.dumps({**config, "trained_on_synthetic_data": True}))
    with pytest.raises(PushRefused, match="refusing to push synthetic data as 'org/gestures-blstm'.*synthetic, demo"):
        push_model(model_dir, "org/gestures-blstm")
    assert not fake_hub.repos

    push_model(model_dir, "org/GESTURES-blstm-Demo")
    assert set(fake_hub.added) == MODEL_FILES
    assert "**⚠️ This model was trained on SYNTHETIC videos" in fake_hub.added["README.md"].decode()


def test_missing_weights_or_remote_code_are_clear_errors(fake_hub, model_dir):
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no \*.safetensors weights"):
        push_model(model_dir, "org/gestures-blstm")
    config = json.loads((model_dir / "config.json").read_text())
    del config["auto_map"]
    (model_dir / "config.json").write_text(json.dumps(config))
    (model_dir / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="has no auto_map"):
        push_model(model_dir, "org/gestures-blstm")
    assert not fake_hub.repos


def test_push_features_commits_exactly_the_dataset_files(fake_hub, features_dir, tmp_path):
    fake_hub.remote_files = [".gitattributes", "README.md", "data/train-00000.parquet", "data/train-00007.parquet"]
    assert main(["push-features", str(features_dir), "--repo-id", "org/gestures-features", "--private",
                 "--license", "cc-by-4.0"]) == 0

    assert fake_hub.repos == [{"repo_id": "org/gestures-features", "repo_type": "dataset", "private": True,
                               "exist_ok": True}]
    assert fake_hub.commits[0]["repo_type"] == "dataset"
    assert set(fake_hub.added) == FEATURE_FILES and fake_hub.deleted == {"data/train-00007.parquet"}
    (tmp_path / "README.md").write_bytes(fake_hub.added["README.md"])
    card = DatasetCard.load(tmp_path / "README.md")
    assert card.data.configs[0]["data_files"] == [{"split": "train", "path": "data/train-*.parquet"}]
    assert card.data.license == "cc-by-4.0"


def test_synthetic_features_must_say_so_in_their_name(fake_hub, tmp_path):
    features_dir = write_features(tmp_path / "features", synthetic=True)
    with pytest.raises(PushRefused, match="refusing to push synthetic data"):
        push_features(features_dir, "org/gestures-features")
    push_features(features_dir, "org/gestures-features-synthetic")
    assert set(fake_hub.added) == FEATURE_FILES


def test_offline_mode_refuses_before_any_network_call(monkeypatch, model_dir, features_dir, capsys):
    for name in ("create_repo", "list_repo_files", "create_commit"):
        monkeypatch.setattr(HfApi, name, network_call)
    with pytest.raises(PushRefused) as refusal:
        push_model(model_dir, "org/gestures-blstm")
    assert str(refusal.value) == OFFLINE
    with pytest.raises(PushRefused, match=OFFLINE):
        push_features(features_dir, "org/gestures-features")
    assert main(["push", str(model_dir), "--repo-id", "org/gestures-blstm"]) == 1
    assert main(["push-features", str(features_dir), "--repo-id", "org/gestures-features"]) == 1
    assert capsys.readouterr().err.count(OFFLINE) == 2


def test_pushing_the_embedded_demo_model_writes_the_hub_unit_and_the_synthetic_flag(fake_hub, tmp_path):
    """The demo folder holds weights, config and card only: the push adds the package's Hub unit, and the config that
    reaches the Hub client says trained_on_synthetic_data; a model loaded from what was pushed is flagged."""
    from gestures_hub.model import UNIT_DIR
    from gestures_hub.predict import DEMO_MODEL_DIR

    push_model(DEMO_MODEL_DIR, "org/gestures-demo", allow_no_eval=True)
    added = fake_hub.added
    assert set(added) == MODEL_FILES - {"training_args.json", "cv_metrics.json"}
    for name in UNIT_FILES:
        assert Path(added[name]) == UNIT_DIR / name
    pushed = tmp_path / "pushed"
    pushed.mkdir()
    for name, source in added.items():
        (pushed / name).write_bytes(source if isinstance(source, bytes) else Path(source).read_bytes())
    assert json.loads((pushed / "config.json").read_text())["trained_on_synthetic_data"] is True
    assert "SYNTHETIC" in (pushed / "README.md").read_text()
    from gestures_hub import GesturesForVideoClassification

    assert GesturesForVideoClassification.from_pretrained(pushed).config.notice is not None
