"""GESTURES (Pérez-García et al., MICCAI 2021) for the Hugging Face ecosystem.

Research software for classifying seizure videos (FOS vs TCS); not a medical device.

Importing the package is cheap: the model classes (and their registration with transformers' Auto classes and
pipeline registry, done by :mod:`gestures_hub.model`) load on first use, e.g. ``gestures_hub.GesturesConfig``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# OpenMP threads that spin while they wait collapse on a shared machine: with six other 2-thread PyTorch jobs on two
# cores, encoding took 52x longer than on a quiet machine, and 1.9x with passive waiting, which costs nothing when the
# machine is quiet (benchmarks/shared_machine.py). Set before torch loads OpenMP; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_MODEL_NAMES = (
    "PIPELINE_NAME",
    "GesturesConfig",
    "GesturesForVideoClassification",
    "GesturesModel",
    "GesturesModelOutput",
    "GesturesPreTrainedModel",
    "GesturesVideoClassificationPipeline",
    "GesturesVideoClassifierOutput",
    "GesturesVideoProcessor",
)
__all__ = list(_MODEL_NAMES)


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        return getattr(importlib.import_module(".model", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
