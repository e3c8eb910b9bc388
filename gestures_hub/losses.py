"""The training loss of :mod:`gestures_hub.train`: per-video terms, normalised by the global batch.

Losses (``--loss``):

- ``weighted`` (default): cross-entropy with balanced class weights ``w_c = N / (2 N_c)`` of the training videos,
  i.e. proportional to one over each class's fraction (stored as ``config.class_weights``);
- ``original``: the paper code's loss, ``binary_cross_entropy_with_logits`` on the two-column one-hot target with
  the scalar ``pos_weight = N / N_TCS``. It multiplies the positive entry of both columns, so it weights FOS and TCS
  videos alike.

Timeline (``--timeline-weight``, default 0 as in the paper): a per-snippet cross-entropy on the ``snippet_logits`` of
the sampled snippets, whose target is TCS from a TCS video's ``onset_bilateral`` on and FOS before it and in FOS
videos; each video's mean term is weighted like its seizure loss (:func:`timeline_losses`). TCS videos without
``onset_bilateral`` are left out of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .arguments import LOSSES

if TYPE_CHECKING:
    from .train import Run


def loss_weights(labels: np.ndarray, loss: str) -> torch.Tensor:
    """Weights of ``loss`` for a training set: ``[N / N_TCS]`` (original) or ``[N / (2 N_FOS), N / (2 N_TCS)]``."""
    counts = np.bincount(labels, minlength=2)
    if (counts == 0).any():
        raise ValueError(f"The training videos need both classes, got {counts[0]} FOS and {counts[1]} TCS.")
    if loss == "original":
        return torch.tensor([len(labels) / counts[1]], dtype=torch.float32)
    if loss == "weighted":
        return torch.tensor(len(labels) / (2 * counts), dtype=torch.float32)
    raise ValueError(f"Unknown loss {loss!r}: choose one of {', '.join(LOSSES)}.")


def sample_losses(logits: torch.Tensor, labels: torch.Tensor, loss: str, weights: torch.Tensor) -> torch.Tensor:
    """Per-video loss terms, ``(..., batch)``; leading dimensions (if any) index models, as in ``weights``.

    The mean loss of a batch is ``sample_losses(...).sum(-1) / loss_norms(...).sum(-1)``.
    """
    if loss == "original":
        target = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        terms = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weights[..., None, :], reduction="none")
        return terms.sum(-1)
    terms = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="none").view(labels.shape)
    return loss_norms(labels, loss, weights) * terms


def loss_norms(labels: torch.Tensor, loss: str, weights: torch.Tensor) -> torch.Tensor:
    """What each video adds to the denominator of the mean: the paper's BCE averages over both columns of every
    video (2), the weighted cross-entropy over the class weights of the labels (PyTorch's ``weight=`` mean)."""
    if loss == "original":
        return torch.full(labels.shape, 2.0, device=labels.device)
    return torch.gather(weights, -1, labels)


def timeline_losses(snippet_logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor,
                    norms: torch.Tensor) -> torch.Tensor:
    """Per-video timeline terms: the mean cross-entropy of the sampled snippets' logits ``(batch, snippets, 2)``
    against their spread ``targets``, times each video's share ``norms`` of the seizure loss's mean (so both losses
    weigh videos alike); zero where the targets are not ``known``."""
    terms = F.cross_entropy(snippet_logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
    return torch.where(known, norms * terms.mean(-1), 0.0)


def loss_terms(run: Run, logits: torch.Tensor, snippet_logits: torch.Tensor | None, labels: torch.Tensor,
               weights: torch.Tensor, videos: np.ndarray, indices: np.ndarray) -> torch.Tensor:
    """Per-video terms of the training loss of ``videos`` from snippets ``indices``: the seizure loss, plus the
    timeline terms under ``--timeline-weight``. Their sum over ``loss_norms`` is the mean loss."""
    args = run.args
    terms = sample_losses(logits.float(), labels, args.loss, weights)
    if args.timeline_weight:
        targets, known = (torch.as_tensor(a, device=logits.device) for a in run.bank.spread_targets(videos, indices))
        terms = terms + args.timeline_weight * timeline_losses(snippet_logits.float(), targets, known,
                                                               loss_norms(labels, args.loss, weights))
    return terms

