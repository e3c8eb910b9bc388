"""GESTURES (Pérez-García et al., MICCAI 2021) for the Hugging Face ecosystem.

Research software for classifying seizure videos (FOS vs TCS); not a medical device.
"""

from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification, AutoVideoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .model import (
    GesturesConfig,
    GesturesForVideoClassification,
    GesturesModel,
    GesturesModelOutput,
    GesturesPreTrainedModel,
    GesturesVideoClassificationPipeline,
    GesturesVideoClassifierOutput,
    GesturesVideoProcessor,
)

__version__ = "0.1.0"

PIPELINE_NAME = "gestures-video-classification"
"""The pipeline's task name in this process (``pipeline(PIPELINE_NAME, model=...)``); saved models name it under
``"video-classification"`` in ``custom_pipelines``, which is what ``pipeline(model=..., trust_remote_code=True)`` reads.
A different name here keeps ``pipeline("video-classification")`` of other models untouched."""

AutoConfig.register(GesturesConfig.model_type, GesturesConfig, exist_ok=True)
AutoModel.register(GesturesConfig, GesturesModel, exist_ok=True)
AutoModelForVideoClassification.register(GesturesConfig, GesturesForVideoClassification, exist_ok=True)
AutoVideoProcessor.register(GesturesConfig, GesturesVideoProcessor, exist_ok=True)
GesturesConfig.register_for_auto_class()
GesturesModel.register_for_auto_class("AutoModel")
GesturesForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
GesturesVideoProcessor.register_for_auto_class()
PIPELINE_REGISTRY.register_pipeline(PIPELINE_NAME, pipeline_class=GesturesVideoClassificationPipeline,
                                    pt_model=AutoModelForVideoClassification, type="video")

__all__ = [
    "PIPELINE_NAME",
    "GesturesConfig",
    "GesturesForVideoClassification",
    "GesturesModel",
    "GesturesModelOutput",
    "GesturesPreTrainedModel",
    "GesturesVideoClassificationPipeline",
    "GesturesVideoClassifierOutput",
    "GesturesVideoProcessor",
]
