"""Import weights that were not saved by this package, without any network access.

Supported checkpoints (``.pth``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``, or ``.safetensors``):

- torchvision video ResNets (``r2plus1d_18``, ``r3d_18``, ``mc3_18`` Kinetics-400 state dicts);
- IG-65M R(2+1)D-34 checkpoints as converted from VMZ by ig65m-pytorch (8- or 32-frame, Kinetics fine-tuned);
- the original GESTURES aggregators: ``RecurrentModel`` (``lstm.*``, ``fc.*``) and ``MeanModel`` (``fc.*``).

The classifier of a video checkpoint (``fc.*``, Kinetics classes) is dropped.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .model.modeling_gestures import GesturesForVideoClassification

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
PREFIXES = ("module.", "model.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model."""


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


def load_weights(model: GesturesForVideoClassification, path: str | Path) -> str:
    """Load a local checkpoint of any supported layout into ``model``; returns the layout found."""
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
