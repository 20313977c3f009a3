"""Supernet training: the sandwich rule with in-place distillation, or uniform single paths.

Each step trains the largest subnet on the labels, then the smallest and a few random
subnets on the largest one's soft predictions (or a mix of those and the labels),
accumulating the gradients of all of them before one optimiser step (Yu et al., "BigNAS",
ECCV 2020; Cai et al., "Once-for-All", ICLR 2020). With ``sampling="uniform"`` each step
trains only the random subnets, each on the labels, so that no subnet is trained more often
than another (Guo et al., "Single Path One-Shot", ECCV 2020).

With ``shrink_epochs``, the subnets trained beside the largest come at first from a part of
the space near it that grows, epoch by epoch, to the whole space (Once-for-All's progressive
shrinking; here every choice grows at once, since a space's choices say nothing of which are
kernels, depths or widths).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from evaluators._accuracy import accuracy, recalibrate_batchnorm
from evaluators._data import DataSplits
from evaluators._train import ComputeGuard, EpochCallback, OptimConfig, train
from search_spaces import Arch, ArchValue, SearchSpace, Supernet


@dataclass(frozen=True)
class SandwichConfig:
    """How many subnets each step trains and how the small ones learn from the largest."""

    random_subnets: int = 2
    temperature: float = 1.0
    label_smoothing: float = 0.1
    # share of a smaller subnet's loss that is distillation from the largest; the rest is
    # the labels' cross-entropy (1: in-place distillation alone, 0: labels alone)
    distill_weight: float = 1.0
    # progressive shrinking: over the first ``shrink_epochs`` epochs the smaller subnets are
    # drawn from a part of the space that grows from the largest subnet to all of it (0: off)
    shrink_epochs: int = 0
    # "sandwich": the largest, the smallest and ``random_subnets`` drawn subnets each step;
    # "uniform": the ``random_subnets`` drawn subnets alone, each on the labels
    sampling: Literal["sandwich", "uniform"] = "sandwich"

    def __post_init__(self) -> None:
        if self.sampling == "uniform" and self.random_subnets < 1:
            raise ValueError("uniform sampling trains only drawn subnets: random_subnets must be "
                             f"at least 1, not {self.random_subnets}")


def shrunk_choices(
    space: SearchSpace, epoch: int, shrink_epochs: int
) -> dict[str, tuple[ArchValue, ...]]:
    """Returns each choice's values the smaller subnets may take at ``epoch``: the
    ``ceil(f * n)`` most expensive of its ``n``, where ``f = (epoch + 1) / (shrink_epochs + 1)``
    grows to 1 (every value) at epoch ``shrink_epochs``."""
    choices = space.choices()
    if epoch >= shrink_epochs:
        return choices
    fraction = (epoch + 1) / (shrink_epochs + 1)
    return {name: values[len(values) - max(1, math.ceil(fraction * len(values))):]
            for name, values in choices.items()}


class SandwichStep:
    """A ``TrainStep`` for supernets: largest on labels, others distilled from it (or, with
    uniform sampling, drawn subnets alone on the labels)."""

    def __init__(self, space: SearchSpace, config: SandwichConfig, rng: random.Random) -> None:
        self.space = space
        self.config = config
        self.rng = rng
        self._max = space.max_arch()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch the next steps belong to: with progressive shrinking, the part of the
        space the smaller subnets come from; past it, the space's own smallest and samples."""
        self._choices: dict[str, tuple[ArchValue, ...]] | None = None
        self._min = self.space.min_arch()
        if epoch < self.config.shrink_epochs:
            self._choices = shrunk_choices(self.space, epoch, self.config.shrink_epochs)
            self._min = self.space.decode({name: v[0] for name, v in self._choices.items()})

    def _sample(self) -> Arch:
        if self._choices is None:
            return self.space.sample(self.rng)
        return self.space.decode({name: self.rng.choice(values)
                                  for name, values in self._choices.items()})

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """Back-propagates the sandwich losses of one batch; returns the largest's loss (with
        uniform sampling, the mean of the drawn subnets' losses)."""
        assert isinstance(model, Supernet)
        if self.config.sampling == "uniform":
            return self._uniform(model, x, y)
        t = self.config.temperature
        model.set_active(self._max)
        teacher_logits = model(x)
        loss = F.cross_entropy(teacher_logits, y, label_smoothing=self.config.label_smoothing)
        loss.backward()  # type: ignore[no-untyped-call]
        soft_targets = F.softmax(teacher_logits.detach() / t, dim=1)
        students = [self._min] + [self._sample() for _ in range(self.config.random_subnets)]
        w = self.config.distill_weight
        for arch in students:
            model.set_active(arch)
            logits = model(x)
            log_probs = F.log_softmax(logits / t, dim=1)
            student_loss = w * F.kl_div(log_probs, soft_targets, reduction="batchmean") * (t * t)
            if w < 1.0:
                student_loss = student_loss + (1.0 - w) * F.cross_entropy(
                    logits, y, label_smoothing=self.config.label_smoothing)
            student_loss.backward()  # type: ignore[no-untyped-call]
        model.set_active(self._max)
        return float(loss.detach())

    def _uniform(self, model: Supernet, x: torch.Tensor, y: torch.Tensor) -> float:
        losses = []
        for _ in range(self.config.random_subnets):
            model.set_active(self._sample())
            loss = F.cross_entropy(model(x), y, label_smoothing=self.config.label_smoothing)
            loss.backward()  # type: ignore[no-untyped-call]
            losses.append(float(loss.detach()))
        model.set_active(self._max)
        return sum(losses) / len(losses)


@dataclass(frozen=True)
class SupernetResult:
    """What supernet training leaves behind besides the weights."""

    losses: list[float]
    max_accuracy: float  # validation accuracy of the largest subnet after BN recalibration
    min_accuracy: float


def train_supernet(
    space: SearchSpace,
    data: DataSplits,
    *,
    epochs: int,
    batch_size: int,
    optim: OptimConfig,
    sandwich: SandwichConfig,
    seed: int,
    zero_init_residual: bool = False,
    callbacks: Sequence[EpochCallback] = (),
    compute_guard: ComputeGuard | None = None,
) -> tuple[Supernet, SupernetResult]:
    """Builds and trains a supernet of ``space`` on ``data``'s training split.

    With ``zero_init_residual`` the scale of the BatchNorm that ends each residual branch
    starts at zero (see ``Supernet.residual_branch_norms``).

    Returns:
        The trained supernet (eval mode) and a summary with the validation accuracy of its
        largest and smallest subnets.

    Raises:
        NonFiniteLossError: training diverged.
    """
    torch.manual_seed(seed)
    supernet = space.build_supernet(num_classes=data.num_classes, in_channels=data.input_shape[1])
    if zero_init_residual:
        for norm in supernet.residual_branch_norms():
            nn.init.zeros_(norm.weight)
    step = SandwichStep(space, sandwich, random.Random(seed))
    steps_per_epoch = -(-int(data.y_train.numel()) // batch_size)
    losses = train(
        supernet,
        lambda epoch: data.loader("train", batch_size, shuffle=True, seed=seed + epoch),
        step,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        optim=optim,
        callbacks=[lambda epoch, loss: step.set_epoch(epoch + 1), *callbacks],
        compute_guard=compute_guard,
    )
    scores = []
    for arch in (space.max_arch(), space.min_arch()):
        subnet = supernet.extract(arch)
        recalibrate_batchnorm(subnet, data.loader("train", batch_size, shuffle=True, seed=seed), 8)
        scores.append(accuracy(subnet, data.loader("val", 512)))
    return supernet, SupernetResult(losses=losses, max_accuracy=scores[0], min_accuracy=scores[1])
