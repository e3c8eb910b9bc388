"""Helpers shared by several test modules: features datasets, and launching processes on this checkout."""

from __future__ import annotations

import math
import os
import socket
import sys
from pathlib import Path

import numpy as np

from gestures_hub.features import FeatureSettings, FeatureShardWriter

REPO = Path(__file__).resolve().parents[1]
UNIT_FILES = ["aggregation.py", "configuration_gestures.py", "encoders.py", "familiarity.py", "frame_geometry.py",
              "modeling_gestures.py", "pipeline_gestures.py", "video_processing_gestures.py", "video_ranges.py",
              "video_reader.py"]
"""The Hub unit's code files (``gestures_hub/model/``), which every saved model folder carries."""


def checkout_env(**extra: str) -> dict[str, str]:
    """``os.environ`` with this checkout first on ``PYTHONPATH``: a subprocess imports the ``gestures_hub`` under test,
    not whichever one is installed (an editable install may point at another copy)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def free_port() -> int:
    """A TCP port the OS reports free now (bound to port 0), for a launcher's rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch(num_processes: int = 2) -> list[str]:
    """``accelerate launch`` of ``num_processes`` CPU processes (with ``ACCELERATE_USE_CPU=true``) on a free port."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port())]


def as_flags(options: dict) -> list[str]:
    """Keyword arguments of an arguments dataclass as command-line flags (``True``: the bare flag)."""
    flags = []
    for name, value in options.items():
        flags += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return flags


def write_features(path, sequences, labels, patients=None, frames_per_snippet=1, onsets=None):
    """A features dataset of the given ``(length, dim)`` sequences (snippet ``i`` at ``i / 15`` s); one patient per
    video unless given; ``onsets``: each video's ``onset_bilateral`` (default: none)."""
    settings = FeatureSettings(encoder="none", fps=15.0, frames_per_snippet=frames_per_snippet, stride=1,
                               feature_dim=sequences[0].shape[1], image_size=112, synthetic=True)
    with FeatureShardWriter(path, settings) as writer:
        for i, (features, label) in enumerate(zip(sequences, labels, strict=True)):
            writer.add({"video": f"v{i:03d}", "patient": patients[i] if patients else f"p{i:03d}",
                        "seizure": f"s{i:03d}", "view": "Large", "label": int(label), "duration": len(features) / 15,
                        "onset_bilateral": onsets[i] if onsets else None, "num_snippets": len(features),
                        "start_times": np.arange(len(features), dtype=np.float32) / 15,
                        "features": np.asarray(features, dtype=np.float32)})
    return str(path)


def events_dataset(path, task, num_videos=60, length=40, dim=6, seed=0):
    """Noise plus event windows: ``order`` (A then B is TCS, B then A is FOS) or ``presence`` (event C is TCS)."""
    rng = np.random.default_rng(seed)
    sequences, labels = [], []
    for i in range(num_videos):
        label = i % 2
        x = 0.3 * rng.standard_normal((length, dim))
        if task == "order":
            first, second = (0, 1) if label else (1, 0)
            x[rng.integers(0, length // 2 - 12):, first][:12] += 2.0
            x[rng.integers(length // 2, length - 12):, second][:12] += 2.0
        elif label:
            start = rng.integers(0, length - 12)
            x[start:start + 12, 2] += 2.0
        sequences.append(x)
        labels.append(label)
    return write_features(path, sequences, labels)


def noisy_dataset(path, num_videos=24, dim=4, seed=0, onsets=False):
    """Gaussian noise, shifted by 0.8 in TCS videos (odd ones); with ``onsets``, TCS videos spread at 0.5 s."""
    rng = np.random.default_rng(seed)
    sequences = [rng.standard_normal((int(rng.integers(12, 30)), dim)) + 0.8 * (i % 2) for i in range(num_videos)]
    return write_features(path, sequences, [i % 2 for i in range(num_videos)],
                          onsets=[0.5 if i % 2 else None for i in range(num_videos)] if onsets else None)


def spread_dataset(path, num_videos=40, length=45, dim=4, seed=0):
    """Focal activity (dimension 0) throughout; TCS videos (odd ones) turn bilateral (dimension 1) at a random onset
    between 1 and 2 s (snippets are 1/15 s apart)."""
    rng = np.random.default_rng(seed)
    sequences, onsets = [], []
    for i in range(num_videos):
        x = 0.3 * rng.standard_normal((length, dim))
        x[:, 0] += 1.0
        onset = float(rng.uniform(1.0, 2.0)) if i % 2 else None
        if onset is not None:
            x[math.ceil(onset * 15):, 1] += 1.5
        sequences.append(x)
        onsets.append(onset)
    return write_features(path, sequences, [i % 2 for i in range(num_videos)], onsets=onsets), sequences, onsets
