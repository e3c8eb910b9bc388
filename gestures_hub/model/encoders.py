"""Snippet encoders: spatiotemporal CNNs and transformers video backbones, one vector per snippet.

Every encoder takes ``(N, 3, T, H, W)`` normalised snippets and returns ``(N, feature_dim)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models.video import resnet as tv_resnet


def r2plus1d_midplanes(in_planes: int, out_planes: int) -> int:
    """Middle channels of a (2+1)D convolution with as many parameters as the full 3D one (Tran et al. 2018)."""
    return (in_planes * out_planes * 3 * 3 * 3) // (in_planes * 3 * 3 + 3 * out_planes)


def _drop_classifier(model: tv_resnet.VideoResNet) -> tv_resnet.VideoResNet:
    model.fc = nn.Identity()
    return model


def r2plus1d_34() -> tv_resnet.VideoResNet:
    """R(2+1)D-34 laid out exactly like the IG-65M checkpoints (ig65m-pytorch / VMZ).

    Caffe2 computes the middle channels of every (2+1)D convolution from its own input and output channels;
    torchvision reuses the block's first value for the second convolution, which differs in the first block of
    layers 2-4 (288, 576 and 1152 instead of 230, 460 and 921). BatchNorm uses Caffe2's eps of 1e-3.
    """
    model = tv_resnet.VideoResNet(
        block=tv_resnet.BasicBlock,
        conv_makers=[tv_resnet.Conv2Plus1D] * 4,
        layers=[3, 4, 6, 3],
        stem=tv_resnet.R2Plus1dStem,
    )
    for layer, planes in ((model.layer2, 128), (model.layer3, 256), (model.layer4, 512)):
        layer[0].conv2[0] = tv_resnet.Conv2Plus1D(planes, planes, r2plus1d_midplanes(planes, planes))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.eps = 1e-3
    return _drop_classifier(model)


class FrameDifferences(nn.Module):
    """Append each frame's difference from the previous one (zero for the first) to the channels: 3 -> 6."""

    def forward(self, snippets: torch.Tensor) -> torch.Tensor:
        return torch.cat([snippets, snippets.diff(dim=2, prepend=snippets[:, :, :1])], dim=1)


def r2plus1d_tiny(widths: tuple[int, ...] = (16, 32, 64, 128)) -> nn.Sequential:
    """A compact R(2+1)D learnable on a CPU (the demo model): frames and frame differences (a motion prior), an
    R(2+1)D stem and one torchvision basic block of stride 2 per width; returns ``widths[-1]`` (128) features."""
    stem = nn.Sequential(
        FrameDifferences(),
        nn.Conv3d(6, widths[0], kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 2, 2), bias=False),
        nn.BatchNorm3d(widths[0]),
        nn.ReLU(inplace=True),
        nn.Conv3d(widths[0], widths[0], kernel_size=(3, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(widths[0]),
        nn.ReLU(inplace=True),
    )
    blocks, inplanes = [], widths[0]
    for planes in widths:
        downsample = nn.Sequential(nn.Conv3d(inplanes, planes, kernel_size=1, stride=2, bias=False),
                                   nn.BatchNorm3d(planes))
        blocks.append(tv_resnet.BasicBlock(inplanes, planes, tv_resnet.Conv2Plus1D, 2, downsample))
        inplanes = planes
    return nn.Sequential(stem, *blocks, nn.AdaptiveAvgPool3d(1), nn.Flatten())


TORCHVISION_BUILDERS = {
    "r2plus1d_34": r2plus1d_34,
    "r2plus1d_tiny": r2plus1d_tiny,
    "r2plus1d_18": lambda: _drop_classifier(tv_resnet.r2plus1d_18(weights=None)),
    "r3d_18": lambda: _drop_classifier(tv_resnet.r3d_18(weights=None)),
    "mc3_18": lambda: _drop_classifier(tv_resnet.mc3_18(weights=None)),
}


class TransformersVideoEncoder(nn.Module):
    """A transformers video backbone (VideoMAE, TimeSformer, ViViT...) pooled to one vector per snippet.

    The backbone takes ``(N, T, 3, H, W)``; its ``pooler_output`` is used when it has one, otherwise the mean of
    its last hidden states.
    """

    def __init__(self, encoder_config: dict[str, Any]) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        options = dict(encoder_config)
        backbone_config = AutoConfig.for_model(options.pop("model_type"), **options)
        self.backbone = AutoModel.from_config(backbone_config)

    def forward(self, snippets: torch.Tensor) -> torch.Tensor:
        outputs = self.backbone(pixel_values=snippets.transpose(1, 2))
        pooled = getattr(outputs, "pooler_output", None)
        return pooled if pooled is not None else outputs.last_hidden_state.mean(dim=1)


def build_encoder(encoder: str, encoder_config: dict[str, Any] | None = None) -> nn.Module | None:
    """Build the encoder named in a ``GesturesConfig`` (randomly initialised; ``None`` for ``"none"``)."""
    if encoder == "none":
        return None
    if encoder in TORCHVISION_BUILDERS:
        return TORCHVISION_BUILDERS[encoder]()
    if encoder == "videomae":
        return TransformersVideoEncoder({"model_type": "videomae", **(encoder_config or {})})
    if encoder == "auto":
        return TransformersVideoEncoder(encoder_config or {})
    raise ValueError(f"Unknown encoder {encoder!r}.")
