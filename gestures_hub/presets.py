"""A registry of named GESTURES configurations, and loading a model from a preset, a folder or a hub id."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .model.configuration_gestures import GesturesConfig, GesturesEnsembleConfig, config_from_pretrained
from .model.modeling_gestures import GesturesEnsembleForVideoClassification, GesturesForVideoClassification

Classifier = GesturesForVideoClassification | GesturesEnsembleForVideoClassification
"""A model that classifies videos: one model, or a fold ensemble (``gestures ensemble``)."""

logger = logging.getLogger(__name__)

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo_model"
"""The embedded demo model (weights, config, processor config, card): what ``gestures-demo`` loads."""

TINY_VIDEOMAE = {
    "image_size": 32,
    "patch_size": 8,
    "num_channels": 3,
    "num_frames": 4,
    "tubelet_size": 2,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


@dataclass(frozen=True)
class Preset:
    """A named configuration: keyword arguments of ``GesturesConfig`` and what they are for."""

    name: str
    description: str
    config: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("gestures-blstm", "The paper's best model: R(2+1)D-34 8 frames @ 15 fps, 112x112, BLSTM(64).", {}),
        Preset("gestures-lstm", "R(2+1)D-34 8 frames @ 15 fps, 112x112, LSTM(64).", {"aggregation": "lstm"}),
        Preset("gestures-mean", "R(2+1)D-34 8 frames @ 15 fps, 112x112, mean pooling.", {"aggregation": "mean"}),
        Preset("gestures-blstm-32f", "R(2+1)D-34 on 32-frame snippets @ 15 fps, BLSTM(64).",
               {"frames_per_snippet": 32}),
        Preset("gestures-blstm-features", "BLSTM(64) on precomputed 512-d snippet features (how the paper trains).",
               {"encoder": "none", "feature_dim": 512}),
        Preset("r2plus1d_34", "R(2+1)D-34 encoder (IG-65M layout) with a BLSTM head.", {"encoder": "r2plus1d_34"}),
        Preset("r2plus1d_18", "torchvision R(2+1)D-18 encoder (Kinetics-400 layout) with a BLSTM head.",
               {"encoder": "r2plus1d_18"}),
        Preset("r3d_18", "torchvision R3D-18 encoder with a BLSTM head.", {"encoder": "r3d_18"}),
        Preset("mc3_18", "torchvision MC3-18 encoder with a BLSTM head.", {"encoder": "mc3_18"}),
        Preset("gestures-demo", "The embedded demo model, TRAINED on synthetic videos only (not for clinical use): "
               "compact R(2+1)D (128-d) on 8 frames @ 15 fps, 64x64 centre crops, BLSTM(64). With config overrides "
               "or --weights, its layout with those weights instead.",
               {"encoder": "r2plus1d_tiny", "image_size": 64, "frame_geometry": "center_crop"}),
        Preset("tiny-features", "Tests: 16-d features, BLSTM(8), 4 segments.",
               {"encoder": "none", "feature_dim": 16, "hidden_size": 8, "num_segments": 4}),
        Preset("tiny-videomae", "Tests: a 2-layer 32-d VideoMAE on 4-frame 32x32 snippets, BLSTM(8).",
               {"encoder": "videomae", "encoder_config": TINY_VIDEOMAE, "frames_per_snippet": 4,
                "image_size": 32, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                "hidden_size": 8, "num_segments": 4}),
    )
}


def get_config(name: str, **overrides: Any) -> GesturesConfig:
    """The ``GesturesConfig`` of a preset, with keyword overrides."""
    if name not in PRESETS:
        raise KeyError(f"Unknown preset {name!r}. Available: {', '.join(PRESETS)}.")
    return GesturesConfig(**{**PRESETS[name].config, **overrides})


class BrokenModelError(ValueError):
    """A model folder whose files are damaged or do not fit together."""


REMAKE = "Save the model again with save_pretrained, or download it again."


def check_model_folder(folder: Path) -> None:
    """Raise :class:`BrokenModelError` (naming ``folder``, the problem and the way out) if the config or the weights of
    a ``save_pretrained`` folder cannot be read or do not fit together; missing files are left to from_pretrained."""

    def fail(problem: str, advice: str = REMAKE) -> BrokenModelError:
        return BrokenModelError(f"Cannot load the model in {folder}: {problem}. {advice}")

    config_file, weights = folder / "config.json", folder / "model.safetensors"
    if config_file.is_file():
        try:
            json.loads(config_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise fail(f"config.json is not valid JSON ({error})") from None
    if not weights.is_file():
        if (folder / "pytorch_model.bin").is_file() and not (folder / "model.safetensors.index.json").is_file():
            raise fail("it has no model.safetensors, only pytorch_model.bin (pickled weights, which can run code when "
                       "loaded, so they are not read)", "Load it where you trust it and save it again with "
                       "save_pretrained (which writes model.safetensors), or download the safetensors version.")
        return
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as file:
            shapes = {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise fail(f"model.safetensors is truncated or damaged ({error})") from None
    if not config_file.is_file():
        return
    import torch

    with torch.device("meta"):
        config = config_from_pretrained(str(folder))
        model = classifier_class(config)(config)
    for name, tensor in model.state_dict().items():
        if name in shapes and shapes[name] != tuple(tensor.shape):
            raise fail(f"the weights do not fit the config: {name} is {list(shapes[name])} in model.safetensors but "
                       f"{list(tensor.shape)} in the model config.json describes")


def classifier_class(config: GesturesConfig) -> type[Classifier]:
    """The class a config's model is: the fold ensemble for a ``GesturesEnsembleConfig``."""
    if isinstance(config, GesturesEnsembleConfig):
        return GesturesEnsembleForVideoClassification
    return GesturesForVideoClassification


def load_model(
    spec: str | Path, *, weights: str | Path | None = None, **overrides: Any
) -> tuple[Classifier, bool]:
    """Load a classifier from a preset name, a ``save_pretrained`` folder (a fold ensemble's too) or a hub id.

    A preset is randomly initialised unless ``weights`` (a checkpoint read by the importers: a local file or
    ``URL#sha256=...``) are given, except ``gestures-demo`` without overrides, which is the trained demo model.
    Returns the model in eval mode and whether it carries trained weights.
    """
    if str(spec) == "gestures-demo" and weights is None and not overrides:
        spec = DEMO_MODEL_DIR  # the name of the demo model gives its trained weights, never a random copy
    if str(spec) in PRESETS:
        model = GesturesForVideoClassification(get_config(str(spec), **overrides))
        pretrained = False
    else:
        if overrides:
            raise ValueError("Configuration overrides only apply to presets.")
        if Path(spec).is_dir():
            check_model_folder(Path(spec))
        try:
            model = classifier_class(config_from_pretrained(str(spec))).from_pretrained(str(spec))
        except OSError as error:
            raise OSError(
                f"Could not load a model from {str(spec)!r}: it is neither a preset ({', '.join(PRESETS)}), "
                f"a folder written by save_pretrained, nor a reachable hub repository. ({error})"
            ) from error
        pretrained = True
    if weights is not None:
        from .importers import load_weights

        load_weights(model, weights)
        pretrained = True
    return model.eval(), pretrained


def run(args: argparse.Namespace) -> int:
    width = max(map(len, PRESETS))
    for preset in PRESETS.values():
        print(f"{preset.name:<{width}}  {preset.description}")
    return 0
