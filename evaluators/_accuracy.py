"""Evaluation: top-1 accuracy (of torch modules and ONNX graphs) and batch-norm recalibration
of extracted subnets."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
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


def onnx_accuracy(onnx: bytes, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """Returns the top-1 accuracy of an ONNX classifier run by onnxruntime on the CPU.

    A graph with a fixed batch (the exported batch-1 models) is fed one padded chunk of that
    size at a time; a dynamic batch takes ``batch`` rows at a time.

    Raises:
        ValueError: ``x`` is empty.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    fixed = session.get_inputs()[0].shape[0]
    size = fixed if isinstance(fixed, int) and fixed > 0 else batch
    correct = 0
    xs = x.numpy().astype(np.float32)
    if len(xs) == 0:
        raise ValueError("onnx_accuracy: no samples to evaluate")
    for i in range(0, len(xs), size):
        chunk = xs[i : i + size]
        if len(chunk) < size:  # a fixed batch: pad, then drop the padding's predictions
            chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.float32)])
        logits = session.run(None, {name: chunk})[0][: len(xs[i : i + size])]
        correct += int((logits.argmax(1) == y[i : i + size].numpy()).sum())
    return correct / len(xs)


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
