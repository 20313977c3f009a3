"""The one model-agnostic training loop, reused by supernet training and fine-tuning."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

ComputeGuard = Callable[[], AbstractContextManager[object]]


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class TrainStep(Protocol):
    """Computes the loss of one batch and back-propagates it; returns the loss value.

    A step may run several forward/backward passes (the sandwich rule accumulates the
    gradients of several subnets); the loop zeroes gradients before and steps after.
    """

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, /) -> float: ...


class EpochCallback(Protocol):
    """Called after every epoch with its index (from 0) and mean loss."""

    def __call__(self, epoch: int, mean_loss: float, /) -> None: ...


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a cosine learning-rate schedule (per step) and gradient clipping."""

    lr: float = 3e-3
    weight_decay: float = 1e-4
    grad_clip: float | None = 5.0


def cross_entropy_step(label_smoothing: float = 0.0) -> TrainStep:
    """Returns a plain supervised step: cross-entropy of the model's logits."""
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        loss = loss_fn(model(x), y)
        loss.backward()
        return float(loss.detach())

    return step


def train(
    model: nn.Module,
    batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    step: TrainStep,
    *,
    epochs: int,
    steps_per_epoch: int,
    optim: OptimConfig,
    callbacks: Sequence[EpochCallback] = (),
    compute_guard: ComputeGuard | None = None,
) -> list[float]:
    """Trains ``model`` for ``epochs`` and returns the mean loss of each epoch.

    Args:
        model: the module to train; left in eval mode afterwards.
        batches: ``batches(epoch)`` yields the (x, y) batches of that epoch (seeded shuffling
            lives with the caller).
        step: computes and back-propagates the loss of one batch.
        epochs: number of passes.
        steps_per_epoch: batches per epoch, for the learning-rate schedule.
        optim: optimiser settings.
        callbacks: called after each epoch (progress bars, logging).
        compute_guard: context manager factory held during each epoch, so that latency
            measurements on the same device never overlap training.

    Raises:
        NonFiniteLossError: a step returned NaN or an infinite loss.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    total_steps = max(1, epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: 0.5 * (1.0 + math.cos(math.pi * min(i, total_steps) / total_steps))
    )
    guard = compute_guard or contextlib.nullcontext
    history: list[float] = []
    for epoch in range(epochs):
        model.train()
        losses: list[float] = []
        with guard():
            for x, y in batches(epoch):
                optimizer.zero_grad(set_to_none=True)
                loss = step(model, x, y)
                if not math.isfinite(loss):
                    raise NonFiniteLossError(
                        f"loss became {loss} at epoch {epoch + 1}; lower the learning rate"
                    )
                if optim.grad_clip is not None:
                    nn.utils.clip_grad_norm_(params, optim.grad_clip)
                optimizer.step()
                scheduler.step()
                losses.append(loss)
        mean_loss = sum(losses) / max(1, len(losses))
        history.append(mean_loss)
        for callback in callbacks:
            callback(epoch, mean_loss)
    model.eval()
    return history
