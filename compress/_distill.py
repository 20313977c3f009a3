"""Knowledge distillation: a student learns the softened predictions of a teacher.

Hinton et al., 2015, "Distilling the Knowledge in a Neural Network": the student matches
the teacher's class probabilities at temperature ``T`` (the KL term is scaled by ``T**2``
so its gradients keep their size), mixed with the usual cross-entropy on the labels.
Optionally the student's feature map also regresses the teacher's through a learned 1x1
convolution (Romero et al., 2015, "FitNets"). Training runs through ``evaluators.train``.

Example:
    >>> import torch
    >>> float(kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=4.0))
    0.0
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evaluators import OptimConfig, train

if TYPE_CHECKING:
    from evaluators import DataSplits
    from evaluators._train import ComputeGuard, EpochCallback

__all__ = ["DistillConfig", "DistillResult", "DistillStep", "DistillStudent", "distill", "kd_loss"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    """How the student learns from the teacher.

    Attributes:
        temperature: Softens both distributions; higher shows more of the teacher's
            ranking of the wrong classes.
        alpha: Weight of the KD term; ``1 - alpha`` weighs cross-entropy on the labels.
        feature_weight: Weight of the feature-map MSE (0: logits only).
    """

    temperature: float = 4.0
    alpha: float = 0.7
    feature_weight: float = 0.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"distill.temperature: must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"distill.alpha: must be in [0, 1], got {self.alpha}")
        if not self.feature_weight >= 0:
            raise ValueError(f"distill.feature_weight: must be >= 0, got {self.feature_weight}")


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Returns ``KL(teacher || student)`` of the temperature-softened softmaxes times ``T**2``.

    Args:
        student_logits: (B, K) logits of the student.
        teacher_logits: (B, K) logits of the teacher.
        temperature: The softening temperature ``T``.

    Returns:
        A scalar, averaged over the batch; 0 when both distributions agree.
    """
    t = temperature
    log_student = F.log_softmax(student_logits / t, dim=1)
    log_teacher = F.log_softmax(teacher_logits / t, dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * (t * t)


def feature_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """Returns the MSE of two (B, C, H, W) maps, both average-pooled to the smaller size."""
    h = min(student_features.shape[-2], teacher_features.shape[-2])
    w = min(student_features.shape[-1], teacher_features.shape[-1])
    s = F.adaptive_avg_pool2d(student_features, (h, w))
    t = F.adaptive_avg_pool2d(teacher_features, (h, w))
    return F.mse_loss(s, t)


def _call(model: nn.Module, method: str, x: Tensor) -> Tensor:
    """Returns ``model.<method>(x)``, e.g. ``forward_features`` of the timm interface."""
    fn: Any = getattr(model, method)
    out: Tensor = fn(x)
    return out


class DistillStudent(nn.Module):
    """What the training loop trains: the student plus the adapter of its features.

    Args:
        student: The model being distilled; ``forward`` runs it.
        adapter: Maps the student's feature map to the teacher's channels (identity: None).
    """

    def __init__(self, student: nn.Module, adapter: nn.Module | None = None) -> None:
        super().__init__()
        self.student = student
        self.adapter = adapter if adapter is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)  # type: ignore[no-any-return]


def feature_adapter(
    student: nn.Module, teacher: nn.Module, input_shape: Sequence[int]
) -> nn.Module | None:
    """Returns a 1x1 conv from the student's feature channels to the teacher's.

    Args:
        student: Has ``forward_features`` returning (B, C_s, H, W).
        teacher: Has ``forward_features`` returning (B, C_t, H', W').
        input_shape: The model input shape, batch first.

    Returns:
        The adapter (on the student's device), or None when ``C_s == C_t``.
    """
    x = torch.zeros((2, *input_shape[1:]))
    channels = []
    for model in (student, teacher):
        param = next(model.parameters())
        flags = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                channels.append(int(_call(model, "forward_features", x.to(param)).shape[1]))
        finally:
            for m, flag in flags:
                m.training = flag
    if channels[0] == channels[1]:
        return None
    ref = next(student.parameters())
    return nn.Conv2d(channels[0], channels[1], 1, bias=False, device=ref.device, dtype=ref.dtype)


class DistillStep:
    """A ``TrainStep``: KD plus cross-entropy (plus feature MSE) against a frozen teacher.

    The loop may train the student itself, or a ``DistillStudent`` when features are
    distilled (so that the adapter is trained too). The teacher runs in eval mode under
    ``torch.no_grad``.

    Raises:
        ValueError: (when called) features are distilled, the channel counts differ and the
            model has no adapter.
    """

    def __init__(self, teacher: nn.Module, config: DistillConfig) -> None:
        self.teacher = teacher.eval()
        self.config = config

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> float:
        """Back-propagates the distillation loss of one batch and returns its value."""
        cfg = self.config
        student, adapter = model, None
        if isinstance(model, DistillStudent):
            student, adapter = model.student, model.adapter
        if self.teacher.training:
            self.teacher.eval()
        with torch.no_grad():
            if cfg.feature_weight > 0:
                t_features = _call(self.teacher, "forward_features", x)
                t_logits = _call(self.teacher, "forward_head", t_features)
            else:
                t_logits = self.teacher(x)
        if cfg.feature_weight > 0:
            s_features = _call(student, "forward_features", x)
            logits = _call(student, "forward_head", s_features)
            if adapter is not None:
                s_features = adapter(s_features)
            if s_features.shape[1] != t_features.shape[1]:
                raise ValueError(
                    f"distill.feature_weight: student features have {s_features.shape[1]} "
                    f"channels, the teacher's {t_features.shape[1]}; train a DistillStudent "
                    "with an adapter (see feature_adapter)"
                )
        else:
            logits = student(x)
        loss = cfg.alpha * kd_loss(logits, t_logits, cfg.temperature)
        loss = loss + (1.0 - cfg.alpha) * F.cross_entropy(logits, y)
        if cfg.feature_weight > 0:
            loss = loss + cfg.feature_weight * feature_loss(s_features, t_features)
        loss.backward()  # type: ignore[no-untyped-call]
        return float(loss.detach())


@dataclass(frozen=True)
class DistillResult:
    """The distilled student (eval mode), the mean loss per epoch, and the trained adapter."""

    model: nn.Module
    losses: tuple[float, ...]
    adapter: nn.Module | None = None


def distill(
    student: nn.Module,
    teacher: nn.Module,
    data: DataSplits,
    *,
    epochs: int,
    batch_size: int,
    config: DistillConfig | None = None,
    optim: OptimConfig | None = None,
    seed: int = 0,
    compute_guard: ComputeGuard | None = None,
    callbacks: Sequence[EpochCallback] = (),
    in_place: bool = False,
) -> DistillResult:
    """Distils ``teacher`` into a copy of ``student`` (or into ``student`` if ``in_place``).

    Args:
        student: The model to train, e.g. a pruned copy of the teacher.
        teacher: The frozen teacher; needs ``forward_features``/``forward_head`` when
            ``config.feature_weight > 0`` (as does the student).
        data: The splits; batches of the training split are shuffled with ``seed + epoch``.
        epochs: Passes over the training split.
        batch_size: Samples per step.
        config: The distillation settings; ``DistillConfig()`` by default.
        optim: The optimiser settings; ``OptimConfig()`` by default.
        seed: Seeds the shuffling and the adapter's initial weights.
        compute_guard: Held during each epoch, see ``evaluators.train``.
        callbacks: Called after each epoch with its index and mean loss.
        in_place: Train ``student`` itself (e.g. inside ``prune``'s ``finetune``, which
            must keep the same modules) instead of a copy.

    Returns:
        The trained student (a copy unless ``in_place``), the mean loss of each epoch and
        the trained adapter.

    Raises:
        ValueError: ``epochs`` or ``batch_size`` is not positive.
        NonFiniteLossError: The loss became NaN or infinite.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(
            f"distill: epochs and batch_size must be >= 1, got {epochs} and {batch_size}"
        )
    config = config if config is not None else DistillConfig()
    if not in_place:
        student = copy.deepcopy(student)
    adapter = None
    if config.feature_weight > 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            adapter = feature_adapter(student, teacher, data.input_shape)
    wrapper = DistillStudent(student, adapter)
    losses = train(
        wrapper,
        lambda epoch: data.loader("train", batch_size, shuffle=True, seed=seed + epoch),
        DistillStep(teacher, config),
        epochs=epochs,
        steps_per_epoch=-(-int(data.y_train.numel()) // batch_size),
        optim=optim if optim is not None else OptimConfig(),
        callbacks=callbacks,
        compute_guard=compute_guard,
    )
    logger.info("distill: loss %.4f -> %.4f over %d epochs", losses[0], losses[-1], epochs)
    return DistillResult(model=student.eval(), losses=tuple(losses), adapter=adapter)
