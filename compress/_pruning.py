"""Structured, dependency-aware channel pruning towards a MACs or a latency target.

Three concerns stay apart, as in Torch-Pruning (Fang et al., "DepGraph: Towards Any
Structural Pruning", CVPR 2023): its dependency graph finds which layers are coupled
(residual adds, depthwise convolutions, squeeze-excite gates), an importance criterion
from the registry below scores the channels of each coupled group, and its pruning
functions cut them. Pruning is iterative: shrink a little, fine-tune, repeat.

Example:
    >>> import torch
    >>> from search_spaces import get_search_space
    >>> space = get_search_space("mobilenet_elastic")
    >>> net = space.build_supernet(num_classes=10, in_channels=1).extract(space.max_arch())
    >>> result = prune(net, torch.zeros(1, 1, 16, 16), target=MacsTarget(2.0), iterations=1)
    >>> result.macs_before / result.macs_after >= 2.0
    True
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from evaluators import atomic_write_text, count_macs, count_params

if TYPE_CHECKING:
    from evaluators.latency import LatencyMeter

__all__ = [
    "ImportanceCriterion", "LatencyTarget", "MacsTarget", "PruneResult", "PruneStep",
    "get_importance", "list_importances", "prune", "register_importance",
]

logger = logging.getLogger(__name__)

# torch-pruning removes channels in small increments of the initial widths (local pruning:
# every layer loses the same fraction); the loop stops as soon as a MACs goal is met.
_MAX_CHANNEL_RATIO = 0.95
_PRUNER_STEPS = 60
Finetune = Callable[[nn.Module, int], None]
ImportanceFactory = Callable[[], tp.importance.Importance]


@dataclass(frozen=True)
class ImportanceCriterion:
    """A registered way of scoring channels.

    Attributes:
        name: The registry key.
        build: Returns a fresh torch-pruning ``Importance`` (``__call__(group) -> Tensor``).
        needs_gradients: Whether the criterion reads ``.grad`` (a backward pass on a
            calibration batch runs before each pruning step).
    """

    name: str
    build: ImportanceFactory
    needs_gradients: bool = False


_CRITERIA: dict[str, ImportanceCriterion] = {}


def register_importance(
    name: str, *, needs_gradients: bool = False
) -> Callable[[ImportanceFactory], ImportanceFactory]:
    """Registers a factory of a torch-pruning ``Importance`` under ``name``; warns on duplicates.

    Returns:
        A decorator that registers the factory and returns it unchanged.
    """

    def decorator(factory: ImportanceFactory) -> ImportanceFactory:
        if name in _CRITERIA:
            warnings.warn(f"importance criterion {name!r} registered again; replacing it",
                          stacklevel=2)
        _CRITERIA[name] = ImportanceCriterion(name, factory, needs_gradients)
        return factory

    return decorator


def list_importances() -> list[str]:
    """Returns the registered importance criteria, sorted."""
    return sorted(_CRITERIA)


def get_importance(name: str) -> ImportanceCriterion:
    """Returns the criterion registered as ``name``.

    Raises:
        ValueError: ``name`` is not registered; the message lists the registered names.
    """
    try:
        return _CRITERIA[name]
    except KeyError:
        raise ValueError(
            f"compress.importance: must be one of {list_importances()}, got {name!r}"
        ) from None


@register_importance("magnitude")
def _magnitude() -> tp.importance.Importance:
    """L2 norm of each channel's weights, averaged over the coupled layers of its group."""
    return tp.importance.GroupMagnitudeImportance(p=2)


@register_importance("taylor", needs_gradients=True)
def _taylor() -> tp.importance.Importance:
    """First-order Taylor estimate of the loss change (Molchanov et al., CVPR 2019)."""
    return tp.importance.GroupTaylorImportance()


@register_importance("random")
def _random() -> tp.importance.Importance:
    """Uniform random scores from torch's global generator: the baseline criterion."""
    return tp.importance.RandomImportance()


@dataclass(frozen=True)
class MacsTarget:
    """Keep at most ``base_macs / ratio`` multiply-accumulates (2.0: half the MACs)."""

    ratio: float

    def __post_init__(self) -> None:
        if not self.ratio > 1.0:
            raise ValueError(f"compress.target.ratio: must be > 1, got {self.ratio}")


@dataclass(frozen=True, kw_only=True)
class LatencyTarget:
    """Reach ``latency_ms`` (median) as measured by ``meter`` on its hardware profile.

    Each step shrinks the MACs by ``macs_step`` and measures again, ``max_steps`` at most.
    """

    latency_ms: float
    meter: LatencyMeter
    input_shape: tuple[int, ...]
    max_steps: int = 10
    macs_step: float = 0.8

    def __post_init__(self) -> None:
        if not self.latency_ms > 0:
            raise ValueError(f"compress.target.latency_ms: must be > 0, got {self.latency_ms}")
        if self.max_steps < 1:
            raise ValueError(f"compress.target.max_steps: must be >= 1, got {self.max_steps}")
        if not 0.0 < self.macs_step < 1.0:
            raise ValueError(f"compress.target.macs_step: must be in (0, 1), got {self.macs_step}")


@dataclass(frozen=True)
class PruneStep:
    """The model after one pruning step (recorded before that step's fine-tuning)."""

    step: int
    macs: int
    params: int
    macs_reduction: float  # base MACs / MACs
    channel_ratio: float  # fraction of every prunable layer's initial channels removed
    latency_ms: float | None


@dataclass(frozen=True, kw_only=True)
class PruneResult:
    """The pruned model, its cost before and after, and the replayable plan."""

    model: nn.Module
    importance: str
    target: dict[str, Any]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    latency_before_ms: float | None
    latency_after_ms: float | None
    steps: tuple[PruneStep, ...]
    # torch-pruning's edits, [module name, out channels?, indices], replayable on the
    # unpruned model with ``DependencyGraph.load_pruning_history``
    history: list[list[Any]]

    @property
    def plan(self) -> dict[str, Any]:
        """The JSON-ready plan: target, costs, steps and torch-pruning's history."""
        return {
            "importance": self.importance,
            "target": self.target,
            "before": {"macs": self.macs_before, "params": self.params_before,
                       "latency_ms": self.latency_before_ms},
            "after": {"macs": self.macs_after, "params": self.params_after,
                      "latency_ms": self.latency_after_ms},
            "steps": [asdict(s) for s in self.steps],
            "history": self.history,
        }

    def save_plan(self, path: Path) -> None:
        """Writes ``plan`` as JSON to ``path`` atomically."""
        atomic_write_text(path, json.dumps(self.plan, indent=2))


class _Shrinker:
    """Drives one torch-pruning pruner in small steps until a MACs goal is met."""

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor,
                 criterion: ImportanceCriterion, ignored: list[nn.Module],
                 round_to: int | None,
                 calibration: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        self.model = model
        self.example_inputs = example_inputs
        self.shape = tuple(example_inputs.shape)
        self.criterion = criterion
        self.calibration = calibration
        self.pruner = tp.pruner.BasePruner(
            model, example_inputs, importance=criterion.build(),
            pruning_ratio=_MAX_CHANNEL_RATIO, iterative_steps=_PRUNER_STEPS,
            ignored_layers=ignored, round_to=round_to,
        )
        self.macs = count_macs(model, self.shape)

    @property
    def channel_ratio(self) -> float:
        return float(self.pruner.per_step_pruning_ratio[self.pruner.current_step])

    def shrink_to(self, goal_macs: float) -> int:
        """Prunes until MACs <= ``goal_macs``; returns the MACs reached.

        Raises:
            ValueError: the pruner reached its largest ratio above the goal.
        """
        while self.macs > goal_macs:
            if self.pruner.current_step >= self.pruner.iterative_steps:
                raise ValueError(
                    f"cannot prune below {self.macs} MACs (goal {goal_macs:.0f}): every "
                    f"prunable layer already lost {_MAX_CHANNEL_RATIO:.0%} of its channels"
                )
            self.model.eval()
            if self.criterion.needs_gradients:
                self._backward()
            self.pruner.step()
            self.model.zero_grad(set_to_none=True)
            self.macs = count_macs(self.model, self.shape)
        return self.macs

    def _backward(self) -> None:
        """Fills ``.grad`` from a calibration batch (labels: the model's own predictions)."""
        self.model.zero_grad(set_to_none=True)
        if self.calibration is not None:
            x, y = self.calibration
            logits = self.model(x)
        else:
            logits = self.model(self.example_inputs)
            y = logits.detach().argmax(dim=1)
        F.cross_entropy(logits, y).backward()  # type: ignore[no-untyped-call]


def _default_ignored(model: nn.Module) -> list[nn.Module]:
    """The output layer: ``model.classifier`` if any, else the last Linear or conv."""
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Module):
        return [classifier]
    layers: list[nn.Module] = [
        m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
    ]
    return layers[-1:]


def _target_dict(target: MacsTarget | LatencyTarget) -> dict[str, Any]:
    if isinstance(target, MacsTarget):
        return {"kind": "macs", "ratio": target.ratio}
    return {"kind": "latency", "latency_ms": target.latency_ms,
            "profile": target.meter.profile.name, "input_shape": list(target.input_shape),
            "max_steps": target.max_steps, "macs_step": target.macs_step}


def prune(
    model: nn.Module,
    example_inputs: torch.Tensor,
    *,
    target: MacsTarget | LatencyTarget,
    importance: str = "magnitude",
    iterations: int = 3,
    finetune: Finetune | None = None,
    round_to: int | None = None,
    ignored_layers: Sequence[str] | None = None,
    calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> PruneResult:
    """Prunes channels of a copy of ``model`` until ``target`` is met.

    A ``MacsTarget`` is reached in ``iterations`` steps with geometrically spaced MACs
    goals. A ``LatencyTarget`` shrinks the MACs by ``target.macs_step`` per step and
    measures, until the latency is met (``iterations`` is then unused). After every step,
    ``finetune(model, step)`` may train the pruned copy, e.g. with ``evaluators.train``.

    Args:
        model: The model to prune; left untouched.
        example_inputs: An input batch for tracing the dependency graph and counting MACs.
        target: What to reach.
        importance: A registered criterion (see ``list_importances()``).
        iterations: Pruning steps towards a ``MacsTarget``.
        finetune: Called after each step with the pruned model and the step index.
        round_to: Keep channel counts multiples of this (8 suits most CPU kernels).
        ignored_layers: Names of modules whose output channels are kept; by default the
            classifier, so the output shape never changes.
        calibration: ``(x, y)`` for gradient-based criteria; by default ``example_inputs``
            labelled with the model's own predictions.

    Returns:
        The pruned copy (eval mode), its cost before and after and the per-step plan.

    Raises:
        ValueError: ``importance`` is unknown, ``iterations < 1``, or the target cannot be
            reached (the message says what was reached).
    """
    criterion = get_importance(importance)
    if iterations < 1:
        raise ValueError(f"compress.iterations: must be >= 1, got {iterations}")
    pruned = copy.deepcopy(model).eval()
    modules = dict(pruned.named_modules())
    if ignored_layers is None:
        ignored = _default_ignored(pruned)
    else:
        unknown = [n for n in ignored_layers if n not in modules]
        if unknown:
            raise ValueError(f"compress.ignored_layers: no modules named {unknown}")
        ignored = [modules[n] for n in ignored_layers]
    with torch.no_grad():
        out_shape = pruned(example_inputs).shape
    shrinker = _Shrinker(pruned, example_inputs, criterion, ignored, round_to, calibration)
    base_macs, base_params = shrinker.macs, count_params(pruned)
    steps: list[PruneStep] = []

    def shrink(step: int, goal_macs: float, measure: Callable[[], float] | None) -> float | None:
        """Prunes to ``goal_macs``, records the step, then fine-tunes; returns the latency."""
        try:
            shrinker.shrink_to(goal_macs)
        except ValueError as exc:
            raise ValueError(f"compress.target: {_target_dict(target)} is unreachable "
                             f"({exc})") from exc
        latency_ms = measure() if measure is not None else None
        steps.append(PruneStep(step, shrinker.macs, count_params(pruned),
                               base_macs / shrinker.macs, shrinker.channel_ratio, latency_ms))
        logger.info("prune step %d: %d MACs (%.2fx fewer), latency %s ms", step, shrinker.macs,
                    base_macs / shrinker.macs, latency_ms)
        if finetune is not None:
            finetune(pruned, step)
            pruned.eval()
        return latency_ms

    base_latency = latency = None
    if isinstance(target, MacsTarget):
        for i in range(iterations):  # geometric goals: the same MACs factor per step
            shrink(i, base_macs / target.ratio ** ((i + 1) / iterations), None)
            if base_macs / shrinker.macs >= target.ratio:
                break
    else:
        lat_target = target

        def measure() -> float:
            return lat_target.meter.measure(pruned, lat_target.input_shape).median_ms

        base_latency = latency = measure()
        for i in range(target.max_steps):
            if latency <= target.latency_ms:
                break
            latency = shrink(i, shrinker.macs * target.macs_step, measure)
            assert latency is not None
        if latency > target.latency_ms:
            raise ValueError(
                f"compress.target.latency_ms: {target.latency_ms:.4f} ms not reached in "
                f"{target.max_steps} steps; reached {latency:.4f} ms at {shrinker.macs} MACs "
                f"(base {base_latency:.4f} ms at {base_macs} MACs). Raise max_steps, or set "
                "round_to (e.g. 8): odd channel counts can make inference slower"
            )
    with torch.no_grad():
        new_shape = pruned(example_inputs).shape
    if new_shape != out_shape:
        raise RuntimeError(f"pruning changed the output shape from {tuple(out_shape)} to "
                           f"{tuple(new_shape)}; pass the output layer in ignored_layers")
    return PruneResult(
        model=pruned.eval(), importance=criterion.name, target=_target_dict(target),
        macs_before=base_macs, macs_after=shrinker.macs, params_before=base_params,
        params_after=count_params(pruned), latency_before_ms=base_latency,
        latency_after_ms=latency, steps=tuple(steps),
        history=json.loads(json.dumps(shrinker.pruner.pruning_history())),
    )
