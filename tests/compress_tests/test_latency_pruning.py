"""Latency-aware pruning: cuts chosen by measured cost on the profile, the layer table, and
how it compares with pruning to a MACs target."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Sequence

import pytest
import torch
from torch import nn

from compress import LatencyTarget, LayerLatencyTable, LayerSpec, MacsTarget, prune
from evaluators.latency import Latency, LatencyCache, LatencyMeter, part_protocol
from hwprofiles import HardwareProfile, load_profile

SHAPE = (1, 3, 64, 64)

pytestmark = pytest.mark.usefixtures("one_thread")


class DepthwiseThenDense(nn.Module):
    """Where MACs and latency disagree: the stem and a depthwise 3x3 at 64x64 are bound by
    memory traffic, so they cost about half the time for a quarter of the MACs (measured on
    onnxruntime, one thread: about 0.1 ns per MAC); the late dense 1x1 stage at 8x8 holds
    most MACs, which a CPU's GEMM kernels compute four times as fast per MAC."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 1), nn.BatchNorm2d(64), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.BatchNorm2d(64),
                                nn.ReLU())
        self.down = nn.Sequential(nn.AvgPool2d(8), nn.Conv2d(64, 32, 1), nn.BatchNorm2d(32),
                                  nn.ReLU())
        self.dense = nn.Sequential(
            nn.Conv2d(32, 256, 1), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, 256, 1), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, 256, 1), nn.BatchNorm2d(256), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense(self.down(self.dw(self.stem(x))))  # (B, 256, 8, 8)
        return self.classifier(self.pool(x).flatten(1))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return DepthwiseThenDense().eval()


@pytest.fixture(scope="module")
def meter() -> LatencyMeter:
    # the profile's full protocol: with fewer samples a window's median varies by 10-20%
    # between measurements of one model on a shared VM, which steers the cuts
    return LatencyMeter(load_profile("cpu"))


@pytest.fixture(scope="module")
def table(meter: LatencyMeter) -> LayerLatencyTable:
    return LayerLatencyTable(meter.profile, cache=meter.cache, lock=meter.lock)


@pytest.fixture(scope="module")
def latency_aware(model, meter, table):
    target = LatencyTarget(meter=meter, input_shape=SHAPE, speedup=1.3, table=table)
    return prune(model, torch.zeros(SHAPE), target=target, iterations=1)


def test_latency_target_is_reached_by_measurement(model, meter, latency_aware) -> None:
    result = latency_aware
    # a cut was kept, so the speed-up was measured beside the unpruned model, which decides
    assert result.history and result.side_by_side_checks
    if result.side_by_side_checks[-1].unreliable_reason:  # the machine was too busy to tell
        assert not result.target_met and "not reliably" in result.note
        pytest.skip(f"the device could not confirm the speed-up: {result.note}")
    assert result.target_met and result.speedup_side_by_side >= 1.3
    assert result.latency_after_ms < result.latency_before_ms
    if result.latency_after_ms > result.latency_before_ms / 1.3:
        # measured alone (minutes after the unpruned model) it looked short: the note says so
        assert "measured alone after the last step" in result.note
    assert result.plan["speedup_side_by_side"] == result.speedup_side_by_side
    assert result.steps and result.steps[-1].latency_ms == result.latency_after_ms
    assert all(m.out_channels % 8 == 0 for m in result.model.modules()
               if isinstance(m, nn.Conv2d))
    # measured again side by side, the pruned model is the faster one
    before, after = meter.measure_side_by_side([model, result.model], SHAPE, rounds=3)
    assert after.median_ms < before.median_ms
    plan = json.loads(json.dumps(result.plan))
    assert plan["target"]["kind"] == "speedup" and plan["target"]["profile"] == "cpu"
    cuts = [c for step in plan["steps"] for c in step["cuts"]]
    assert cuts and all(c["saving_ms"] > 0 and c["channels"] % 8 == 0 for c in cuts)


def test_latency_aware_pruning_beats_macs_targeted_pruning_at_equal_macs(
    model, meter, latency_aware
) -> None:
    ratio = latency_aware.macs_before / latency_aware.macs_after
    by_macs = prune(model, torch.zeros(SHAPE), target=MacsTarget(ratio), iterations=1,
                    round_to=8)
    assert by_macs.macs_before / by_macs.macs_after >= ratio  # as few MACs or fewer
    _, aware, counted = meter.measure_side_by_side(
        [model, latency_aware.model, by_macs.model], SHAPE, rounds=3)
    assert aware.median_ms < counted.median_ms
    # it cut where the time is: the depthwise stage, which MACs barely count
    dw = latency_aware.model.dw[0]
    assert dw.out_channels < 64


def test_an_unreachable_speedup_stops_short_and_says_what_was_reached(model, meter, table) -> None:
    target = LatencyTarget(meter=meter, input_shape=SHAPE, speedup=50.0, table=table)
    result = prune(model, torch.zeros(SHAPE), target=target, iterations=2)
    assert not result.target_met
    assert result.latency_after_ms is not None and result.latency_after_ms < result.latency_before_ms
    assert "reached" in result.note or "saves time" in result.note
    # every group keeps at least a quarter of its channels
    assert min(m.out_channels for m in result.model.modules() if isinstance(m, nn.Conv2d)) >= 8


def test_a_step_over_the_accuracy_budget_is_undone(model, meter, table) -> None:
    target = LatencyTarget(meter=meter, input_shape=SHAPE, speedup=1.3, table=table,
                           confirmations=0)  # the steps counted are the loop's
    scores = iter([0.9] + [0.5] * 3)  # the unpruned model, then every cut tried
    result = prune(model, torch.zeros(SHAPE), target=target, iterations=1,
                   validate=lambda m: next(scores), max_accuracy_drop=1.0)
    assert "undone" in result.note and "each smaller cut tried" in result.note
    # a retry that finds no smaller cut saving time ends the step's tries early
    assert not result.target_met and 2 <= len(result.steps) <= 3
    assert result.macs_after == result.macs_before and result.history == []
    # each retry asked for less than the one before, and planned a smaller cut
    aims = [s.goal_ms for s in result.steps]
    assert all(a < b for a, b in itertools.pairwise(aims)) and aims[-1] < result.latency_before_ms
    planned = [sum(c["saving_ms"] for c in s.cuts) for s in result.steps]
    assert all(a > b for a, b in itertools.pairwise(planned))


def test_a_step_over_the_budget_is_tried_again_with_a_smaller_cut(model, meter, table) -> None:
    target = LatencyTarget(meter=meter, input_shape=SHAPE, speedup=1.3, table=table,
                           confirmations=0)  # the steps counted are the loop's
    scores = iter([0.9, 0.5, 0.899])  # the first cut costs too much, the smaller one not
    result = prune(model, torch.zeros(SHAPE), target=target, iterations=1,
                   validate=lambda m: next(scores), max_accuracy_drop=1.0)
    assert len(result.steps) == 2 and result.steps[1].val_accuracy == 0.899
    assert result.macs_before > result.macs_after
    planned = [sum(c["saving_ms"] for c in s.cuts) for s in result.steps]
    assert planned[1] <= planned[0] / 2  # the retry cut at most half as much
    assert result.history  # the kept cut is replayable
    assert result.latency_after_ms == result.steps[1].latency_ms


class DriftingMeter(LatencyMeter):
    """A meter whose measurements of one model at a time drift (the machine's speed changed
    between them), while models measured side by side share the machine's state and compare
    fairly: the first reading is half the truth, the later ones 20% of it, so whatever the
    first round of cuts saves, measured alone it looks as if it reached the goal (a 2.5x
    illusion), and only the comparison side by side shows it short."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.alone = 0

    def measure(self, model, input_shape: Sequence[int], *, key: str | None = None) -> Latency:
        latency = super().measure(model, input_shape, key=key)
        self.alone += 1
        factor = 0.5 if self.alone == 1 else 0.2
        return dataclasses.replace(latency, median_ms=factor * latency.median_ms)


def test_a_speedup_short_beside_the_unpruned_model_prunes_on(model, meter, table) -> None:
    # The first round cuts one block of channels, the smallest that saves time whatever the
    # gap: measured side by side it made this model 1.15-1.63x faster. Asked is above that
    # and below the 2.5x illusion.
    asked = 2.0
    drifting = DriftingMeter(meter.profile, cache=meter.cache, lock=meter.lock)
    target = LatencyTarget(meter=drifting, input_shape=SHAPE, speedup=asked, table=table)
    result = prune(model, torch.zeros(SHAPE), target=target, iterations=1)
    checks = result.side_by_side_checks
    assert checks and result.speedup_side_by_side == checks[-1].speedup
    assert result.plan["side_by_side_checks"][-1]["speedup"] == checks[-1].speedup
    # what decides is the last comparison, and only when the device measured it reliably
    last = checks[-1]
    assert result.target_met == (last.speedup >= asked and not last.unreliable_reason)
    if last.unreliable_reason:
        assert "not reliably" in result.note and not result.target_met
    elif not result.target_met:
        assert "measured beside the unpruned model" in result.note
    # an unreliable comparison is taken again, up to twice, and a reliable one is not
    for earlier, later in itertools.pairwise(checks):
        assert (earlier.unreliable_reason or later.after_steps > earlier.after_steps
                or "no cut" in result.note)
    first = checks[0]
    if not first.unreliable_reason:
        # measured alone, the first step looked done at its goal; beside the unpruned model
        # it was short, so pruning went on, and the last comparison shows more speed
        assert first.speedup < asked and first.after_steps == 1
        assert any(s.step >= 1 for s in result.steps)
        if not last.unreliable_reason:
            assert last.speedup > first.speedup and last.after_steps > first.after_steps


class StalledMeter(LatencyMeter):
    """A machine so disturbed that every measurement of one model after the first (the
    unpruned one) is flagged and reads the unpruned model's latency, as if no cut saved
    anything; models measured side by side still compare fairly."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.first: Latency | None = None

    def measure(self, model, input_shape: Sequence[int], *, key: str | None = None) -> Latency:
        if self.first is None:
            self.first = super().measure(model, input_shape, key=key)
            return self.first
        return self.first.flagged("CV 0.102 above max_cv 0.1")


def test_step_measurements_that_read_short_do_not_stop_the_side_by_side_check(
    model, meter, table
) -> None:
    stalled = StalledMeter(meter.profile, cache=meter.cache, lock=meter.lock)
    target = LatencyTarget(meter=stalled, input_shape=SHAPE, speedup=1.3, table=table,
                           confirmations=1)
    result = prune(model, torch.zeros(SHAPE), target=target, iterations=1)
    # measured alone, the cuts saved nothing ...
    assert result.history and result.latency_after_ms == result.latency_before_ms
    # ... yet the comparison beside the unpruned model was taken, and it decides
    checks = result.side_by_side_checks
    assert checks and checks[0].after_steps == 1
    last = checks[-1]
    assert result.target_met == (last.speedup >= 1.3 and not last.unreliable_reason)
    if result.target_met:
        assert ("measured alone after the last step, 1.00x (not reliably: CV 0.102 above "
                "max_cv 0.1)") in result.note
    elif last.unreliable_reason:
        assert "not reliably" in result.note
    else:
        assert "measured beside the unpruned model" in result.note and "reached" in result.note
    before, after = meter.measure_side_by_side([model, result.model], SHAPE, rounds=3)
    assert after.median_ms < before.median_ms  # the cuts kept save time, truly


def test_a_stop_read_from_an_unreliable_measurement_says_so(model, meter, table) -> None:
    stalled = StalledMeter(meter.profile, cache=meter.cache, lock=meter.lock)
    target = LatencyTarget(meter=stalled, input_shape=SHAPE, latency_ms=0.001, table=table)
    result = prune(model, torch.zeros(SHAPE), target=target, iterations=1)
    # an absolute target has no comparison to take: the step measurements decide, and the
    # note says they were not made reliably
    assert not result.target_met and not result.side_by_side_checks
    assert "not made reliably (CV 0.102 above max_cv 0.1)" in result.note


class FlaggingMeter(LatencyMeter):
    """A meter on a machine too busy for any comparison in interleaved rounds to count."""

    def measure_side_by_side(self, models, input_shape, *, rounds: int = 3) -> list[Latency]:
        measured = super().measure_side_by_side(models, input_shape, rounds=rounds)
        return [m.flagged("CV 0.300 above max_cv 0.1") for m in measured]


def test_a_speedup_the_device_cannot_confirm_is_not_counted_as_reached(
    model, meter, table
) -> None:
    flagging = FlaggingMeter(meter.profile, cache=meter.cache, lock=meter.lock)
    target = LatencyTarget(meter=flagging, input_shape=SHAPE, speedup=1.3, table=table,
                           confirmations=0)
    result = prune(model, torch.zeros(SHAPE), target=target, iterations=1)
    # taken three times, and each time the device could not measure it reliably
    assert len(result.side_by_side_checks) == 3
    assert all(c.unreliable_reason for c in result.side_by_side_checks)
    assert not result.target_met
    assert "not reliably (CV 0.300 above max_cv 0.1)" in result.note
    assert result.latency_after_ms < result.latency_before_ms  # the cuts stay: they save time


def test_targets_validate_their_arguments(meter) -> None:
    with pytest.raises(ValueError, match="exactly one of speedup and latency_ms"):
        LatencyTarget(meter=meter, input_shape=SHAPE)
    with pytest.raises(ValueError, match="speedup: must be > 1"):
        LatencyTarget(meter=meter, input_shape=SHAPE, speedup=1.0)
    with pytest.raises(ValueError, match="latency_ms: must be > 0"):
        LatencyTarget(meter=meter, input_shape=SHAPE, latency_ms=0.0)
    with pytest.raises(ValueError, match="confirmations: must be >= 0"):
        LatencyTarget(meter=meter, input_shape=SHAPE, speedup=1.5, confirmations=-1)


def test_the_layer_table_measures_once_per_spec_and_persists(tmp_path) -> None:
    profile = HardwareProfile(**{**load_profile("cpu").model_dump(), "repeats": 10})
    spec = LayerSpec("conv", 16, 32, (3, 3), padding=(1, 1), in_hw=(16, 16))
    cache = LatencyCache(tmp_path / "cache.db")
    table = LayerLatencyTable(profile, cache=cache)
    assert table.meter.profile == part_protocol(profile, 25)  # short samples, as any part
    first = table.latency_ms(spec)
    assert table.latency_ms(spec) == first and table.measured == 1
    reopened = LayerLatencyTable(profile, cache=LatencyCache(tmp_path / "cache.db"))
    assert reopened.latency_ms(spec) == first and reopened.measured == 0
    assert spec.key() == "layer:conv:i16:o32:k3x3:s1x1:p1x1:d1x1:g1:b0:hw16x16"
    depthwise = LayerSpec("conv", 32, 32, (3, 3), groups=32, in_hw=(8, 8)).with_channels(24, 24)
    assert depthwise.groups == 24 and isinstance(depthwise.build(), nn.Conv2d)
