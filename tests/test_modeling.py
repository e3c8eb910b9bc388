"""The config, the model classes, padding invariance and the Auto-class integration."""

import json

import pytest
import torch

from gestures_hub import GesturesConfig, GesturesForVideoClassification, GesturesModel
from gestures_hub.presets import PRESETS, get_config

AGGREGATIONS = ["mean", "lstm", "blstm", "gru", "bgru"]


def features_model(aggregation: str, **overrides) -> GesturesForVideoClassification:
    torch.manual_seed(0)
    return GesturesForVideoClassification(get_config("tiny-features", aggregation=aggregation, **overrides)).eval()


def test_default_config_is_the_paper_blstm():
    config = GesturesConfig()
    assert config.to_diff_dict() == get_config("gestures-blstm").to_diff_dict()
    assert (config.encoder, config.aggregation, config.hidden_size, config.num_layers) == (
        "r2plus1d_34",
        "blstm",
        64,
        1,
    )
    assert (config.frames_per_snippet, config.fps, config.image_size, config.num_segments) == (8, 15.0, 112, 16)
    assert config.feature_dim == 512 and config.gamma == 4.0
    assert config.id2label == {0: "FOS", 1: "TCS"} and config.label2id == {"FOS": 0, "TCS": 1}
    assert config.snippet_duration == pytest.approx(8 / 15)


def test_config_round_trips_through_json(tmp_path):
    config = get_config("tiny-videomae", aggregation="bgru", gamma="middle")
    config.save_pretrained(tmp_path)
    loaded = GesturesConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "gestures"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"encoder": "resnet9000"}, "Unknown encoder 'resnet9000'"),
        ({"aggregation": "transformer"}, "Unknown aggregation 'transformer'"),
        ({"gamma": 0}, "gamma must be a positive number or 'middle'"),
        ({"gamma": "centre"}, "gamma must be a positive number or 'middle'"),
        ({"encoder": "videomae"}, "needs `encoder_config`"),
        ({"encoder": "auto", "encoder_config": {"hidden_size": 8}}, "encoder_config['model_type']"),
        ({"encoder": "r2plus1d_18", "feature_dim": 256}, "contradicts the 'r2plus1d_18' encoder"),
        ({"encoder": "r3d_18", "encoder_config": {"hidden_size": 8}}, "only used by the transformers encoders"),
        ({"num_segments": 0}, "num_segments must be a positive integer"),
        ({"dropout": 1.5}, "dropout must be in [0, 1)"),
    ],
)
def test_bad_configs_are_rejected_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        GesturesConfig(**kwargs)


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(KeyError, match="gestures-blstm"):
        get_config("gestures-transformer")


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_feature_model_shapes(aggregation):
    model = features_model(aggregation)
    out = model(snippet_features=torch.randn(3, 7, 16), labels=torch.tensor([0, 1, 1]))
    directions = 2 if aggregation.startswith("b") else 1
    representation = 16 if aggregation == "mean" else 8 * directions
    assert out.logits.shape == (3, 2)
    assert out.pooler_output.shape == (3, representation)
    assert out.last_hidden_state.shape == (3, 7, representation)
    assert out.snippet_logits.shape == (3, 7, 2)
    assert out.snippet_features.shape == (3, 7, 16)
    assert out.loss.ndim == 0 and out.loss > 0
    base = GesturesModel(model.config)
    base.load_state_dict(
        {k.removeprefix("gestures."): v for k, v in model.state_dict().items() if k.startswith("gestures.")}
    )
    assert torch.allclose(
        base.eval()(snippet_features=torch.ones(1, 4, 16)).pooler_output,
        model(snippet_features=torch.ones(1, 4, 16)).pooler_output,
    )


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_padding_changes_no_output(aggregation):
    model = features_model(aggregation)
    long, short = torch.randn(9, 16), torch.randn(4, 16)
    padded = torch.zeros(2, 9, 16)
    padded[0], padded[1, :4], padded[1, 4:] = long, short, 1e3  # garbage in the padding
    mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5])
    with torch.no_grad():
        batch = model(snippet_features=padded, attention_mask=mask)
        alone = [model(snippet_features=x[None]) for x in (long, short)]
    for row, single in enumerate(alone):
        length = int(mask[row].sum())
        torch.testing.assert_close(batch.logits[row], single.logits[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(batch.pooler_output[row], single.pooler_output[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(batch.snippet_logits[row, :length], single.snippet_logits[0], atol=1e-6, rtol=1e-5)
    assert torch.count_nonzero(batch.snippet_logits[1, 4:]) == 0
    assert torch.count_nonzero(batch.last_hidden_state[1, 4:]) == 0


def test_snippet_logits_agree_with_the_seizure_logits():
    mean = features_model("mean")
    x, mask = torch.randn(2, 6, 16), torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    with torch.no_grad():
        out = mean(snippet_features=x, attention_mask=mask)
    averaged = out.snippet_logits.sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(averaged, out.logits, atol=1e-6, rtol=1e-5)
    lstm = features_model("lstm")
    with torch.no_grad():
        out = lstm(snippet_features=x, attention_mask=mask)
    torch.testing.assert_close(out.snippet_logits[0, 5], out.logits[0])
    torch.testing.assert_close(out.snippet_logits[1, 2], out.logits[1])


def test_stacked_rnn_concatenates_every_layer_and_has_no_snippet_logits():
    model = features_model("blstm", num_layers=2)
    out = model(snippet_features=torch.randn(2, 5, 16))
    assert out.pooler_output.shape == (2, 2 * 2 * 8)
    assert out.snippet_logits is None


def test_video_model_encodes_only_real_snippets():
    torch.manual_seed(0)
    model = GesturesForVideoClassification(get_config("tiny-videomae")).eval()
    video = torch.randn(2, 3, 3, 4, 32, 32)
    video[1, 2] = float("nan")  # padding that would poison every output if it were encoded
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    with torch.no_grad():
        batch = model(pixel_values=video, attention_mask=mask)
        alone = model(pixel_values=video[1:, :2])
    assert batch.snippet_features.shape == (2, 3, 32)
    assert torch.isfinite(batch.logits).all()
    torch.testing.assert_close(batch.logits[1], alone.logits[0], atol=1e-5, rtol=1e-5)


def test_frozen_encoder_stays_in_eval_mode_and_gets_no_gradients():
    torch.manual_seed(0)
    model = GesturesForVideoClassification(get_config("r2plus1d_18", hidden_size=4, image_size=32)).train()
    assert not model.gestures.encoder.training and model.classifier.training
    out = model(pixel_values=torch.randn(1, 2, 3, 8, 32, 32), labels=torch.tensor([1]))
    out.loss.backward()
    assert all(p.grad is None for p in model.gestures.encoder.parameters())
    assert model.classifier.weight.grad is not None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m(), "exactly one of `pixel_values` or `snippet_features`"),
        (
            lambda m: m(snippet_features=torch.randn(1, 3, 15)),
            r"snippet_features must have shape \(batch, snippets, 16\)",
        ),
        (
            lambda m: m(snippet_features=torch.randn(1, 3, 16), attention_mask=torch.ones(1, 4)),
            "attention_mask has shape",
        ),
        (lambda m: m(pixel_values=torch.randn(1, 3, 8, 32, 32)), r"pixel_values must have shape \(batch, snippets, 3"),
        (lambda m: m(pixel_values=torch.randn(1, 2, 3, 8, 32, 32)), "no encoder"),
        (
            lambda m: m(snippet_features=torch.randn(1, 3, 16), attention_mask=torch.zeros(1, 3)),
            "at least one unmasked",
        ),
    ],
)
def test_bad_inputs_are_rejected_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call(features_model("blstm"))


def test_every_preset_builds_a_config():
    for name in PRESETS:
        assert isinstance(get_config(name), GesturesConfig)
