"""Aggregators: turn a (masked) sequence of snippet features into a seizure representation."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class MeanAggregator(nn.Module):
    """Average of the snippet features; the per-snippet states are the features themselves."""

    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.output_size = input_size
        self.step_size = input_size

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = mask.to(features.dtype).unsqueeze(-1)
        pooled = (features * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        return pooled, features * weights


class RecurrentAggregator(nn.Module):
    """LSTM or GRU over the snippets (batch first), as in the original ``RecurrentModel``.

    The seizure representation is the final hidden state of every layer and direction, concatenated
    (``num_layers * num_directions * hidden_size``). The per-snippet states are the last layer's outputs at each
    step (both directions concatenated); padded steps never reach the recurrence.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool) -> None:
        super().__init__()
        rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn_class(
            input_size, hidden_size, num_layers=num_layers, batch_first=True, bidirectional=bidirectional
        )
        directions = 2 if bidirectional else 1
        self.output_size = directions * num_layers * hidden_size
        self.step_size = directions * hidden_size

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = mask.sum(dim=1).long()
        if bool((lengths == 0).any()):
            raise ValueError("Every sequence needs at least one unmasked snippet.")
        packed = pack_padded_sequence(features, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, hidden = self.rnn(packed)
        if isinstance(hidden, tuple):  # LSTM: (h_n, c_n)
            hidden = hidden[0]
        steps, _ = pad_packed_sequence(outputs, batch_first=True, total_length=features.shape[1])
        pooled = hidden.permute(1, 0, 2).flatten(start_dim=1)
        return pooled, steps


def build_aggregator(aggregation: str, input_size: int, hidden_size: int, num_layers: int) -> nn.Module:
    """Build the aggregator named in a ``GesturesConfig``."""
    if aggregation == "mean":
        return MeanAggregator(input_size)
    cell = aggregation.removeprefix("b")
    return RecurrentAggregator(cell, input_size, hidden_size, num_layers, bidirectional=aggregation.startswith("b"))
