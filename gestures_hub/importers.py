"""Import weights that were not saved by this package, from a local file or from a URL verified by its SHA-256.

Supported checkpoints (``.pth``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``, or ``.safetensors``):

- torchvision video ResNets (``r2plus1d_18``, ``r3d_18``, ``mc3_18`` Kinetics-400 state dicts);
- IG-65M R(2+1)D-34 checkpoints as converted from VMZ by ig65m-pytorch (8- or 32-frame, Kinetics fine-tuned);
- the original GESTURES aggregators: ``RecurrentModel`` (``lstm.*``, ``fc.*``) and ``MeanModel`` (``fc.*``).

The classifier of a video checkpoint (``fc.*``, Kinetics classes) is dropped.

Weights from a URL
------------------
Wherever a checkpoint path is taken (``load_weights``, ``load_model(weights=...)``, ``--weights``), an ``http(s)`` URL
with the file's SHA-256 in its fragment is accepted too::

    https://example.org/r2plus1d_34_clip8_ft_kinetics_from_ig65m.pth#sha256=<64 hex digits>

A URL without ``#sha256=`` is refused. The file is downloaded once into ``gestures-weights`` next to the Hugging Face
hub cache (``$HF_HUB_CACHE/..``, i.e. ``$HF_HOME/gestures-weights``, ``~/.cache/huggingface/gestures-weights`` by
default) as ``<first 16 hex digits of the hash>-<file name>``: it is streamed to a temporary file in that folder,
verified, then renamed, so a failed or mismatched download leaves nothing behind. A cached file is re-hashed on each
use and downloaded again if it no longer matches. With ``HF_HUB_OFFLINE=1`` only cached files are used.

The paper's encoder is R(2+1)D-34 pretrained on IG-65M and fine-tuned on Kinetics-400: the VMZ model zoo
(facebookresearch/VMZ) publishes it for Caffe2, and ig65m-pytorch (moabitcoin/ig65m-pytorch) publishes the PyTorch
conversion in its v1.0.0 GitHub release, ``r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth`` (and a 32-frame
``clip32`` variant). torchvision publishes the Kinetics-400 ``r2plus1d_18``/``r3d_18``/``mc3_18`` weights: their URLs
are ``torchvision.models.video.R3D_18_Weights.KINETICS400_V1.url`` and so on, and their file names end in the first
8 hex digits of the file's SHA-256 (torch.hub's convention). To get a file's full SHA-256, run ``sha256sum FILE``
(``shasum -a 256 FILE`` on macOS, ``certutil -hashfile FILE SHA256`` on Windows) on a copy you trust.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

import torch
from huggingface_hub import constants, is_offline_mode
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import httpx
from torch import nn

from .model.modeling_gestures import GesturesForVideoClassification

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
PREFIXES = ("module.", "model.")
URL_PATTERN = re.compile(r"https?://", re.IGNORECASE)
HASH_PATTERN = re.compile(r"sha256=([0-9a-fA-F]{64})")

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, downloaded or verified, or that does not fit the model."""


REFUSED_PICKLE_MARKERS = ("unsupported global", "unsupported class")
"""How torch's ``weights_only`` loader words a pickle that holds more than tensors (its case varies by version)."""


def _pickle_reason(error: pickle.UnpicklingError) -> str:
    """The specific line of torch's unpickling error, without its advice about ``weights_only``."""
    lines = [line.strip() for line in str(error).splitlines()]
    return next((line for line in reversed(lines) if line and "weights_only" not in line and "torch.load" not in line),
                type(error).__name__)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict of tensors; pickles are only unpickled with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({error}).") from error
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # torch's text advises weights_only=False: never repeat it
        if not any(marker in str(error).lower() for marker in REFUSED_PICKLE_MARKERS):
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_pickle_reason(error)}).") from error
        raise CheckpointError(
            f"{path}: refused to load. The file is a pickle that holds more than tensors (e.g. code or custom "
            "classes), and only weights_only loading is allowed. Re-save it as a plain state dict of tensors "
            "(torch.save(model.state_dict(), path)) or as safetensors."
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({error}).") from error
    while isinstance(data, Mapping) and len(data) and not isinstance(next(iter(data.values())), torch.Tensor):
        wrapper = next((key for key in WRAPPER_KEYS if key in data), None)
        if wrapper is None:
            break
        data = data[wrapper]
    if not isinstance(data, Mapping) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a state dict (a mapping of names to tensors).")
    return {_strip_prefixes(key): value for key, value in data.items()}


def _strip_prefixes(key: str) -> str:
    for prefix in PREFIXES:
        key = key.removeprefix(prefix)
    return key


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"gestures"`` (this package), ``"video_resnet"`` (torchvision / IG-65M) or ``"gestures_aggregator"``."""
    keys = set(state_dict)
    if any(key.startswith("gestures.") for key in keys):
        return "gestures"
    if any(key.startswith("stem.") for key in keys):
        return "video_resnet"
    if keys and all(key.startswith(("lstm.", "fc.")) for key in keys):
        return "gestures_aggregator"
    raise CheckpointError(f"Unrecognised checkpoint layout (first keys: {sorted(keys)[:5]}).")


def load_into(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with an error that lists missing, unexpected and mis-shaped keys."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state_dict and state_dict[key].shape != expected[key].shape
    ]
    problems = [
        f"{label} ({len(items)}): {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}"
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", mismatched))
        if items
    ]
    if problems:
        raise CheckpointError(f"The checkpoint does not fit the {what}: " + "; ".join(problems) + ".")
    module.load_state_dict(state_dict, strict=True)


def import_video_resnet(model: GesturesForVideoClassification, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a torchvision/IG-65M video ResNet state dict into the model's encoder (its ``fc`` is dropped)."""
    encoder = model.gestures.encoder
    if encoder is None or model.config.encoder not in ("r2plus1d_34", "r2plus1d_18", "r3d_18", "mc3_18"):
        raise CheckpointError(
            f"A video ResNet checkpoint needs a video ResNet encoder; this model's encoder is {model.config.encoder!r}."
        )
    weights = {key: value for key, value in state_dict.items() if not key.startswith("fc.")}
    load_into(encoder, weights, f"{model.config.encoder} encoder")


def import_gestures_aggregator(
    model: GesturesForVideoClassification, state_dict: Mapping[str, torch.Tensor]
) -> None:
    """Load an original GESTURES ``RecurrentModel``/``MeanModel`` state dict into the aggregator and classifier."""
    recurrent = any(key.startswith("lstm.") for key in state_dict)
    aggregation = model.config.aggregation
    if recurrent != (aggregation in ("lstm", "blstm")):
        kind = "an LSTM (RecurrentModel)" if recurrent else "a mean-pooling (MeanModel)"
        raise CheckpointError(f"The checkpoint is {kind} aggregator but this model uses aggregation={aggregation!r}.")
    if recurrent and any(key.endswith("_reverse") for key in state_dict) != (aggregation == "blstm"):
        raise CheckpointError(
            "The checkpoint's LSTM bidirectionality does not match this model's aggregation "
            f"{aggregation!r}; use 'blstm' for bidirectional=True and 'lstm' otherwise."
        )
    renamed = {}
    for key, value in state_dict.items():
        prefix, rest = key.split(".", 1)
        renamed[("gestures.aggregator.rnn." if prefix == "lstm" else "classifier.") + rest] = value
    head = nn.ModuleDict({"gestures": nn.ModuleDict({"aggregator": model.gestures.aggregator}),
                          "classifier": model.classifier})
    load_into(head, renamed, f"{aggregation} aggregator and classifier")


def weights_cache_dir() -> Path:
    """``gestures-weights`` next to the hub cache: ``$HF_HUB_CACHE/..``, by default ``$HF_HOME/gestures-weights``."""
    hub_cache = os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or constants.HF_HOME) / "hub"
    return Path(hub_cache).expanduser().parent / "gestures-weights"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_weights(url: str) -> Path:
    """The local copy of ``URL#sha256=<hex>``: downloaded and verified once, then taken from the cache."""
    parts = urlsplit(url)
    match = HASH_PATTERN.fullmatch(parts.fragment)
    if match is None:
        raise CheckpointError(
            f"{url}: a weights URL needs the file's published SHA-256, written as URL#sha256=<64 hex digits> "
            "(compute a file's with `sha256sum FILE`)."
        )
    expected = match.group(1).lower()
    source = urlunsplit(parts._replace(fragment=""))
    name = PurePosixPath(parts.path).name or "weights"
    target = weights_cache_dir() / f"{expected[:16]}-{name}"
    if target.is_file():
        if _sha256(target) == expected:
            return target
        logger.warning("%s: the cached copy %s no longer matches its SHA-256; downloading it again.", url, target)
    if is_offline_mode():
        raise CheckpointError(
            f"{url}: no verified copy in the weights cache ({target}) and offline mode is on (HF_HUB_OFFLINE=1). "
            "Unset HF_HUB_OFFLINE to download it once, or download the file yourself and pass its local path."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    temporary = Path(temporary_name)
    try:
        with os.fdopen(descriptor, "wb") as file:
            http_get(source, file, displayed_filename=name)
        actual = _sha256(temporary)
        if actual != expected:
            raise CheckpointError(
                f"{url}: SHA-256 mismatch, expected {expected} but the download has {actual}; it was deleted. "
                "Check the hash published with the weights (compute a file's with `sha256sum FILE`)."
            )
        os.replace(temporary, target)
    except (httpx.HTTPError, OSError) as error:
        reason = str(error).partition("\n")[0] or type(error).__name__
        raise CheckpointError(
            f"{url}: download failed ({reason}). Check the URL and the network, or download the file yourself and "
            "pass its local path."
        ) from error
    finally:
        temporary.unlink(missing_ok=True)
    return target


def load_weights(model: GesturesForVideoClassification, path: str | Path) -> str:
    """Load a checkpoint of any supported layout into ``model``; returns the layout found.

    ``path`` is a local file or a ``URL#sha256=<hex>`` string, fetched through the cache by :func:`download_weights`.
    """
    if isinstance(path, str) and URL_PATTERN.match(path):
        path = download_weights(path)
    state_dict = read_state_dict(path)
    try:
        layout = detect_layout(state_dict)
        if layout == "video_resnet":
            import_video_resnet(model, state_dict)
        elif layout == "gestures_aggregator":
            import_gestures_aggregator(model, state_dict)
        else:
            load_into(model, state_dict, "model")
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from error
    return layout
