"""GESTURES models: a snippet encoder, a sequence aggregator and a seizure-level classifier."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .aggregation import build_aggregator
from .configuration_gestures import GesturesConfig, GesturesEnsembleConfig
from .encoders import build_encoder
from .pipeline_gestures import PIPELINE_TASK, GesturesVideoClassificationPipeline
from .video_processing_gestures import GesturesVideoProcessor

REMOTE_CODE_AUTO_MAP = {
    "AutoConfig": "configuration_gestures.GesturesConfig",
    "AutoModel": "modeling_gestures.GesturesModel",
    "AutoModelForVideoClassification": "modeling_gestures.GesturesForVideoClassification",
    "AutoVideoProcessor": "video_processing_gestures.GesturesVideoProcessor",
}
ENSEMBLE_AUTO_MAP = {
    "AutoConfig": "configuration_gestures.GesturesEnsembleConfig",
    "AutoModel": "modeling_gestures.GesturesEnsembleForVideoClassification",
    "AutoModelForVideoClassification": "modeling_gestures.GesturesEnsembleForVideoClassification",
    "AutoVideoProcessor": "video_processing_gestures.GesturesVideoProcessor",
}
"""``config.auto_map`` of a saved fold ensemble (its ``AutoModel`` is the ensemble too)."""
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {
        "impl": f"pipeline_gestures.{GesturesVideoClassificationPipeline.__name__}",
        "pt": ["AutoModelForVideoClassification"],
        "tf": [],
        "type": "video",
    }
}
"""``config.custom_pipelines``: ``pipeline(model=..., trust_remote_code=True)`` builds the GESTURES pipeline."""


@dataclass
class GesturesModelOutput(ModelOutput):
    """Output of [`GesturesModel`].

    Args:
        pooler_output (`torch.FloatTensor` of shape `(batch_size, representation_size)`):
            Seizure-level representation of each video.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_snippets, step_size)`):
            Per-snippet hidden states of the aggregator (zeros at padded snippets).
        snippet_features (`torch.FloatTensor` of shape `(batch_size, num_snippets, feature_dim)`):
            Per-snippet encoder features (the input features when `snippet_features` were given).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            The encoder's states (`snippet_features`) and the aggregator's (`last_hidden_state`), in that order.
    """

    pooler_output: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    snippet_features: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class GesturesVideoClassifierOutput(ModelOutput):
    """Output of [`GesturesForVideoClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Cross-entropy loss (weighted by `config.class_weights` when set).
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Seizure-level classification scores: the classifier's outputs divided by `config.temperature`
            (temperature-scaled logits; with the default 1.0 they are the classifier's own), so that their softmax is
            the calibrated probability. Multiply by the temperature for the raw ones.
        snippet_logits (`torch.FloatTensor` of shape `(batch_size, num_snippets, num_labels)`, *optional*):
            The classifier applied to each snippet's hidden state, divided by the temperature too, for a timeline of
            evidence (zeros at padded snippets). For the mean aggregator their masked mean equals `logits`; for a
            unidirectional RNN the last one does. `None` for stacked RNNs, whose seizure representation spans all
            layers.
        pooler_output, last_hidden_state, snippet_features, hidden_states:
            As in [`GesturesModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    snippet_logits: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    snippet_features: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def encode_snippets(encoder: nn.Module | None, config: GesturesConfig, snippets: torch.Tensor) -> torch.Tensor:
    """Encode ``(N, 3, T, H, W)`` normalised snippets into ``(N, feature_dim)`` features with ``encoder``, checking
    the shapes against ``config``."""
    if encoder is None:
        raise ValueError("This model has no encoder (encoder='none'): pass `snippet_features` instead.")
    expected = (3, config.frames_per_snippet, config.image_size, config.image_size)
    if snippets.ndim != 5 or tuple(snippets.shape[1:]) != expected:
        raise ValueError(
            f"Snippets must have shape (N, {', '.join(map(str, expected))}): {config.frames_per_snippet} frames of "
            f"{config.image_size}x{config.image_size} (the model's image_size); got {tuple(snippets.shape)}. The "
            "model's video processor (AutoVideoProcessor) makes them."
        )
    features = encoder(snippets)
    if features.shape[-1] != config.feature_dim:
        raise ValueError(f"The encoder returned {features.shape[-1]} features, config.feature_dim is "
                         f"{config.feature_dim}.")
    return features


def snippet_inputs(
    config: GesturesConfig,
    encode: Callable[[torch.Tensor], torch.Tensor],
    pixel_values: torch.Tensor | None,
    snippet_features: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(batch, snippets, feature_dim)`` features of a forward pass and its boolean mask of real snippets:
    ``snippet_features`` as given, or the real snippets of ``pixel_values`` encoded with ``encode`` (padding: 0)."""
    if (pixel_values is None) == (snippet_features is None):
        raise ValueError("Pass exactly one of `pixel_values` or `snippet_features`.")
    inputs = pixel_values if pixel_values is not None else snippet_features
    batch_size, num_snippets = inputs.shape[:2]
    if attention_mask is None:
        attention_mask = torch.ones(batch_size, num_snippets, dtype=torch.long, device=inputs.device)
    elif tuple(attention_mask.shape) != (batch_size, num_snippets):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; expected "
                         f"{(batch_size, num_snippets)}.")
    valid = attention_mask.bool()
    if pixel_values is not None:
        if pixel_values.ndim != 6:
            raise ValueError("pixel_values must have shape (batch, snippets, 3, frames, height, width); got "
                             f"{tuple(pixel_values.shape)}.")
        encoded = encode(pixel_values[valid])
        snippet_features = encoded.new_zeros(batch_size, num_snippets, encoded.shape[-1])
        snippet_features[valid] = encoded
    elif snippet_features.ndim != 3 or snippet_features.shape[-1] != config.feature_dim:
        raise ValueError(f"snippet_features must have shape (batch, snippets, {config.feature_dim}); got "
                         f"{tuple(snippet_features.shape)}.")
    return snippet_features, valid


def check_no_attentions(config: GesturesConfig, output_attentions: bool | None) -> None:
    if output_attentions or (output_attentions is None and config.output_attentions):
        raise ValueError("GESTURES models have no attention weights to return; use output_hidden_states=True for "
                         "the encoder's and aggregator's states.")


class GesturesPreTrainedModel(PreTrainedModel):
    config_class = GesturesConfig
    base_model_prefix = "gestures"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    remote_code_auto_map = REMOTE_CODE_AUTO_MAP
    """``config.auto_map`` of folders saved by classes registered for remote code."""

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """Load as usual, then freeze the encoder again where the config says so (loading re-creates parameters)."""
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).freeze_encoders()
        return loaded

    def freeze_encoders(self) -> None:
        """``requires_grad_(False)`` on the encoder of every ``GesturesModel`` in this model whose config freezes it."""
        for module in self.modules():
            if isinstance(module, GesturesModel) and module.encoder is not None and module.config.freeze_encoder:
                module.encoder.requires_grad_(False)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as usual, with the video processor (``video_preprocessor_config.json``) and the pipeline in the
        config's ``custom_pipelines``. Classes registered for remote code map every Auto class in ``config.auto_map``
        and copy the whole Hub unit (config, model, encoders, aggregators, reader, processor, pipeline) next to the
        weights."""
        self.config.custom_pipelines = CUSTOM_PIPELINES
        if self._auto_class is not None:
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **self.remote_code_auto_map}
            GesturesVideoProcessor.register_for_auto_class()
        saved = super().save_pretrained(save_directory, *args, **kwargs)
        GesturesVideoProcessor(self.config).save_pretrained(save_directory)
        return saved

    def _init_weights(self, module: nn.Module) -> None:
        """torchvision's video ResNet initialisation for the CNN parts, PyTorch defaults elsewhere."""
        if isinstance(module, nn.Conv3d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm3d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        elif isinstance(module, (nn.Linear, nn.LSTM, nn.GRU)):
            module.reset_parameters()


class GesturesModel(GesturesPreTrainedModel):
    """Encoder + aggregator: a video (or its precomputed snippet features) in, a seizure representation out.

    With gradient checkpointing on (``activation_checkpointing_enable()``), training encodes the snippets
    ``checkpoint_snippets`` at a time, each chunk recomputed in the backward pass: peak activation memory is one
    chunk's, whatever the batch. BatchNorm layers in training mode would then see chunk statistics; keep them in
    eval mode for results identical to one pass.
    """

    checkpoint_snippets = 8

    def __init__(self, config: GesturesConfig) -> None:
        super().__init__(config)
        self.gradient_checkpointing = False
        self.encoder = build_encoder(config.encoder, config.encoder_config)
        self.aggregator = build_aggregator(config.aggregation, config.feature_dim, config.hidden_size,
                                           config.num_layers)
        if self.encoder is not None and config.freeze_encoder:
            self.encoder.requires_grad_(False)
        self.post_init()

    def train(self, mode: bool = True) -> GesturesModel:
        super().train(mode)
        if self.encoder is not None and self.config.freeze_encoder:
            self.encoder.eval()
        return self

    def encode_snippets(self, snippets: torch.Tensor) -> torch.Tensor:
        """Encode ``(N, 3, T, H, W)`` normalised snippets into ``(N, feature_dim)`` features."""
        return encode_snippets(self.encoder, self.config, snippets)

    def _encode_for_forward(self, snippets: torch.Tensor) -> torch.Tensor:
        """:meth:`encode_snippets`, chunk by chunk under gradient checkpointing while training."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return torch.cat([self._gradient_checkpointing_func(self.encode_snippets, chunk)
                              for chunk in snippets.split(self.checkpoint_snippets)])
        return self.encode_snippets(snippets)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        snippet_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> GesturesModelOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_snippets, 3, frames, height, width)`):
                Normalised snippets of each video (the model's video processor makes them).
            snippet_features (`torch.FloatTensor` of shape `(batch_size, num_snippets, feature_dim)`):
                Precomputed snippet features, instead of `pixel_values`.
            attention_mask (`torch.LongTensor` of shape `(batch_size, num_snippets)`, *optional*):
                1 for real snippets, 0 for padding. Padded snippets are never encoded and change no output.
            output_hidden_states (`bool`, *optional*):
                Also return `hidden_states`: the encoder's and the aggregator's per-snippet states.
            output_attentions (`bool`, *optional*):
                Not supported: GESTURES aggregators have no attention (a `ValueError` says so).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        check_no_attentions(self.config, output_attentions)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        snippet_features, valid = snippet_inputs(self.config, self._encode_for_forward, pixel_values,
                                                 snippet_features, attention_mask)
        pooled, steps = self.aggregator(snippet_features, valid)
        output = GesturesModelOutput(pooler_output=pooled, last_hidden_state=steps, snippet_features=snippet_features,
                                     hidden_states=(snippet_features, steps) if output_hidden_states else None)
        return output if return_dict else output.to_tuple()


class GesturesForVideoClassification(GesturesPreTrainedModel):
    """GESTURES with a linear classifier on the seizure representation (FOS vs TCS by default)."""

    def __init__(self, config: GesturesConfig) -> None:
        super().__init__(config)
        config.drop_unfit_class_weights()  # e.g. num_labels changed by from_pretrained(..., ignore_mismatched_sizes)
        self.gestures = GesturesModel(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(self.gestures.aggregator.output_size, config.num_labels)
        self.post_init()

    def encode_snippets(self, snippets: torch.Tensor) -> torch.Tensor:
        """Encode ``(N, 3, T, H, W)`` normalised snippets into ``(N, feature_dim)`` features (what the pipeline streams
        through the encoder before the head sees the whole sequence)."""
        return self.gestures.encode_snippets(snippets)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        snippet_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> GesturesVideoClassifierOutput | tuple:
        r"""
        Args:
            pixel_values, snippet_features, attention_mask, output_hidden_states, output_attentions:
                See [`GesturesModel.forward`].
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Class indices (-100: ignored); when given, the cross-entropy loss is returned.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        base = self.gestures(pixel_values=pixel_values, snippet_features=snippet_features,
                             attention_mask=attention_mask, output_hidden_states=output_hidden_states,
                             output_attentions=output_attentions, return_dict=True)
        logits = self.classifier(self.dropout(base.pooler_output)) / self.config.temperature
        snippet_logits = None
        if base.last_hidden_state.shape[-1] == self.classifier.in_features:
            snippet_logits = self.classifier(base.last_hidden_state) / self.config.temperature
            if attention_mask is not None:
                snippet_logits = snippet_logits * attention_mask.unsqueeze(-1).to(snippet_logits.dtype)
        loss = None
        if labels is not None:
            weight = None
            if self.config.class_weights is not None:
                weight = torch.tensor(self.config.class_weights, dtype=logits.dtype, device=logits.device)
            loss = nn.functional.cross_entropy(logits, labels.to(logits.device), weight=weight)
        output = GesturesVideoClassifierOutput(
            loss=loss,
            logits=logits,
            snippet_logits=snippet_logits,
            pooler_output=base.pooler_output,
            last_hidden_state=base.last_hidden_state,
            snippet_features=base.snippet_features,
            hidden_states=base.hidden_states,
        )
        return output if return_dict else output.to_tuple()


@dataclass
class GesturesEnsembleClassifierOutput(ModelOutput):
    """Output of [`GesturesEnsembleForVideoClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Negative log-likelihood of the labels under the ensemble's probabilities.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Log of the ensemble's probability (the mean of the members' softmax), so `logits.softmax(-1)` is that mean.
        snippet_logits (`torch.FloatTensor` of shape `(batch_size, num_snippets, num_labels)`, *optional*):
            Log of the mean of the members' per-snippet probabilities (zeros at padded snippets; `None` for stacked
            RNNs).
        member_logits (`torch.FloatTensor` of shape `(batch_size, num_members, num_labels)`):
            Each member's temperature-scaled logits (their softmax: each member's probabilities).
        member_snippet_logits (`torch.FloatTensor` of shape `(batch_size, num_members, num_snippets, num_labels)`):
            Each member's temperature-scaled snippet logits (`None` for stacked RNNs).
        probability_std (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Standard deviation of the members' probabilities (population, over the members): their disagreement.
        snippet_probability_std (`torch.FloatTensor` of shape `(batch_size, num_snippets, num_labels)`, *optional*):
            The same per snippet (zeros at padded snippets).
        snippet_features (`torch.FloatTensor` of shape `(batch_size, num_snippets, feature_dim)`):
            The shared encoder's features (the input features when `snippet_features` were given).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    snippet_logits: torch.FloatTensor | None = None
    member_logits: torch.FloatTensor | None = None
    member_snippet_logits: torch.FloatTensor | None = None
    probability_std: torch.FloatTensor | None = None
    snippet_probability_std: torch.FloatTensor | None = None
    snippet_features: torch.FloatTensor | None = None


class GesturesEnsembleForVideoClassification(GesturesPreTrainedModel):
    """A fold ensemble: one snippet encoder pass shared by `num_members` heads (each a features-in
    [`GesturesForVideoClassification`], e.g. the best model of one cross-validation fold), whose temperature-scaled
    probabilities are averaged. Takes what every GESTURES model takes (`pixel_values` or `snippet_features`)."""

    config_class = GesturesEnsembleConfig
    remote_code_auto_map = ENSEMBLE_AUTO_MAP

    def __init__(self, config: GesturesEnsembleConfig) -> None:
        super().__init__(config)
        self.encoder = build_encoder(config.encoder, config.encoder_config)
        member = config.member_config()
        self.members = nn.ModuleList([GesturesForVideoClassification(member) for _ in range(config.num_members)])
        self.freeze_encoders()
        self.post_init()

    def freeze_encoders(self) -> None:
        if self.encoder is not None and self.config.freeze_encoder:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> GesturesEnsembleForVideoClassification:
        super().train(mode)
        if self.encoder is not None and self.config.freeze_encoder:
            self.encoder.eval()
        return self

    def encode_snippets(self, snippets: torch.Tensor) -> torch.Tensor:
        """Encode ``(N, 3, T, H, W)`` normalised snippets into ``(N, feature_dim)`` features (shared by all members)."""
        return encode_snippets(self.encoder, self.config, snippets)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        snippet_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> GesturesEnsembleClassifierOutput | tuple:
        r"""
        Args:
            pixel_values, snippet_features, attention_mask, labels, output_attentions:
                See [`GesturesForVideoClassification.forward`]. `output_hidden_states` is accepted for the common
                signature; the members' states are not returned.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        check_no_attentions(self.config, output_attentions)
        features, valid = snippet_inputs(self.config, self.encode_snippets, pixel_values, snippet_features,
                                         attention_mask)
        mask = valid.long()
        outputs = [member(snippet_features=features, attention_mask=mask, return_dict=True) for member in self.members]
        member_logits = torch.stack([output.logits for output in outputs], dim=1) / self.config.temperature
        logits, probability_std = _mean_and_spread(member_logits, dim=1)
        member_snippet_logits = snippet_logits = snippet_std = None
        if outputs[0].snippet_logits is not None:
            member_snippet_logits = torch.stack([output.snippet_logits for output in outputs], dim=1)
            member_snippet_logits = member_snippet_logits / self.config.temperature
            snippet_logits, snippet_std = _mean_and_spread(member_snippet_logits, dim=1)
            padding = mask.unsqueeze(-1).to(snippet_logits.dtype)
            snippet_logits, snippet_std = snippet_logits * padding, snippet_std * padding
        loss = None if labels is None else nn.functional.nll_loss(logits, labels.to(logits.device))
        output = GesturesEnsembleClassifierOutput(
            loss=loss, logits=logits, snippet_logits=snippet_logits, member_logits=member_logits,
            member_snippet_logits=member_snippet_logits, probability_std=probability_std,
            snippet_probability_std=snippet_std, snippet_features=features,
        )
        return output if return_dict else output.to_tuple()


def _mean_and_spread(member_logits: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log of the mean of the members' softmax along ``dim``, and the members' standard deviation."""
    probabilities = member_logits.softmax(-1)
    mean = probabilities.mean(dim)
    return mean.clamp_min(torch.finfo(mean.dtype).tiny).log(), probabilities.std(dim, correction=0)


__all__ = ["GesturesModel", "GesturesForVideoClassification", "GesturesPreTrainedModel",
           "GesturesEnsembleForVideoClassification"]
