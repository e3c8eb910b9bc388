"""Configuration of GESTURES models."""

from __future__ import annotations

import warnings
from typing import Any

from transformers import PretrainedConfig

from .familiarity import FeatureSummary

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)

SYNTHETIC_NOTICE = "DEMO MODEL — synthetic training data, not for clinical use"
"""Shown with every output of a model whose config says `trained_on_synthetic_data`."""

FRAME_GEOMETRIES = ("crop_and_pad", "center_crop")
CROP_FRACTION = 0.05
"""Fraction of the columns that ``"crop_and_pad"`` removes from each side of a frame (the paper's 5 %)."""

ENCODERS = ("r2plus1d_34", "r2plus1d_tiny", "r2plus1d_18", "r3d_18", "mc3_18", "videomae", "auto", "none")
AGGREGATIONS = ("mean", "lstm", "blstm", "gru", "bgru")


class GesturesConfig(PretrainedConfig):
    r"""Configuration of a GESTURES model: a frozen snippet encoder followed by a sequence aggregator.

    With no arguments this is the paper's best model, ``gestures-blstm``: R(2+1)D-34 (IG-65M + Kinetics)
    on 8-frame snippets at 15 fps and 112x112, 16 segments with Beta(4, 4) jitter, and a one-layer
    bidirectional LSTM with 64 hidden units classifying FOS vs TCS.

    Args:
        encoder (`str`, *optional*, defaults to `"r2plus1d_34"`):
            Snippet encoder: `"r2plus1d_34"` (IG-65M layout), `"r2plus1d_tiny"` (compact, 128 features; the demo
            model), torchvision's `"r2plus1d_18"`, `"r3d_18"`, `"mc3_18"`, `"videomae"` (a `VideoMAEModel` built
            from `encoder_config`), `"auto"` (any transformers video backbone taking `(batch, frames, channels,
            height, width)`, built from `encoder_config`, which must hold its `model_type`), or `"none"` (the
            model takes precomputed `snippet_features`).
        encoder_config (`dict`, *optional*):
            Configuration of a transformers encoder (`"videomae"` and `"auto"` only).
        encoder_name_or_path (`str`, *optional*):
            Hub id or local directory the transformers encoder came from (informative; weights live in this model).
        freeze_encoder (`bool`, *optional*, defaults to `True`):
            Keep the encoder frozen and in eval mode, as in the paper.
        feature_dim (`int`, *optional*):
            Size of one snippet feature vector. Derived from the encoder when it has one; required for `"none"`
            (defaults to 512 there).
        frames_per_snippet (`int`, *optional*, defaults to 8):
            Consecutive frames in one snippet (8 or 32 in the paper).
        fps (`float`, *optional*, defaults to 15.0):
            Frame rate videos are resampled to before cutting snippets.
        image_size (`int`, *optional*, defaults to 112):
            Side of the square frames fed to the encoder.
        frame_geometry (`str`, *optional*, defaults to `"crop_and_pad"`):
            How a frame becomes an `image_size` square: `"crop_and_pad"` as in the paper (5 % of the columns removed
            from each side, padded to a square, resized: about 90 % of a 16:9 field of view), or `"center_crop"`
            (shorter side resized, central square kept: about 56 %). Features made one way are not comparable with
            features made the other way.
        image_mean (`list[float]`, *optional*, defaults to the Kinetics mean):
            Per-channel mean of RGB values in [0, 1], subtracted before the encoder.
        image_std (`list[float]`, *optional*, defaults to the Kinetics std):
            Per-channel standard deviation the centred values are divided by.
        num_segments (`int`, *optional*, defaults to 16):
            Segments a video is split into for training (TSN-style sampling); one snippet is drawn per segment.
        gamma (`float` or `"middle"`, *optional*, defaults to 4.0):
            Beta(gamma, gamma) jitter of the snippet inside its segment: 1 is uniform, `"middle"` takes the centre.
        aggregation (`str`, *optional*, defaults to `"blstm"`):
            How the snippet sequence becomes a seizure representation: `"mean"`, `"lstm"`, `"blstm"`, `"gru"`
            or `"bgru"`.
        hidden_size (`int`, *optional*, defaults to 64):
            Hidden units per direction of the recurrent aggregator.
        num_layers (`int`, *optional*, defaults to 1):
            Stacked recurrent layers.
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout before the final linear layer.
        class_weights (`list[float]`, *optional*):
            Per-class weights of the cross-entropy loss computed when `labels` are given. Weights that do not fit the
            labels (e.g. after `from_pretrained(..., num_labels=3, ignore_mismatched_sizes=True)`) are dropped with a
            warning: the loss is then unweighted.
        trained_on_synthetic_data (`bool`, *optional*, defaults to `False`):
            The weights were trained on the package's synthetic videos only (a demo, not for clinical use). It travels
            with the model (save, push, Hub load), and predictions, the pipeline, the Space and the card say so.
        temperature (`float`, *optional*, defaults to 1.0):
            Temperature scaling of the classifier: the model's `logits` and `snippet_logits` are the classifier's
            outputs divided by it, so their softmax gives calibrated probabilities (the pipeline, `gestures predict`
            and the Space use them and say "calibrated"). 1.0 means uncalibrated; training fits it on out-of-fold
            predictions. It changes probabilities, never the predicted class. Must be positive.
        feature_summary (`dict`, *optional*):
            A compact summary of the training snippet features (mean, principal directions and variances, and
            thresholds from training quantiles; see `familiarity.py`). With it, the pipeline flags videos unlike the
            training data (`unfamiliar`); without it (older models) it reports that this is not available.
        id2label / label2id:
            Class names; `{0: "FOS", 1: "TCS"}` by default.
    """

    model_type = "gestures"

    def __init__(
        self,
        encoder: str = "r2plus1d_34",
        encoder_config: dict[str, Any] | None = None,
        encoder_name_or_path: str | None = None,
        freeze_encoder: bool = True,
        feature_dim: int | None = None,
        frames_per_snippet: int = 8,
        fps: float = 15.0,
        image_size: int = 112,
        frame_geometry: str = "crop_and_pad",
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        num_segments: int = 16,
        gamma: float | str = 4.0,
        aggregation: str = "blstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
        class_weights: list[float] | None = None,
        trained_on_synthetic_data: bool = False,
        temperature: float = 1.0,
        feature_summary: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if encoder not in ENCODERS:
            raise ValueError(f"Unknown encoder {encoder!r}: choose one of {', '.join(ENCODERS)}.")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"Unknown aggregation {aggregation!r}: choose one of {', '.join(AGGREGATIONS)}.")
        if encoder in ("videomae", "auto"):
            if not encoder_config:
                raise ValueError(f"encoder={encoder!r} needs `encoder_config` (the backbone's config as a dict).")
            if encoder == "auto" and "model_type" not in encoder_config:
                raise ValueError("encoder='auto' needs `encoder_config['model_type']` to know which backbone to build.")
        elif encoder_config:
            raise ValueError(f"`encoder_config` is only used by the transformers encoders, not {encoder!r}.")
        if gamma != "middle" and not (isinstance(gamma, (int, float)) and gamma > 0):
            raise ValueError(f"gamma must be a positive number or 'middle', got {gamma!r}.")
        for name, value in (("frames_per_snippet", frames_per_snippet), ("image_size", image_size),
                            ("num_segments", num_segments), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps!r}.")
        if frame_geometry not in FRAME_GEOMETRIES:
            raise ValueError(f"frame_geometry must be one of {', '.join(FRAME_GEOMETRIES)}, got {frame_geometry!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature must be a positive number (1.0: uncalibrated), got {temperature!r}.")
        kwargs.setdefault("id2label", {0: "FOS", 1: "TCS"})
        if not kwargs.get("label2id"):
            kwargs["label2id"] = {name: int(index) for index, name in kwargs["id2label"].items()}
        super().__init__(**kwargs)

        self.encoder = encoder
        self.encoder_config = encoder_config
        self.encoder_name_or_path = encoder_name_or_path
        self.freeze_encoder = freeze_encoder
        derived_dim = _default_feature_dim(encoder, encoder_config)
        if feature_dim is not None and encoder != "none" and feature_dim != derived_dim:
            raise ValueError(f"feature_dim={feature_dim} contradicts the {encoder!r} encoder, which returns "
                             f"{derived_dim} features; leave feature_dim unset.")
        self.feature_dim = feature_dim if feature_dim is not None else derived_dim
        self.frames_per_snippet = frames_per_snippet
        self.fps = float(fps)
        self.image_size = image_size
        self.frame_geometry = frame_geometry
        self.image_mean = list(image_mean) if image_mean is not None else list(KINETICS_MEAN)
        self.image_std = list(image_std) if image_std is not None else list(KINETICS_STD)
        self.num_segments = num_segments
        self.gamma = gamma
        self.aggregation = aggregation
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.class_weights = class_weights
        self.trained_on_synthetic_data = bool(trained_on_synthetic_data)
        self.temperature = float(temperature)
        if feature_summary is not None:
            FeatureSummary.from_dict(feature_summary, self.feature_dim)  # fails early, naming what is wrong
        self.feature_summary = feature_summary
        self.drop_unfit_class_weights()

    def drop_unfit_class_weights(self) -> None:
        """Forget `class_weights` (with a warning) when their number differs from the number of labels."""
        if self.class_weights is not None and len(self.class_weights) != self.num_labels:
            warnings.warn(f"class_weights has {len(self.class_weights)} entries for {self.num_labels} labels "
                          f"({', '.join(map(str, self.id2label.values()))}); dropping them: the loss is unweighted.",
                          UserWarning, stacklevel=2)
            self.class_weights = None

    @property
    def notice(self) -> str | None:
        """The demo notice for models trained on synthetic data, else None."""
        return SYNTHETIC_NOTICE if self.trained_on_synthetic_data else None

    def _get_generation_parameters(self) -> dict[str, Any]:
        """transformers refuses to save a config holding generation parameters such as `temperature`; here it is the
        calibration temperature of a classifier that never generates, so it is not one."""
        return {key: value for key, value in super()._get_generation_parameters().items() if key != "temperature"}

    @property
    def calibrated(self) -> bool:
        """The probabilities are temperature-scaled (``temperature`` is not 1)."""
        return self.temperature != 1.0

    @property
    def snippet_duration(self) -> float:
        """Seconds covered by one snippet."""
        return self.frames_per_snippet / self.fps


class GesturesEnsembleConfig(GesturesConfig):
    r"""Configuration of a GESTURES fold ensemble: one snippet encoder and `num_members` heads (aggregator +
    classifier, e.g. the best model of each cross-validation fold) that all read its features; the ensemble's
    probability is the mean of the members' (temperature-scaled) probabilities.

    Args:
        num_members (`int`, *optional*, defaults to 2):
            How many heads (at least 2).
        member_sources (`list[str]`, *optional*):
            Where each member came from (e.g. `fold-0/best`); informative.
        All other arguments as in [`GesturesConfig`]; the head arguments (`aggregation`, `hidden_size`, `num_layers`,
        ...) are every member's, and `temperature` divides every member's logits.
    """

    model_type = "gestures_ensemble"

    def __init__(self, num_members: int = 2, member_sources: list[str] | None = None, **kwargs: Any) -> None:
        if isinstance(num_members, bool) or not isinstance(num_members, int) or num_members < 2:
            raise ValueError(f"num_members must be an integer >= 2 (an ensemble of one is a model), got "
                             f"{num_members!r}.")
        if member_sources is not None and len(member_sources) != num_members:
            raise ValueError(f"member_sources names {len(member_sources)} members, num_members is {num_members}.")
        super().__init__(**kwargs)
        self.num_members = num_members
        self.member_sources = list(member_sources) if member_sources is not None else None

    def member_config(self) -> GesturesConfig:
        """The configuration of one member: the head of this config on precomputed features (encoder `"none"`)."""
        return GesturesConfig(
            encoder="none", feature_dim=self.feature_dim, frames_per_snippet=self.frames_per_snippet, fps=self.fps,
            image_size=self.image_size, frame_geometry=self.frame_geometry, num_segments=self.num_segments,
            gamma=self.gamma, aggregation=self.aggregation, hidden_size=self.hidden_size, num_layers=self.num_layers,
            dropout=self.dropout, trained_on_synthetic_data=self.trained_on_synthetic_data, id2label=self.id2label,
            label2id=self.label2id,
        )


CONFIG_CLASSES = {config_class.model_type: config_class for config_class in (GesturesConfig, GesturesEnsembleConfig)}


def config_from_pretrained(name_or_path: Any, **kwargs: Any) -> GesturesConfig:
    """The config of a saved GESTURES model or ensemble (a folder or Hub id), of the class its `model_type` names."""
    config_dict, _ = PretrainedConfig.get_config_dict(name_or_path, **kwargs)
    return CONFIG_CLASSES.get(config_dict.get("model_type"), GesturesConfig).from_pretrained(name_or_path, **kwargs)


def _default_feature_dim(encoder: str, encoder_config: dict[str, Any] | None) -> int:
    if encoder_config is not None:
        return int(encoder_config["hidden_size"])
    return 128 if encoder == "r2plus1d_tiny" else 512
