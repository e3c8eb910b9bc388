"""Putting the aggregator and classifier of a model trained on snippet features behind a snippet encoder.

:func:`attach_encoder` makes the video-in model (``pixel_values`` in, FOS/TCS out) that ``gestures train --encoder``
exports as ``final-video/``, and the end-to-end model of ``--train-encoder``; :data:`HEAD_OPTIONS` are the config fields
that belong to the head.
"""

from __future__ import annotations

from pathlib import Path

from .model.configuration_gestures import GesturesConfig
from .model.modeling_gestures import GesturesForVideoClassification
from .presets import load_model

HEAD_OPTIONS = ("aggregation", "hidden_size", "num_layers", "dropout", "num_segments", "gamma", "class_weights",
                "id2label", "label2id")


def attach_encoder(
    feature_model: GesturesForVideoClassification | str | Path,
    encoder: GesturesForVideoClassification | str | Path,
    *,
    encoder_weights: str | Path | None = None,
    freeze_encoder: bool | None = None,
) -> GesturesForVideoClassification:
    """Put the aggregator and classifier of a model trained on features behind a snippet encoder.

    ``encoder`` is a model with an encoder, or a preset name, folder or Hub id for
    :func:`gestures_hub.presets.load_model` (``encoder_weights``: a checkpoint for the importers). The result takes
    ``pixel_values`` (videos in, FOS/TCS out) and gives the same logits as ``feature_model`` on the encoder's features.
    ``freeze_encoder`` overrides the encoder config's.
    """
    if not isinstance(feature_model, GesturesForVideoClassification):
        feature_model = GesturesForVideoClassification.from_pretrained(str(feature_model))
    if not isinstance(encoder, GesturesForVideoClassification):
        encoder, _ = load_model(encoder, weights=encoder_weights)
    elif encoder_weights is not None:
        raise ValueError("encoder_weights only applies when the encoder is given by name or path.")
    head, base = feature_model.config, encoder.config
    if base.encoder == "none":
        raise ValueError("The encoder model has no encoder (encoder='none').")
    for name in ("feature_dim", "frames_per_snippet", "fps", "image_size", "frame_geometry"):
        if getattr(head, name) != getattr(base, name):
            raise ValueError(f"The features were made with {name}={getattr(head, name)}, the encoder uses "
                             f"{getattr(base, name)}.")
    frozen = {} if freeze_encoder is None else {"freeze_encoder": freeze_encoder}
    synthetic = head.trained_on_synthetic_data or base.trained_on_synthetic_data  # either part's weights
    config = GesturesConfig.from_dict({**base.to_dict(), **{name: getattr(head, name) for name in HEAD_OPTIONS},
                                       **frozen, "trained_on_synthetic_data": synthetic})
    model = GesturesForVideoClassification(config)
    model.gestures.encoder.load_state_dict(encoder.gestures.encoder.state_dict())
    model.gestures.aggregator.load_state_dict(feature_model.gestures.aggregator.state_dict())
    model.classifier.load_state_dict(feature_model.classifier.state_dict())
    return model.eval()
