"""``gestures push`` and ``gestures push-features``: publish a trained model or a features dataset on the Hub.

One commit per push (``HfApi.create_commit``) with an explicit list of files, so nothing else in the folder leaks
(checkpoints, optimizer states, caches, notes):

- model: ``README.md`` (the card), ``config.json``, ``video_preprocessor_config.json``, the safetensors weights,
  the remote code (the Hub unit, :mod:`gestures_hub.model`: the folder's own copy when ``save_pretrained`` wrote one,
  else the package's, as for the embedded demo model), ``training_args.json`` and ``cv_metrics.json`` when present;
- dataset: ``README.md`` (with the ``configs`` the dataset viewer reads), the settings sidecar and the shards.

Remote files of the same kind that this push does not carry (weights, shards) are deleted in the same commit, so
a re-push never leaves stale shards in the ``train`` split. Pushes are refused, before any network call, for a
model without evaluation (unless ``allow_no_eval``), for synthetic data under a name that does not say
"synthetic" or "demo", and in offline mode (checked after the local files, so those errors come first).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi, RepoCard, is_offline_mode
from transformers.dynamic_module_utils import get_relative_import_files

from . import __version__
from .cards import (
    CONFIG_FILE,
    CV_METRICS_FILE,
    SYNTHETIC_MARKER,
    TRAINING_ARGS_FILE,
    data_files_pattern,
    is_synthetic_features,
    read_model_artifacts,
    render_dataset_card,
    render_model_card,
)
from .features import SETTINGS_FILENAME, read_settings, shard_paths
from .model import UNIT_DIR

SYNTHETIC_NAME_WORDS = ("synthetic", "demo")
WEIGHT_PATTERNS = ("*.safetensors", "model.safetensors.index.json")
PROCESSOR_FILE = "video_preprocessor_config.json"
OPTIONAL_MODEL_FILES = (TRAINING_ARGS_FILE, CV_METRICS_FILE, "model.safetensors.index.json")

Uploads = dict[str, Path | bytes]  # path in the repo -> local file or content


class PushRefused(RuntimeError):
    """A push that must not happen, with the reason and the way out."""


def ensure_online() -> None:
    """Refuse to push in offline mode, before any network call."""
    if is_offline_mode():
        raise PushRefused("offline mode is on; unset HF_HUB_OFFLINE to push")


def check_synthetic_name(repo_id: str, synthetic: bool) -> None:
    """A synthetic model or dataset must say so in its repo name."""
    name = repo_id.split("/")[-1].lower()
    if synthetic and not any(word in name for word in SYNTHETIC_NAME_WORDS):
        raise PushRefused(
            f"refusing to push synthetic data as {repo_id!r}: it was trained on or made of synthetic videos, and the "
            f"repo name must show it (include one of {', '.join(SYNTHETIC_NAME_WORDS)}, e.g. {repo_id}-synthetic)"
        )


def remote_code_files(model_dir: Path, config: dict) -> list[Path]:
    """The Python files ``config.auto_map`` points to and the local modules they import: the folder's own when it
    holds them all, else the package's Hub unit (a folder that carries only weights, config and card)."""
    auto_map = config.get("auto_map")
    if not auto_map:
        raise ValueError(
            f"{model_dir / CONFIG_FILE} has no auto_map: save the model with GesturesForVideoClassification."
            "save_pretrained so that its code is written next to the weights (trust_remote_code)"
        )
    modules = {reference.split("--")[-1].rsplit(".", 1)[0] for reference in auto_map.values()}
    folder = model_dir if all((model_dir / f"{module}.py").is_file() for module in modules) else UNIT_DIR
    code = set()
    for module in modules:
        path = folder / f"{module}.py"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found, though config.json's auto_map names it")
        code |= {path, *map(Path, get_relative_import_files(str(path)))}
    return sorted(code)


def model_uploads(model_dir: str | Path) -> Uploads:
    """The files of a model folder that go to the Hub (all but the card), by path in the repo."""
    model_dir = Path(model_dir)
    config = read_model_artifacts(model_dir).config
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{model_dir} has no *.safetensors weights: save the model with save_pretrained")
    if not (model_dir / PROCESSOR_FILE).is_file():
        raise FileNotFoundError(f"{model_dir} has no {PROCESSOR_FILE}: save the model with save_pretrained, which "
                                "writes the video processor that the pipeline and AutoVideoProcessor load")
    files = [model_dir / CONFIG_FILE, model_dir / PROCESSOR_FILE, *weights, *remote_code_files(model_dir, config)]
    files += [model_dir / name for name in OPTIONAL_MODEL_FILES if (model_dir / name).is_file()]
    return {path.name: path for path in files}


def features_uploads(features_dir: str | Path) -> Uploads:
    """The files of a features folder that go to the Hub (all but the card): settings sidecar and shards."""
    features_dir = Path(features_dir)
    shards = shard_paths(features_dir)
    if not shards:
        raise FileNotFoundError(f"{features_dir} has no Parquet shards ({data_files_pattern()}): not a features folder")
    sidecar = features_dir / SETTINGS_FILENAME
    uploads: Uploads = {shard.relative_to(features_dir).as_posix(): shard for shard in shards}
    uploads[SETTINGS_FILENAME] = sidecar if sidecar.is_file() else json.dumps(read_settings(features_dir)).encode()
    if (features_dir / SYNTHETIC_MARKER).is_file():
        uploads[SYNTHETIC_MARKER] = features_dir / SYNTHETIC_MARKER
    return uploads


def commit_to_hub(
    repo_id: str,
    repo_type: str,
    uploads: Uploads,
    card: RepoCard,
    *,
    stale_patterns: tuple[str, ...],
    private: bool = False,
    token: str | None = None,
    commit_message: str,
) -> CommitInfo:
    """Create the repo if needed and commit ``uploads`` and the card; delete remote files matching
    ``stale_patterns`` that this commit does not carry."""
    ensure_online()
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private or None, exist_ok=True)
    uploads = {**uploads, "README.md": str(card).encode()}
    operations: list[CommitOperationAdd | CommitOperationDelete] = [
        CommitOperationAdd(path_in_repo=path, path_or_fileobj=source) for path, source in sorted(uploads.items())
    ]
    operations += [
        CommitOperationDelete(path_in_repo=path)
        for path in api.list_repo_files(repo_id, repo_type=repo_type)
        if path not in uploads and any(fnmatch(path, pattern) for pattern in stale_patterns)
    ]
    return api.create_commit(repo_id, operations, commit_message=commit_message, repo_type=repo_type)


def push_model(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    allow_no_eval: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    dataset_id: str | None = None,
    space_id: str | None = None,
    license: str = "mit",
) -> CommitInfo:
    """Push a trained model folder (weights, config, remote code, training outputs) with its card to ``repo_id``."""
    artifacts = read_model_artifacts(model_dir)
    if artifacts.cv_metrics is None and not allow_no_eval:
        raise PushRefused(
            f"{Path(model_dir) / CV_METRICS_FILE} not found: refusing to publish a model without evaluation results. "
            "Train it with cross-validation, or pass --allow-no-eval to publish it marked as not evaluated"
        )
    check_synthetic_name(repo_id, artifacts.synthetic)
    uploads = model_uploads(model_dir)
    card = render_model_card(model_dir, repo_id=repo_id, dataset_id=dataset_id, space_id=space_id,
                             license=license, allow_no_eval=allow_no_eval)
    message = commit_message or f"Upload GESTURES model (gestures-hub {__version__})"
    return commit_to_hub(repo_id, "model", uploads, card, stale_patterns=WEIGHT_PATTERNS, private=private,
                         token=token, commit_message=message)


def push_features(
    features_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    license: str | None = None,
    source: str | None = None,
) -> CommitInfo:
    """Push a features folder (shards, settings) with its dataset card to the dataset repo ``repo_id``."""
    check_synthetic_name(repo_id, is_synthetic_features(features_dir))
    uploads = features_uploads(features_dir)
    card = render_dataset_card(features_dir, repo_id=repo_id, license=license, source=source)
    message = commit_message or f"Upload GESTURES features (gestures-hub {__version__})"
    return commit_to_hub(repo_id, "dataset", uploads, card, stale_patterns=(data_files_pattern(),), private=private,
                         token=token, commit_message=message)


def _run(command: str, push: Callable[..., CommitInfo], *args: object, **kwargs: object) -> int:
    """Call ``push``; print where it went, or the error (refusals, missing files, Hub errors). Returns 0 or 1."""
    try:
        info = push(*args, **kwargs)
    except (PushRefused, OSError, ValueError) as error:
        print(f"gestures {command}: error: {error}", file=sys.stderr)
        return 1
    print(f"Pushed to {info.repo_url} ({info.commit_url})")
    return 0


def run_push(args: argparse.Namespace) -> int:
    return _run("push", push_model, args.model_dir, args.repo_id, private=args.private,
                allow_no_eval=args.allow_no_eval, token=args.token, commit_message=args.commit_message,
                dataset_id=args.dataset_id, space_id=args.space_id, license=args.license)


def run_push_features(args: argparse.Namespace) -> int:
    return _run("push-features", push_features, args.features_dir, args.repo_id, private=args.private,
                token=args.token, commit_message=args.commit_message, license=args.license, source=args.source)
