"""Evaluation: top-1 accuracy and batch-norm recalibration of extracted subnets."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Returns the top-1 accuracy of ``model`` (eval mode) as a fraction in [0, 1].

    Raises:
        ValueError: ``batches`` is empty.
    """
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in batches:
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("accuracy: no samples to evaluate")
    return correct / total


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Returns the predicted class of every row of ``x`` (eval mode)."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], max_batches: int
) -> int:
    """Re-estimates every BatchNorm's running statistics from training batches.

    A subnet inherits running statistics accumulated over many different subnets; they do
    not describe its own activations. This resets them and averages (momentum None) over
    ``max_batches`` forward passes in train mode, as in Once-for-All (Cai et al., 2020).

    Returns:
        The number of batches used (0 when the model has no BatchNorm).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the recalibration batches
    was_training = model.training
    model.train()
    used = 0
    try:
        for x, _ in batches:
            if used >= max_batches:
                break
            model(x)
            used += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    model.eval()
    return used
