"""The Hub unit: everything ``trust_remote_code`` needs, as ``save_pretrained`` copies it next to the weights.

Configuration, model, encoders, aggregators, the streaming video reader, the video processor and the pipeline. Its
modules import each other relatively and nothing else of ``gestures_hub``; the rest of the package imports them.
Importing this package (not copied to the Hub) registers the classes with transformers' Auto classes, and the
pipeline under ``PIPELINE_NAME``, so that folders saved by this package load in this process without remote code.
"""

from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification, AutoVideoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_gestures import SYNTHETIC_NOTICE, GesturesConfig, GesturesEnsembleConfig, config_from_pretrained
from .modeling_gestures import (
    GesturesEnsembleClassifierOutput,
    GesturesEnsembleForVideoClassification,
    GesturesForVideoClassification,
    GesturesModel,
    GesturesModelOutput,
    GesturesPreTrainedModel,
    GesturesVideoClassifierOutput,
)
from .pipeline_gestures import PIPELINE_TASK, GesturesVideoClassificationPipeline, detect_spread
from .video_processing_gestures import GesturesVideoProcessor, SnippetStream

UNIT_DIR = Path(__file__).resolve().parent
"""Where the unit's files live (what ``save_pretrained`` copies for remote code)."""
PIPELINE_NAME = "gestures-video-classification"
"""The pipeline's task name in this process (``pipeline(PIPELINE_NAME, model=...)``); saved models name it under
``"video-classification"`` in ``custom_pipelines``, which is what ``pipeline(model=..., trust_remote_code=True)`` reads.
A different name here keeps ``pipeline("video-classification")`` of other models untouched."""

AutoConfig.register(GesturesConfig.model_type, GesturesConfig, exist_ok=True)
AutoModel.register(GesturesConfig, GesturesModel, exist_ok=True)
AutoModelForVideoClassification.register(GesturesConfig, GesturesForVideoClassification, exist_ok=True)
AutoVideoProcessor.register(GesturesConfig, GesturesVideoProcessor, exist_ok=True)
AutoConfig.register(GesturesEnsembleConfig.model_type, GesturesEnsembleConfig, exist_ok=True)
AutoModel.register(GesturesEnsembleConfig, GesturesEnsembleForVideoClassification, exist_ok=True)
AutoModelForVideoClassification.register(GesturesEnsembleConfig, GesturesEnsembleForVideoClassification,
                                         exist_ok=True)
AutoVideoProcessor.register(GesturesEnsembleConfig, GesturesVideoProcessor, exist_ok=True)
GesturesConfig.register_for_auto_class()
GesturesEnsembleConfig.register_for_auto_class()
GesturesModel.register_for_auto_class("AutoModel")
GesturesForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
GesturesEnsembleForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
GesturesVideoProcessor.register_for_auto_class()
PIPELINE_REGISTRY.register_pipeline(PIPELINE_NAME, pipeline_class=GesturesVideoClassificationPipeline,
                                    pt_model=AutoModelForVideoClassification, type="video")

__all__ = [
    "PIPELINE_NAME",
    "PIPELINE_TASK",
    "SYNTHETIC_NOTICE",
    "UNIT_DIR",
    "GesturesConfig",
    "GesturesEnsembleClassifierOutput",
    "GesturesEnsembleConfig",
    "GesturesEnsembleForVideoClassification",
    "GesturesForVideoClassification",
    "GesturesModel",
    "GesturesModelOutput",
    "GesturesPreTrainedModel",
    "GesturesVideoClassificationPipeline",
    "GesturesVideoClassifierOutput",
    "GesturesVideoProcessor",
    "SnippetStream",
    "config_from_pretrained",
    "detect_spread",
]
