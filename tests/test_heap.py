"""Extraction hands the heap's free memory back to the system every few batches, so hours of video stay flat."""

from __future__ import annotations

import ctypes

import torch

from gestures_hub import GesturesForVideoClassification, heap, snippet_encoder
from gestures_hub.presets import get_config


def test_release_free_heap_calls_glibc_malloc_trim_where_there_is_one(monkeypatch):
    assert heap.release_free_heap() is (getattr(ctypes.CDLL(None), "malloc_trim", None) is not None)
    calls = []
    monkeypatch.setattr(heap, "_malloc_trim", lambda: lambda pad: calls.append(pad) or 1)
    assert heap.release_free_heap() and calls == [0]
    monkeypatch.setattr(heap, "_malloc_trim", lambda: None)  # another C library: nothing to do
    assert heap.release_free_heap() is False


def test_the_snippet_encoder_trims_the_heap_every_trim_every_batches(monkeypatch):
    trims = []
    monkeypatch.setattr(snippet_encoder, "release_free_heap", lambda: trims.append(1))
    monkeypatch.setattr(snippet_encoder, "TRIM_EVERY", 3)
    model = GesturesForVideoClassification(get_config("tiny-videomae")).eval()
    runtime = snippet_encoder.choose_runtime(model.config.encoder, "cpu", "fp32", batch_size=2)
    encoder = snippet_encoder.SnippetEncoder(model, runtime)
    snippets = torch.zeros(2, 3, model.config.frames_per_snippet, model.config.image_size, model.config.image_size)
    for count in range(1, 8):
        assert encoder(snippets).shape == (2, model.config.feature_dim)
        assert len(trims) == count // 3
