"""Weight importers: original GESTURES aggregators, IG-65M R(2+1)D-34 and torchvision checkpoints."""

import os

import pytest
import torch
from torch import nn
from torchvision.models.video import resnet as tv

from gestures_hub import GesturesForVideoClassification
from gestures_hub.importers import CheckpointError, load_weights, read_state_dict
from gestures_hub.presets import get_config, load_model


class RecurrentModel(nn.Module):
    """The original GESTURES aggregator (models.py of the paper's code), written out independently."""

    def __init__(self, input_size=512, hidden_size=128, bidirectional=False):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=1, batch_first=True, bidirectional=bidirectional)
        self.dropout = nn.Dropout(0)
        self.fc = nn.Linear((2 if bidirectional else 1) * hidden_size, 2)

    def forward(self, x):
        _, (hidden, _) = self.lstm(x)
        return self.fc(self.dropout(hidden.permute(1, 0, 2).flatten(start_dim=1)))


class MeanModel(nn.Module):
    def __init__(self, input_size=512):
        super().__init__()
        self.fc = nn.Linear(input_size, 2)

    def forward(self, x):
        return self.fc(x.mean(dim=1))


def ig65m_r2plus1d_34(num_classes=400):
    """R(2+1)D-34 as ig65m-pytorch builds it for its IG-65M checkpoints."""
    model = tv.VideoResNet(tv.BasicBlock, [tv.Conv2Plus1D] * 4, [3, 4, 6, 3], tv.R2Plus1dStem)
    model.fc = nn.Linear(512, num_classes)
    model.layer2[0].conv2[0] = tv.Conv2Plus1D(128, 128, 288)
    model.layer3[0].conv2[0] = tv.Conv2Plus1D(256, 256, 576)
    model.layer4[0].conv2[0] = tv.Conv2Plus1D(512, 512, 1152)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.eps = 1e-3
    return model


def randomise_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize(
    ("preset", "bidirectional"), [("gestures-blstm-features", True), ("gestures-blstm-features", False)]
)
def test_original_recurrent_checkpoint_gives_identical_logits(preset, bidirectional, tmp_path):
    torch.manual_seed(0)
    original = RecurrentModel(hidden_size=64, bidirectional=bidirectional).eval()
    torch.save(original.state_dict(), tmp_path / "lstm.pth")
    aggregation = "blstm" if bidirectional else "lstm"
    model, pretrained = load_model(preset, weights=tmp_path / "lstm.pth", aggregation=aggregation)
    assert pretrained
    x = torch.randn(4, 16, 512)
    with torch.no_grad():
        torch.testing.assert_close(model(snippet_features=x).logits, original(x), atol=1e-6, rtol=0)


def test_original_mean_checkpoint_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    original = MeanModel().eval()
    torch.save({"state_dict": original.state_dict()}, tmp_path / "mean.pth")  # wrapped, as training scripts often do
    model, _ = load_model("gestures-blstm-features", weights=tmp_path / "mean.pth", aggregation="mean")
    x = torch.randn(3, 16, 512)
    with torch.no_grad():
        torch.testing.assert_close(model(snippet_features=x).logits, original(x), atol=1e-6, rtol=0)


def test_ig65m_r2plus1d_34_checkpoint_loads_without_missing_or_unexpected_keys(tmp_path):
    torch.manual_seed(0)
    reference = ig65m_r2plus1d_34()
    randomise_batchnorm(reference)
    torch.save(reference.state_dict(), tmp_path / "r2plus1d_34_clip8_ft_kinetics_from_ig65m.pth")
    model = GesturesForVideoClassification(get_config("gestures-blstm", image_size=32))
    encoder_keys = {k: v.shape for k, v in model.gestures.encoder.state_dict().items()}
    checkpoint_keys = {k: v.shape for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert encoder_keys == checkpoint_keys
    assert load_weights(model, tmp_path / "r2plus1d_34_clip8_ft_kinetics_from_ig65m.pth") == "video_resnet"
    reference.fc = nn.Identity()
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().gestures.encode_snippets(x), reference.eval()(x))


def test_torchvision_layout_r2plus1d_34_is_rejected_with_the_shape_difference(tmp_path):
    plain = tv.VideoResNet(tv.BasicBlock, [tv.Conv2Plus1D] * 4, [3, 4, 6, 3], tv.R2Plus1dStem)
    torch.save(plain.state_dict(), tmp_path / "plain.pth")
    model = GesturesForVideoClassification(get_config("gestures-blstm"))
    with pytest.raises(
        CheckpointError, match=r"plain.pth: .*wrong shapes .*layer2.0.conv2.0.0.weight: checkpoint \(230"
    ):
        load_weights(model, tmp_path / "plain.pth")


def test_torchvision_kinetics_checkpoint_with_dataparallel_prefix(tmp_path):
    torch.manual_seed(0)
    reference = tv.r3d_18(weights=None)
    randomise_batchnorm(reference)
    torch.save({f"module.{k}": v for k, v in reference.state_dict().items()}, tmp_path / "r3d_18.pth")
    model, _ = load_model("r3d_18", weights=tmp_path / "r3d_18.pth", image_size=32)
    reference.fc = nn.Identity()
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.gestures.encode_snippets(x), reference.eval()(x))


class Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


class SystemPayload:
    """torch 2.14 words this one "unsupported GLOBAL posix.system" under "Weights only load failed"."""

    def __reduce__(self):
        return (os.system, ("echo this would run on load",))


@pytest.mark.parametrize(
    ("make", "preset", "message"),
    [
        (lambda p: torch.save({"w": Payload()}, p), "gestures-blstm-features", "refused to load.*weights_only"),
        (lambda p: torch.save({"w": SystemPayload()}, p), "gestures-blstm-features", "refused to load.*weights_only"),
        (lambda p: p.write_bytes(b"not a checkpoint"), "gestures-blstm-features",
         r"not a readable PyTorch checkpoint \([^)]+\)"),  # torch's reason line, not its advice
        (lambda p: torch.save([1, 2, 3], p), "gestures-blstm-features", "expected a state dict"),
        (
            lambda p: torch.save({"encoder.weight": torch.ones(1)}, p),
            "gestures-blstm-features",
            "Unrecognised checkpoint",
        ),
        (
            lambda p: torch.save(RecurrentModel(hidden_size=32, bidirectional=True).state_dict(), p),
            "gestures-blstm-features",
            r"wrong shapes .*gestures.aggregator.rnn.weight_ih_l0: checkpoint \(128, 512\) vs "
            r"model \(256, 512\)",
        ),
        (
            lambda p: torch.save(RecurrentModel(hidden_size=64, bidirectional=False).state_dict(), p),
            "gestures-blstm-features",
            "bidirectionality does not match",
        ),
        (
            lambda p: torch.save(MeanModel().state_dict(), p),
            "gestures-blstm-features",
            "mean-pooling .*aggregation='blstm'",
        ),
        (
            lambda p: torch.save(tv.mc3_18(weights=None).state_dict(), p),
            "gestures-blstm-features",
            "needs a video ResNet encoder",
        ),
    ],
)
def test_bad_checkpoints_give_clear_errors(make, preset, message, tmp_path):
    path = tmp_path / "checkpoint.pth"
    make(path)
    with pytest.raises(CheckpointError, match=message) as caught:
        load_model(preset, weights=path)
    assert "will likely succeed" not in str(caught.value)  # never torch's advice to load with weights_only=False


def test_missing_file_and_safetensors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_state_dict(tmp_path / "absent.pth")
    from safetensors.torch import save_file

    original = RecurrentModel(hidden_size=64, bidirectional=True)
    save_file(original.state_dict(), tmp_path / "lstm.safetensors")
    model, _ = load_model("gestures-blstm-features", weights=tmp_path / "lstm.safetensors")
    torch.testing.assert_close(model.classifier.weight, original.fc.weight)


def test_unknown_model_spec_explains_what_it_accepts():
    with pytest.raises(OSError, match="neither a preset .*gestures-blstm.* nor a reachable hub repository"):
        load_model("no-such-org/no-such-model")
