"""GESTURES (Pérez-García et al., MICCAI 2021) for the Hugging Face ecosystem.

Research software for classifying seizure videos (FOS vs TCS); not a medical device.
"""

from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification

from .configuration_gestures import GesturesConfig
from .modeling_gestures import (
    GesturesForVideoClassification,
    GesturesModel,
    GesturesModelOutput,
    GesturesPreTrainedModel,
    GesturesVideoClassifierOutput,
)

__version__ = "0.1.0"

AutoConfig.register(GesturesConfig.model_type, GesturesConfig, exist_ok=True)
AutoModel.register(GesturesConfig, GesturesModel, exist_ok=True)
AutoModelForVideoClassification.register(GesturesConfig, GesturesForVideoClassification, exist_ok=True)
GesturesConfig.register_for_auto_class()
GesturesModel.register_for_auto_class("AutoModel")
GesturesForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")

__all__ = [
    "GesturesConfig",
    "GesturesForVideoClassification",
    "GesturesModel",
    "GesturesModelOutput",
    "GesturesPreTrainedModel",
    "GesturesVideoClassifierOutput",
]
