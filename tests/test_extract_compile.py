"""``gestures extract --compile``: which devices compile by default, and a compiled encoder kept only while faithful."""

from __future__ import annotations

import argparse

import pytest
import torch

from gestures_hub import GesturesForVideoClassification, snippet_encoder
from gestures_hub.commands import extract as extract_parser
from gestures_hub.presets import get_config
from gestures_hub.snippet_encoder import SnippetEncoder, auto_compile, choose_runtime


@pytest.fixture(scope="module")
def model() -> GesturesForVideoClassification:
    torch.manual_seed(0)
    return GesturesForVideoClassification(get_config("r3d_18", image_size=32)).eval()


def snippets() -> torch.Tensor:
    return torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))


def test_compile_modes_per_device():
    assert not auto_compile(torch.device("cpu")) and auto_compile(torch.device("cuda"))
    assert not choose_runtime("r3d_18", "cpu", "fp32", compile="auto").compile  # measured slower on a CPU
    assert choose_runtime("r3d_18", "cpu", "fp32", compile="on").compile
    assert not choose_runtime("r3d_18", "cuda", "fp32", compile="off").compile
    assert choose_runtime("r3d_18", "cuda", "fp32", compile="auto").compile
    assert choose_runtime("r3d_18", "cpu", "fp32", batch_size=2, compile="on").describe() == (
        "cpu, fp32, channels_last_3d, batch 2, compiled")
    with pytest.raises(ValueError, match="compile must be auto, on or off, got 'yes'"):
        choose_runtime("r3d_18", "cpu", compile="yes")
    parser = argparse.ArgumentParser()
    extract_parser(parser)
    required = ["--manifest", "m.csv", "--model", "x", "--out", "o"]
    assert parser.parse_args(required).compile == "auto"
    assert parser.parse_args([*required, "--compile", "off"]).compile == "off"


def test_a_faithful_compiled_encoder_is_kept(model, monkeypatch):
    """Dynamo really traces the encoder (eager backend: no C++ compilation in the test)."""
    monkeypatch.setattr(snippet_encoder.torch, "compile", lambda function: torch._dynamo.optimize("eager")(function))
    eager = SnippetEncoder(model, choose_runtime("r3d_18", "cpu", "fp32"))
    compiled = SnippetEncoder(model, choose_runtime("r3d_18", "cpu", "fp32", compile="on"))
    for _ in range(2):
        torch.testing.assert_close(compiled(snippets()), eager(snippets()), atol=1e-5, rtol=1e-5)
    assert compiled.runtime.compile and compiled.encode is not model.gestures.encode_snippets


@pytest.mark.parametrize(("compile_", "message"), [
    (lambda function: lambda x: function(x) + 0.1 * torch.randn_like(function(x)),
     r"torch.compile of the encoder is not used: its features are only within cosine 0\.\d+ of float32's "
     r"\(at least 0.9999 is needed\); the encoder runs eagerly."),
    (lambda function: lambda x: (_ for _ in ()).throw(RuntimeError("no C++ compiler\nmore")),
     r"torch.compile of the encoder is not used: it failed \(RuntimeError: no C\+\+ compiler\); the encoder runs "
     "eagerly."),
])
def test_an_unfaithful_or_failing_compiled_encoder_falls_back_to_eager(model, monkeypatch, compile_, message):
    monkeypatch.setattr(snippet_encoder.torch, "compile", compile_)
    eager = SnippetEncoder(model, choose_runtime("r3d_18", "cpu", "fp32"))
    compiled = SnippetEncoder(model, choose_runtime("r3d_18", "cpu", "fp32", compile="on"))
    with pytest.warns(UserWarning, match=message):
        first = compiled(snippets())
    torch.testing.assert_close(first, eager(snippets()), atol=0, rtol=0)
    assert not compiled.runtime.compile and compiled.encode == model.gestures.encode_snippets
    assert "compiled" not in compiled.runtime.describe()
