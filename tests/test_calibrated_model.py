"""config.temperature: logits are temperature-scaled, the value survives save and load, and every output says so."""

import json

import numpy as np
import pytest
import torch

from gestures_hub.model import GesturesConfig, GesturesForVideoClassification
from gestures_hub.predict import DEMO_MODEL_DIR, predict_video, summary_line, video_pipeline
from gestures_hub.presets import get_config
from gestures_hub.sample_videos import write_test_video


def test_probabilities_are_the_softmax_of_raw_logits_over_t_after_save_and_load(tmp_path):
    torch.manual_seed(0)
    raw = GesturesForVideoClassification(get_config("tiny-features")).eval()
    raw.save_pretrained(tmp_path / "raw")
    raw.config.temperature = 2.5
    raw.save_pretrained(tmp_path / "calibrated")
    assert json.loads((tmp_path / "calibrated" / "config.json").read_text())["temperature"] == 2.5
    calibrated = GesturesForVideoClassification.from_pretrained(tmp_path / "calibrated").eval()
    uncalibrated = GesturesForVideoClassification.from_pretrained(tmp_path / "raw").eval()
    assert calibrated.config.temperature == 2.5 and calibrated.config.calibrated
    assert uncalibrated.config.temperature == 1.0 and not uncalibrated.config.calibrated
    inputs = {"snippet_features": torch.randn(3, 6, 16), "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2,
                                                                                         [1] * 6])}
    with torch.no_grad():
        scaled, plain = calibrated(**inputs), uncalibrated(**inputs)
    torch.testing.assert_close(scaled.logits.softmax(-1), (plain.logits / 2.5).softmax(-1), rtol=0, atol=1e-6)
    torch.testing.assert_close(scaled.snippet_logits, plain.snippet_logits / 2.5, rtol=0, atol=1e-6)
    assert torch.equal(scaled.logits.argmax(-1), plain.logits.argmax(-1))


@pytest.mark.parametrize("value", [0, -1.0, "2", True, float("nan")])
def test_temperature_must_be_positive(value):
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        GesturesConfig(temperature=value)


def test_pipeline_and_predict_report_calibrated_probabilities(tmp_path):
    video = write_test_video(tmp_path / "bar.mp4", duration=4.0, fps=15, size=(96, 72), pattern="bar")
    model = GesturesForVideoClassification.from_pretrained(DEMO_MODEL_DIR).eval()
    plain = predict_video(model, video)
    assert not plain.calibrated and plain.to_dict()["calibrated"] is False and "calibrated" not in summary_line(plain)
    model.config.temperature = 3.0
    timeline = video_pipeline(model)(str(video), return_timeline=True)
    assert timeline["calibrated"] is True and timeline["temperature"] == 3.0
    prediction = predict_video(model, video)
    expected = torch.tensor([np.log(plain.probabilities[name]) for name in ("FOS", "TCS")]).div(3.0).softmax(-1)
    np.testing.assert_allclose(list(prediction.probabilities.values()), expected.numpy(), atol=1e-5)
    data = prediction.to_dict()
    assert data["calibrated"] is True and data["temperature"] == 3.0
    assert "calibrated, temperature 3" in summary_line(prediction)
