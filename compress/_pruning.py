"""Structured, dependency-aware channel pruning towards a measured latency or a MACs target.

Three concerns stay apart, as in Torch-Pruning (Fang et al., "DepGraph: Towards Any
Structural Pruning", CVPR 2023): its dependency graph finds which layers are coupled
(residual adds, depthwise convolutions, squeeze-excite gates), an importance criterion
from the registry (:mod:`compress._importance`) scores the channels of each coupled group,
and its pruning functions cut them. Pruning is iterative: shrink a little, fine-tune, repeat.

*Where* to cut depends on the target. A :class:`LatencyTarget` (a measured speed-up or
latency on a hardware profile, the default) cuts the channels with the least importance
per millisecond saved on that device (:class:`LatencyAwarePruner`) and measures the whole
model after each cut. A :class:`MacsTarget` removes the same share of every layer's
channels until the MACs goal is met, which is what counting, not measuring, suggests.

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
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch_pruning as tp
from torch import nn

from compress._importance import ImportanceCriterion, fill_gradients, get_importance
from compress._latency_pruning import LatencyAwarePruner
from compress._latency_table import LayerLatencyTable
from evaluators import atomic_write_text, count_macs, count_params
from evaluators.latency import UNRELIABLE_RETAKES

if TYPE_CHECKING:
    from evaluators.latency import LatencyMeter

__all__ = ["LatencyTarget", "MacsTarget", "PruneResult", "PruneStep", "prune"]

logger = logging.getLogger(__name__)

# A latency step that costs more accuracy than allowed is tried again with a smaller cut
# (half the way), at most this many times, before pruning stops there.
STEP_RETRIES = 2
# A speed-up target counts when it holds measured beside the unpruned model, in this many
# interleaved rounds; short of it, pruning goes on by the gap at most this many more steps.
CONFIRM_ROUNDS = 3
CONFIRMATIONS = 2
# torch-pruning removes channels in small increments of the initial widths (local pruning:
# every layer loses the same fraction); the loop stops as soon as a MACs goal is met.
_MAX_CHANNEL_RATIO = 0.95
_PRUNER_STEPS = 60
Finetune = Callable[[nn.Module, int], None]
Validate = Callable[[nn.Module], float]


@dataclass(frozen=True)
class MacsTarget:
    """Keep at most ``base_macs / ratio`` multiply-accumulates (2.0: half the MACs)."""

    ratio: float

    def __post_init__(self) -> None:
        if not self.ratio > 1.0:
            raise ValueError(f"compress.prune.macs_ratio: must be > 1, got {self.ratio}")


@dataclass(frozen=True, kw_only=True)
class LatencyTarget:
    """Reach a latency measured by ``meter`` on its hardware profile: ``speedup`` times faster
    than the unpruned model (1.5: two thirds of its latency), or ``latency_ms`` (median).

    Attributes:
        meter: Measures the whole model after each cut.
        input_shape: The model's input shape (the batch is the profile's).
        speedup: The measured speed-up to reach; exclusive with ``latency_ms``.
        latency_ms: The absolute median latency to reach.
        table: The layer latency table; by default one on the meter's profile, cache and lock.
        confirmations: A speed-up counts once it holds measured beside the unpruned model;
            short of it, pruning goes on by the gap at most this many more steps.
    """

    meter: LatencyMeter
    input_shape: tuple[int, ...]
    speedup: float | None = None
    latency_ms: float | None = None
    table: LayerLatencyTable | None = None
    confirmations: int = CONFIRMATIONS

    def __post_init__(self) -> None:
        if (self.speedup is None) == (self.latency_ms is None):
            raise ValueError("compress.prune: give exactly one of speedup and latency_ms")
        if self.speedup is not None and not self.speedup > 1.0:
            raise ValueError(f"compress.prune.speedup: must be > 1, got {self.speedup}")
        if self.latency_ms is not None and not self.latency_ms > 0:
            raise ValueError(f"compress.prune.latency_ms: must be > 0, got {self.latency_ms}")
        if self.confirmations < 0:
            raise ValueError(f"confirmations: must be >= 0, got {self.confirmations}")

    def goal_ms(self, base_ms: float) -> float:
        """Returns the latency to reach from a measured ``base_ms``."""
        return base_ms / self.speedup if self.speedup is not None else float(self.latency_ms or 0)


@dataclass(frozen=True)
class PruneStep:
    """The model after one pruning step (recorded before that step's fine-tuning)."""

    step: int
    macs: int
    params: int
    macs_reduction: float  # base MACs / MACs
    channel_ratio: float  # MACs target: share of every layer's channels removed
    latency_ms: float | None  # measured after the step
    goal_ms: float | None = None
    cuts: tuple[dict[str, Any], ...] = ()  # latency target: channels removed per group
    val_accuracy: float | None = None  # after the step's fine-tuning


@dataclass(frozen=True)
class SideBySideCheck:
    """One comparison of the pruned model with the unpruned one in interleaved rounds."""

    after_steps: int  # how many of the result's steps were recorded before it
    speedup: float  # unpruned over pruned median latency
    unreliable_reason: str = ""  # why the device could not measure it reliably, if it could not


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
    target_met: bool = True
    note: str = ""  # why pruning stopped short of the target, when it did
    # a speed-up target: unpruned over pruned latency, measured in interleaved rounds (the
    # last of ``side_by_side_checks``, every comparison taken, unreliable ones included)
    speedup_side_by_side: float | None = None
    side_by_side_checks: tuple[SideBySideCheck, ...] = ()

    @property
    def plan(self) -> dict[str, Any]:
        """The JSON-ready plan: target, costs, steps and torch-pruning's history."""
        return {
            "importance": self.importance,
            "target": self.target,
            "target_met": self.target_met,
            "note": self.note,
            "speedup_side_by_side": self.speedup_side_by_side,
            "side_by_side_checks": [asdict(c) for c in self.side_by_side_checks],
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
    """Drives one torch-pruning pruner in small uniform steps until a MACs goal is met."""

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
                fill_gradients(self.model, self.example_inputs, self.calibration)
            self.pruner.step()
            self.model.zero_grad(set_to_none=True)
            self.macs = count_macs(self.model, self.shape)
        return self.macs


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
    return {"kind": "speedup" if target.speedup is not None else "latency",
            "speedup": target.speedup, "latency_ms": target.latency_ms,
            "profile": target.meter.profile.name, "input_shape": list(target.input_shape)}


@dataclass
class _Guard:
    """Undoes a step whose fine-tuned model loses more validation accuracy than allowed."""

    validate: Validate | None
    max_drop: float | None
    reference: float | None = None

    def start(self, model: nn.Module) -> None:
        if self.validate is not None:
            self.reference = self.validate(model)

    def check(self, model: nn.Module) -> tuple[float | None, str]:
        """Returns the validation accuracy and, when the step must be undone, why."""
        if self.validate is None or self.reference is None:
            return None, ""
        value = self.validate(model)
        drop = 100.0 * (self.reference - value)
        if self.max_drop is not None and drop > self.max_drop:
            return value, (f"the step cost {drop:.2f} points of validation accuracy (budget "
                           f"{self.max_drop:g}), so it was undone")
        return value, ""


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
    validate: Validate | None = None,
    max_accuracy_drop: float | None = None,
) -> PruneResult:
    """Prunes channels of a copy of ``model`` towards ``target`` in ``iterations`` steps.

    Each step has a geometrically spaced goal (the same MACs or latency factor per step).
    A ``LatencyTarget`` is pursued by measurement (see :class:`LatencyAwarePruner`); when
    no cut saves time any more, pruning stops short and the result says why. A speed-up
    reached counts once it holds measured beside ``model`` in interleaved rounds, and only
    when the device measured that comparison reliably (an unreliable one is taken again, up
    to ``UNRELIABLE_RETAKES`` times). That comparison is taken whenever a speed-up target
    kept a cut, whatever the step measurements said, and it decides; short of the target, up
    to ``target.confirmations`` more steps prune on by the gap, unless pruning had stopped
    for a reason of its own. A finding read from a step measurement the device could not
    make reliably says so in the note. After every step, ``finetune(model, step)`` may train the
    pruned copy; with ``validate`` (accuracy on held-out data) a step that loses more than
    ``max_accuracy_drop`` points against the unpruned model is undone; a latency step is
    then tried again with smaller cuts (``STEP_RETRIES``), a MACs step stops pruning there.

    Args:
        model: The model to prune; left untouched.
        example_inputs: An input batch for tracing the dependency graph and counting MACs.
        target: What to reach.
        importance: A registered criterion (see ``list_importances()``).
        iterations: Pruning steps.
        finetune: Called after each step with the pruned model and the step index.
        round_to: Keep channel counts multiples of this (the profile's
            ``channel_multiple`` by default for latency targets).
        ignored_layers: Names of modules whose output channels are kept; by default the
            classifier, so the output shape never changes.
        calibration: ``(x, y)`` for gradient-based criteria; by default ``example_inputs``
            labelled with the model's own predictions.
        validate: Returns a model's accuracy (a fraction) on held-out data.
        max_accuracy_drop: Points of ``validate`` accuracy a step may lose.

    Returns:
        The pruned copy (eval mode), its cost before and after and the per-step plan.

    Raises:
        ValueError: ``importance`` is unknown, ``iterations < 1``, or a MACs target cannot
            be reached (the message says what was reached).
    """
    criterion = get_importance(importance)
    if iterations < 1:
        raise ValueError(f"compress.prune.iterations: must be >= 1, got {iterations}")
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
    guard = _Guard(validate, max_accuracy_drop)
    guard.start(pruned)
    if isinstance(target, MacsTarget):
        result = _prune_macs(pruned, example_inputs, target, criterion, ignored, round_to,
                             calibration, iterations, finetune, guard)
    else:
        result = _prune_latency(model, pruned, example_inputs, target, criterion, ignored,
                                round_to, calibration, iterations, finetune, guard)
    with torch.no_grad():
        new_shape = result.model(example_inputs).shape
    if new_shape != out_shape:
        raise RuntimeError(f"pruning changed the output shape from {tuple(out_shape)} to "
                           f"{tuple(new_shape)}; pass the output layer in ignored_layers")
    return result


def _finish_step(
    model: nn.Module, step: int, finetune: Finetune | None, guard: _Guard
) -> tuple[float | None, str]:
    if finetune is not None:
        finetune(model, step)
        model.eval()
    return guard.check(model)


def _prune_macs(
    pruned: nn.Module, example_inputs: torch.Tensor, target: MacsTarget,
    criterion: ImportanceCriterion, ignored: list[nn.Module], round_to: int | None,
    calibration: tuple[torch.Tensor, torch.Tensor] | None, iterations: int,
    finetune: Finetune | None, guard: _Guard,
) -> PruneResult:
    shrinker = _Shrinker(pruned, example_inputs, criterion, ignored, round_to, calibration)
    base_macs, base_params = shrinker.macs, count_params(pruned)
    steps: list[PruneStep] = []
    note = ""
    history: list[list[Any]] = []
    for i in range(iterations):  # geometric goals: the same MACs factor per step
        snapshot = copy.deepcopy(pruned)
        try:
            shrinker.shrink_to(base_macs / target.ratio ** ((i + 1) / iterations))
        except ValueError as exc:
            raise ValueError(f"compress.prune: {_target_dict(target)} is unreachable "
                             f"({exc})") from exc
        macs, params = shrinker.macs, count_params(pruned)
        logger.info("prune step %d: %d MACs (%.2fx fewer)", i, macs, base_macs / macs)
        accuracy, undone = _finish_step(pruned, i, finetune, guard)
        steps.append(PruneStep(i, macs, params, base_macs / macs, shrinker.channel_ratio,
                               None, val_accuracy=accuracy))
        if undone:
            pruned, note = snapshot, f"step {i}: {undone}"
            break
        history = json.loads(json.dumps(shrinker.pruner.pruning_history()))
        if base_macs / macs >= target.ratio:
            break
    macs_after = count_macs(pruned, tuple(example_inputs.shape))
    return PruneResult(
        model=pruned.eval(), importance=criterion.name, target=_target_dict(target),
        macs_before=base_macs, macs_after=macs_after, params_before=base_params,
        params_after=count_params(pruned), latency_before_ms=None, latency_after_ms=None,
        steps=tuple(steps), target_met=base_macs / macs_after >= target.ratio, note=note,
        history=history,
    )


def _prune_latency(
    original: nn.Module, pruned: nn.Module, example_inputs: torch.Tensor, target: LatencyTarget,
    criterion: ImportanceCriterion, ignored: list[nn.Module], round_to: int | None,
    calibration: tuple[torch.Tensor, torch.Tensor] | None, iterations: int,
    finetune: Finetune | None, guard: _Guard,
) -> PruneResult:
    meter = target.meter
    profile = meter.profile
    table = target.table or LayerLatencyTable(profile, cache=meter.cache, lock=meter.lock)
    shape = tuple(example_inputs.shape)
    base_macs, base_params = count_macs(pruned, shape), count_params(pruned)

    unreliable = ""  # why the last whole-model measurement was not reliable, if it was not

    def measure() -> float:
        # a disturbed measurement can only be slower than the truth: when the meter could
        # not measure reliably, measure again and keep the fastest median
        nonlocal unreliable
        latency = meter.measure(pruned, target.input_shape)
        medians = [latency.median_ms]
        for _ in range(UNRELIABLE_RETAKES):
            if latency.reliable:
                break
            latency = meter.measure(pruned, target.input_shape)
            medians.append(latency.median_ms)
        unreliable = latency.unreliable_reason
        return min(medians)

    def doubted(finding: str) -> str:
        # a finding read from a measurement the device could not make reliably says so
        return f"{finding}, by a measurement not made reliably ({unreliable})" if unreliable \
            else finding

    ignored_names = [n for n, m in pruned.named_modules() if any(m is i for i in ignored)]

    def pruner_of(model: nn.Module, latency_ms: float | None = None,
                  initial: dict[str, int] | None = None) -> LatencyAwarePruner:
        modules = dict(model.named_modules())
        return LatencyAwarePruner(
            model, example_inputs, criterion=criterion, table=table, measure=measure,
            multiple=round_to or profile.channel_multiple,
            ignored=[modules[n] for n in ignored_names], calibration=calibration,
            latency_ms=latency_ms, initial_channels=initial,
        )

    pruner = pruner_of(pruned)
    base_ms = pruner.latency_ms
    final_ms = target.goal_ms(base_ms)
    steps: list[PruneStep] = []
    note = ""
    latency = base_ms

    def run_step(i: int, goal: float) -> bool:
        """Prunes towards ``goal`` ms, fine-tunes and checks accuracy; a step that costs too
        much is undone and tried again with smaller cuts. Returns whether pruning stops."""
        nonlocal pruned, pruner, latency, note
        aim, undone, most = goal, "", math.inf
        for _ in range(1 + STEP_RETRIES):
            snapshot, history_len, before = copy.deepcopy(pruned), len(pruner.history), latency
            cuts = pruner.step(aim, max_saving_ms=most)
            latency = pruner.latency_ms
            macs, params = count_macs(pruned, shape), count_params(pruned)
            logger.info("prune step %d: %.4f ms (goal %.4f ms, %.2fx faster), %d MACs", i,
                        latency, aim, base_ms / latency, macs)
            if not cuts and undone:
                break  # no cut smaller than the one undone saves time: the step stays undone
            if not cuts:
                note = doubted(f"step {i}: no cut of any group saves time on profile "
                               f"{profile.name!r} any more (reached {base_ms / latency:.2f}x "
                               f"of the {base_ms / final_ms:.2f}x asked)")
                return True
            accuracy, undone = _finish_step(pruned, i, finetune, guard)
            steps.append(PruneStep(i, macs, params, base_macs / macs, math.nan, latency, aim,
                                   tuple(asdict(c) for c in cuts), accuracy))
            if not undone:
                break
            # too much accuracy lost: back to before the step, and try a smaller cut (half
            # the way to what was asked, or to what was reached when that went past it)
            reached, kept = latency, pruner.history[:history_len]
            pruned, latency = snapshot, before
            pruner = pruner_of(pruned, before, pruner.initial_channels)
            pruner.history = kept
            aim = before - (before - max(aim, reached)) / 2
            most = sum(c.saving_ms for c in cuts) / 2  # and cut at most half as much
            logger.info("prune step %d: %s; trying a smaller cut, to %.4f ms", i, undone, aim)
        if undone:
            note = f"step {i}: {undone}, and so was each smaller cut tried"
            return True
        return bool(note)

    if base_ms <= final_ms:
        note = (f"the model already runs in {base_ms:.4f} ms on profile {profile.name!r}, "
                f"within the {final_ms:.4f} ms target")
        iterations = 0
    for i in range(iterations):
        goal = base_ms * (final_ms / base_ms) ** ((i + 1) / iterations)
        if latency <= goal:  # an earlier step's last cut went past this goal too
            continue
        if run_step(i, goal) or latency <= final_ms:
            break
    side_by_side: float | None = None
    doubt = ""
    checks: list[SideBySideCheck] = []

    def compare() -> tuple[float, str]:
        taken = _compare_side_by_side(meter, original, pruned, target.input_shape,
                                      after_steps=len(steps))
        checks.extend(taken)
        return taken[-1].speedup, taken[-1].unreliable_reason

    if target.speedup is not None and pruner.history:
        # The unpruned model was measured minutes before the pruned one, and a shared
        # machine's speed drifts by more than a few percent in that time, either way: what
        # decides a speed-up is the pruned model measured beside the unpruned one, whatever
        # the step measurements said. Short of it, prune on by the gap, unless pruning
        # stopped for a reason of its own (no cut saves time, or each cost too much).
        side_by_side, doubt = compare()
        for extra in range(0 if note else target.confirmations):
            if side_by_side >= target.speedup:
                break
            goal = latency * side_by_side / target.speedup
            logger.info("prune: measured beside the unpruned model the speed-up is %.2fx, "
                        "short of %.2fx; pruning on to %.4f ms", side_by_side, target.speedup,
                        goal)
            stop = run_step(iterations + extra, goal)
            side_by_side, doubt = compare()
            if stop:
                break
    if side_by_side is not None and target.speedup is not None:
        met = side_by_side >= target.speedup and not doubt
        beside = (f"{side_by_side:.2f}x of the {target.speedup:.2f}x asked, measured beside "
                  f"the unpruned model")
        if doubt:
            # a figure the device could not measure reliably confirms nothing
            note = (f"{beside}, but not reliably ({doubt}); not counted as reached"
                    + (f"; {note}" if note else ""))
        elif not met or latency > final_ms:
            # when met, the steps measured alone fell short of it: what counts is the
            # comparison beside the unpruned model
            alone = (f"; measured alone after the last step, {base_ms / latency:.2f}x"
                     + (f" (not reliably: {unreliable})" if unreliable else "") if met else "")
            note = f"reached {beside}{alone}" + (f"; {note}" if note else "")
    else:
        met = latency <= final_ms
        if not note and not met:
            note = doubted(f"reached {base_ms / latency:.2f}x of the "
                           f"{base_ms / final_ms:.2f}x asked: the remaining cuts save too "
                           f"little time on profile {profile.name!r}")
    return PruneResult(
        model=pruned.eval(), importance=criterion.name, target=_target_dict(target),
        macs_before=base_macs, macs_after=count_macs(pruned, shape), params_before=base_params,
        params_after=count_params(pruned), latency_before_ms=base_ms, latency_after_ms=latency,
        steps=tuple(steps), target_met=met, note=note, speedup_side_by_side=side_by_side,
        side_by_side_checks=tuple(checks),
        history=json.loads(json.dumps(pruner.history)),
    )


def _compare_side_by_side(meter: LatencyMeter, original: nn.Module, pruned: nn.Module,
                          input_shape: tuple[int, ...], *,
                          after_steps: int) -> list[SideBySideCheck]:
    """Returns the comparisons taken of the unpruned with the pruned model, measured in
    interleaved rounds (see :meth:`LatencyMeter.compare_side_by_side`): one, or, while the
    device could not measure them reliably, up to ``UNRELIABLE_RETAKES`` more. The last one
    decides."""
    taken = []
    for before, after in meter.compare_side_by_side([original, pruned], input_shape,
                                                    rounds=CONFIRM_ROUNDS):
        check = SideBySideCheck(after_steps, before.median_ms / after.median_ms,
                                before.unreliable_reason or after.unreliable_reason)
        taken.append(check)
        logger.info("prune: side by side, unpruned %.4f ms, pruned %.4f ms (%.2fx)%s",
                    before.median_ms, after.median_ms, check.speedup,
                    f"; unreliable: {check.unreliable_reason}" if check.unreliable_reason
                    else "")
    return taken
