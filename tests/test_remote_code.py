"""Saved models load through the Auto classes with trust_remote_code where gestures_hub is not importable."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import UNIT_FILES

from gestures_hub import GesturesForVideoClassification
from gestures_hub.model import UNIT_DIR
from gestures_hub.presets import get_config

LOADER = textwrap.dedent(
    """
    import sys
    sys.modules["gestures_hub"] = None  # any import of the package now fails
    import torch
    from transformers import AutoModel, AutoModelForVideoClassification

    source, inputs_path, out_path = sys.argv[1:]
    inputs = torch.load(inputs_path, weights_only=True)
    classifier = AutoModelForVideoClassification.from_pretrained(source, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(source, trust_remote_code=True).eval()
    assert type(classifier).__name__ == "GesturesForVideoClassification", type(classifier)
    assert type(base).__name__ == "GesturesModel", type(base)
    assert not type(classifier).__module__.startswith("gestures_hub"), type(classifier).__module__
    with torch.no_grad():
        out = classifier(**inputs)
        base_out = base(**inputs)
    torch.save({"logits": out.logits, "snippet_logits": out.snippet_logits,
                "pooler_output": base_out.pooler_output, "snippet_features": base_out.snippet_features}, out_path)
    """
)

CASES = {
    "tiny-features": lambda: {
        "snippet_features": torch.randn(2, 5, 16),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
    },
    "tiny-videomae": lambda: {"pixel_values": torch.randn(1, 3, 3, 4, 32, 32)},
    "r2plus1d_18": lambda: {"pixel_values": torch.randn(1, 2, 3, 8, 32, 32)},
}
OVERRIDES = {"r2plus1d_18": {"image_size": 32}}


def load_elsewhere(source: str, inputs: dict, tmp_path, env: dict | None = None) -> dict:
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "loader.py").write_text(LOADER)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "loader.py"), source, str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(tmp_path / "out.pt", weights_only=True)


def reference(model: GesturesForVideoClassification, inputs: dict) -> dict:
    with torch.no_grad():
        out = model(**inputs)
    return {
        "logits": out.logits,
        "snippet_logits": out.snippet_logits,
        "pooler_output": out.pooler_output,
        "snippet_features": out.snippet_features,
    }


@pytest.mark.parametrize("preset", list(CASES))
def test_save_then_load_with_remote_code_in_a_fresh_process(preset, tmp_path):
    torch.manual_seed(0)
    model = GesturesForVideoClassification(get_config(preset, hidden_size=6, **OVERRIDES.get(preset, {}))).eval()
    model.save_pretrained(tmp_path / "model")
    files = sorted(os.listdir(tmp_path / "model"))
    assert files == sorted([*UNIT_FILES, "config.json", "model.safetensors", "video_preprocessor_config.json"])
    for name in UNIT_FILES:  # exactly the package's Hub unit, copied as it is
        assert (tmp_path / "model" / name).read_bytes() == (UNIT_DIR / name).read_bytes(), name
    assert sorted(path.name for path in UNIT_DIR.glob("*.py")) == sorted([*UNIT_FILES, "__init__.py"])
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_gestures.GesturesConfig",
        "AutoModel": "modeling_gestures.GesturesModel",
        "AutoModelForVideoClassification": "modeling_gestures.GesturesForVideoClassification",
        "AutoVideoProcessor": "video_processing_gestures.GesturesVideoProcessor",
    }
    assert config["custom_pipelines"]["video-classification"]["impl"] == (
        "pipeline_gestures.GesturesVideoClassificationPipeline")
    inputs = CASES[preset]()
    loaded = load_elsewhere(str(tmp_path / "model"), inputs, tmp_path)
    for key, expected in reference(model, inputs).items():
        torch.testing.assert_close(loaded[key], expected, rtol=0, atol=0, msg=f"{preset}: {key}")


def test_load_by_repo_id_from_a_hub_cache_snapshot(tmp_path):
    torch.manual_seed(0)
    model = GesturesForVideoClassification(get_config("tiny-videomae")).eval()
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--gestures-org--gestures-blstm"
    model.save_pretrained(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    inputs = CASES["tiny-videomae"]()
    loaded = load_elsewhere(
        "gestures-org/gestures-blstm", inputs, tmp_path, env={"HF_HUB_CACHE": str(tmp_path / "hub")}
    )
    for key, expected in reference(model, inputs).items():
        torch.testing.assert_close(loaded[key], expected, rtol=0, atol=0, msg=key)


def test_in_process_auto_classes_resolve_the_package_classes(tmp_path):
    from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification

    from gestures_hub import GesturesModel

    GesturesForVideoClassification(get_config("tiny-features")).save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)).__module__ == "gestures_hub.model.configuration_gestures"
    assert type(AutoModel.from_pretrained(tmp_path)) is GesturesModel
    assert type(AutoModelForVideoClassification.from_pretrained(tmp_path)) is GesturesForVideoClassification
