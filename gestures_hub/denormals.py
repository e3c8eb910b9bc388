"""Flushing denormal floats to zero while training on a CPU."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_DEPTH = threading.local()  # how many flushed_denormals are open on this thread


@contextmanager
def flushed_denormals() -> Iterator[None]:
    """Flush denormal floats (below 1.2e-38) to zero on this thread meanwhile (``torch.set_flush_denormal``), then
    restore IEEE denormals; nests, and works as a decorator. ``GESTURES_FLUSH_DENORMALS=0`` keeps them throughout.

    As a model converges, its gradients and AdamW's moments reach such values, and x86 CPUs compute on them up to 100x
    slower: ``gestures train``'s BLSTM epochs took 6x (2 threads) to 15x (1 thread) longer once the training loss
    neared zero (``benchmarks/train_epochs.py``), the grid's stacks 1.25-1.45x longer (:mod:`gestures_hub.reproduce`).
    No weight changes visibly (an update of such a value is below 1e-30). GPUs are not affected."""
    depth = getattr(_DEPTH, "value", 0)
    flush = depth == 0 and os.environ.get("GESTURES_FLUSH_DENORMALS", "1") != "0" and torch.set_flush_denormal(True)
    _DEPTH.value = depth + 1
    try:
        yield
    finally:
        _DEPTH.value = depth
        if flush:
            torch.set_flush_denormal(False)
