"""Latency-aware channel pruning: cut where the device saves the most time per importance lost.

Counting MACs says little about what a CPU runtime spends: pruning half the MACs of a small
MobileNet makes it barely faster, while a few layers hold most of the measured time. This
pruner chooses *where* to cut by measurement, in the way of NetAdapt (Yang et al., ECCV
2018) and HALP (Shen et al., NeurIPS 2022):

1. every coupled group of channels (torch-pruning's ``DependencyGraph``) is scored by a
   registered importance criterion;
2. a measured table of single layers (:class:`LayerLatencyTable`) says how many
   milliseconds removing the next ``multiple`` channels of a group would save, given the
   current widths of every layer that group passes through;
3. channels are removed greedily, least importance per millisecond saved first, until the
   predicted saving closes the gap to the step's goal;
4. the whole model is measured again; when it is still above the goal, the prediction is
   corrected by what was really saved and the next cut is planned.

Removing channels that save no time (or cost time: an odd width can be slower) is never
chosen, since its importance per millisecond is unbounded.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from compress._importance import ImportanceCriterion, fill_gradients
from compress._latency_table import LayerLatencyTable, LayerSpec

__all__ = ["LatencyAwarePruner", "PlannedCut"]

logger = logging.getLogger(__name__)

# A group keeps at least this share of the channels it started with (and one multiple):
# below it a layer collapses faster than fine-tuning can recover.
MIN_KEEP_RATIO = 0.25
# Re-plans per step after measuring: the table's sum misses fusion and overhead effects.
MAX_REPLANS = 5
# A cut considers up to this many multiples of channels at once (see ``_next_block``).
LOOKAHEAD = 4
# A measured saving below this share of the latency means pruning no longer pays here.
MIN_USEFUL_SAVING = 0.01
# Rounds in a row below that saving before a step stops (one may be a disturbed measurement).
USELESS_ROUNDS = 2
# Bounds of the measured-over-predicted saving that scales the next plan of a step.
MIN_EFFICIENCY, MAX_EFFICIENCY = 0.5, 2.0


@dataclass
class _Member:
    module: nn.Module
    side: str  # "out", "in" or "both" (depthwise)


@dataclass
class _Group:
    key: str  # root module name and side: stable across re-traced graphs
    root: nn.Module
    handler: Callable[..., Any]
    channels: int
    floor: int
    order: list[int]  # channel indices, least important first
    scores: list[float]  # importance of ``order``'s channels
    members: list[_Member]
    removed: int = 0
    saving_ms: float = 0.0  # the table's saving of the cuts planned so far


@dataclass(frozen=True)
class PlannedCut:
    """Channels one planning round removes from one group."""

    group: str
    channels: int  # removed
    remaining: int
    importance: float  # sum of the removed channels' scores
    saving_ms: float  # predicted by the layer table


@dataclass
class _State:
    """The widths (in, out) each layer would have after the cuts planned so far."""

    widths: dict[nn.Module, list[int]] = field(default_factory=dict)
    hw: dict[nn.Module, tuple[int, int]] = field(default_factory=dict)


class LatencyAwarePruner:
    """Prunes a model in place towards latency goals measured on a hardware profile.

    Args:
        model: The model to prune (modified in place; eval mode while scoring).
        example_inputs: An input batch for tracing the dependency graph.
        criterion: The importance criterion scoring the channels.
        table: The layer latency table of the profile.
        measure: Returns the whole model's measured median latency in milliseconds.
        multiple: Channel counts stay multiples of this (the profile's preferred width).
        ignored: Modules whose output channels are kept (the classifier).
        calibration: ``(x, y)`` for gradient-based criteria.
        latency_ms: The model's measured latency, when known (otherwise measured now).
        initial_channels: Group widths before pruning began, when this pruner continues an
            earlier one's work on a copy of its model.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: torch.Tensor,
        *,
        criterion: ImportanceCriterion,
        table: LayerLatencyTable,
        measure: Callable[[], float],
        multiple: int,
        ignored: list[nn.Module],
        calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
        latency_ms: float | None = None,
        initial_channels: dict[str, int] | None = None,
    ) -> None:
        self.model = model
        self.example_inputs = example_inputs
        self.criterion = criterion
        self.table = table
        self.measure = measure
        self.multiple = max(1, multiple)
        self.ignored = ignored
        self.calibration = calibration
        self.history: list[list[Any]] = []
        # each group's width before pruning began: its floor is a share of that
        self.initial_channels: dict[str, int] = dict(initial_channels or {})
        self._planned: list[_Group] = []
        self.graph: tp.DependencyGraph | None = None
        self.latency_ms = measure() if latency_ms is None else latency_ms

    def step(self, goal_ms: float, max_saving_ms: float = math.inf) -> list[PlannedCut]:
        """Prunes until the measured latency is at most ``goal_ms`` or nothing useful is left;
        the cuts' predicted savings sum to at most ``max_saving_ms`` (a retry's smaller cut).

        Returns:
            The cuts made, in order; ``self.latency_ms`` is the latency measured after them.
        """
        cuts: list[PlannedCut] = []
        efficiency = 1.0  # measured saving over predicted saving of the last round
        useless = 0  # rounds in a row whose measured saving was too small to count
        for _ in range(MAX_REPLANS):
            gap = self.latency_ms - goal_ms
            if gap <= 0:
                break
            budget = max_saving_ms - sum(c.saving_ms for c in cuts)
            if budget <= 0:
                break
            planned = self._plan(min(gap / efficiency, budget), limit_ms=budget)
            if not planned:
                logger.info("latency-aware pruning: no group can lose channels that save time")
                break
            before = self.latency_ms
            self._apply(planned)
            self.latency_ms = self.measure()
            cuts.extend(planned.values())
            predicted = sum(c.saving_ms for c in planned.values())
            saved = before - self.latency_ms
            logger.info("latency-aware pruning: %d groups cut, predicted %.4f ms, measured "
                        "%.4f -> %.4f ms", len(planned), predicted, before, self.latency_ms)
            if saved < MIN_USEFUL_SAVING * before:
                # one round that saves nothing may be a disturbed measurement; two in a row
                # say the cuts left save too little on this device
                useless += 1
                if useless >= USELESS_ROUNDS:
                    break
                efficiency = MIN_EFFICIENCY
                continue
            useless = 0
            # a noisy measurement must not make the next plan many times the gap
            efficiency = (min(MAX_EFFICIENCY, max(MIN_EFFICIENCY, saved / predicted))
                          if predicted > 0 else 1.0)
        return cuts

    # -- planning ---------------------------------------------------------------------------

    def _plan(self, saving_ms: float, limit_ms: float = math.inf) -> dict[str, PlannedCut]:
        """Returns, per group, the cut that greedily saves ``saving_ms`` at the least importance;
        no block is taken that would make the predicted saving exceed ``limit_ms``."""
        groups = self._groups()
        state = self._state()
        heap: list[tuple[float, int, str]] = []
        by_key = {g.key: g for g in groups}
        tick = 0
        for g in groups:
            entry = self._next_block(g, state, limit_ms)
            if entry is not None:
                heap.append((entry[0], tick, g.key))
                tick += 1
        heapq.heapify(heap)
        saved = 0.0
        while heap and saved < saving_ms:
            ratio, _, key = heapq.heappop(heap)
            g = by_key[key]
            entry = self._next_block(g, state, limit_ms - saved)
            if entry is None:
                continue
            if entry[0] > ratio + 1e-12:  # another cut changed this group's layers: re-queue
                heapq.heappush(heap, (entry[0], tick, key))
                tick += 1
                continue
            _, size, saving = entry
            self._cut(g, size, saving, state)
            saved += saving
            again = self._next_block(g, state, limit_ms - saved)
            if again is not None:
                heapq.heappush(heap, (again[0], tick, key))
                tick += 1
        self._planned = groups
        return {
            g.key: PlannedCut(g.key, g.removed, g.channels - g.removed,
                              float(sum(g.scores[: g.removed])), g.saving_ms)
            for g in groups if g.removed
        }

    def _next_block(self, g: _Group, state: _State,
                    limit_ms: float = math.inf) -> tuple[float, int, float] | None:
        """Returns (importance per ms, channels, ms saved) of ``g``'s best next cut saving at
        most ``limit_ms``, or None.

        The cut is one to ``LOOKAHEAD`` multiples of channels: a runtime's kernels often
        work in blocks wider than the profile's multiple, so one multiple alone may save
        nothing where two save much.
        """
        left = g.channels - g.removed
        first = left % self.multiple or self.multiple
        best: tuple[float, int, float] | None = None
        for k in range(LOOKAHEAD):
            size = first + k * self.multiple
            if left - size < g.floor:
                break
            saving = self._delta(g, size, state)
            if saving <= 0:
                continue  # removing these channels saves no time on this device
            if saving > limit_ms:
                continue  # a retry's smaller cut must stay smaller
            importance = max(float(sum(g.scores[g.removed : g.removed + size])), 0.0)
            ratio = importance / saving
            if best is None or ratio < best[0]:
                best = (ratio, size, saving)
        return best

    def _delta(self, g: _Group, size: int, state: _State) -> float:
        """Returns the ms the layer table says removing ``size`` more channels of ``g`` saves."""
        total = 0.0
        for m in g.members:
            cin, cout = state.widths[m.module]
            new_in = cin - size if m.side in ("in", "both") else cin
            new_out = cout - size if m.side in ("out", "both") else cout
            spec = LayerSpec.of(m.module, state.hw[m.module])
            total += (self.table.latency_ms(spec.with_channels(cin, cout))
                      - self.table.latency_ms(spec.with_channels(new_in, new_out)))
        return total

    @staticmethod
    def _cut(g: _Group, size: int, saving_ms: float, state: _State) -> None:
        for m in g.members:
            widths = state.widths[m.module]
            if m.side in ("in", "both"):
                widths[0] -= size
            if m.side in ("out", "both"):
                widths[1] -= size
        g.removed += size
        g.saving_ms += saving_ms

    def _state(self) -> _State:
        """Returns every conv and linear layer's current widths and input size."""
        state = _State()
        hooks = []

        def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            state.hw[module] = (int(x.shape[-2]), int(x.shape[-1])) if x.dim() == 4 else (1, 1)

        for module in self.model.modules():
            if isinstance(module, nn.Conv2d):
                state.widths[module] = [module.in_channels, module.out_channels]
                hooks.append(module.register_forward_pre_hook(record))
            elif isinstance(module, nn.Linear):
                state.widths[module] = [module.in_features, module.out_features]
                hooks.append(module.register_forward_pre_hook(record))
        try:
            with torch.no_grad():
                self.model(self.example_inputs)
        finally:
            for hook in hooks:
                hook.remove()
        return state

    def _groups(self) -> list[_Group]:
        """Returns the prunable groups of the current model, each scored and ordered."""
        self.model.eval()
        graph = tp.DependencyGraph().build_dependency(self.model, self.example_inputs,
                                                      verbose=False)
        self.graph = graph
        importance = self.criterion.build()
        if self.criterion.needs_gradients:
            fill_gradients(self.model, self.example_inputs, self.calibration)
        names = {m: n for n, m in self.model.named_modules()}
        groups = []
        for group in graph.get_all_groups(ignored_layers=self.ignored,
                                               root_module_types=(nn.Conv2d, nn.Linear)):
            root = group[0].dep.target.module
            handler = group[0].dep.handler
            members = self._members(group)
            if members is None:
                continue
            with torch.no_grad():
                scores = importance(group)
            if scores is None:
                continue
            channels = len(group[0].idxs)
            key = f"{names.get(root, '?')}:{getattr(handler, '__name__', 'prune')}"
            initial = self.initial_channels.setdefault(key, channels)
            floor = max(self.multiple, math.ceil(initial * MIN_KEEP_RATIO))
            order = torch.argsort(scores.detach().float().cpu(), stable=True)
            sorted_scores = scores.detach().float().cpu()[order]
            groups.append(_Group(key, root, handler, channels, floor,
                                 [int(i) for i in order], [float(s) for s in sorted_scores],
                                 members))
        self.model.zero_grad(set_to_none=True)
        return groups

    @staticmethod
    def _members(group: Any) -> list[_Member] | None:
        """Returns the conv and linear layers a group's channels pass through, or None when
        the group holds a layer the table cannot price (a grouped, non-depthwise conv)."""
        members: dict[nn.Module, _Member] = {}
        for item in group:
            module = item.dep.target.module
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            name = getattr(item.dep.handler, "__name__", "")
            side = "out" if "out" in name else "in"
            if isinstance(module, nn.Conv2d) and module.groups > 1:
                if module.groups != module.in_channels or module.in_channels != module.out_channels:
                    return None
                side = "both"
            if module not in members:
                members[module] = _Member(module, side)
        return list(members.values()) or None

    def _apply(self, planned: dict[str, PlannedCut]) -> None:
        """Removes each planned cut's least important channels from the model (with the graph
        and the scores the plan was made with)."""
        groups = {g.key: g for g in self._planned}
        for key, cut in planned.items():
            g = groups[key]
            idxs = sorted(g.order[: cut.channels])
            assert self.graph is not None
            pruning_group = self.graph.get_pruning_group(g.root, g.handler, idxs)
            if not self.graph.check_pruning_group(pruning_group):
                logger.debug("latency-aware pruning: torch-pruning refused the cut of %s", key)
                continue
            pruning_group.prune()
        if self.graph is not None:
            self.history.extend(list(h) for h in self.graph.pruning_history())
