"""The Hub unit: everything ``trust_remote_code`` needs, as ``save_pretrained`` copies it next to the weights.

Configuration, model, encoders, aggregators, the streaming video reader, the video processor and the pipeline. Its
modules import each other relatively and nothing else of ``gestures_hub``; the rest of the package imports them.
"""

from pathlib import Path

from .configuration_gestures import SYNTHETIC_NOTICE, GesturesConfig
from .modeling_gestures import (
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

__all__ = [
    "PIPELINE_TASK",
    "SYNTHETIC_NOTICE",
    "UNIT_DIR",
    "GesturesConfig",
    "GesturesForVideoClassification",
    "GesturesModel",
    "GesturesModelOutput",
    "GesturesPreTrainedModel",
    "GesturesVideoClassificationPipeline",
    "GesturesVideoClassifierOutput",
    "GesturesVideoProcessor",
    "SnippetStream",
    "detect_spread",
]
