from __future__ import annotations

import io
import math
import pickle
import re
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from evaluators.latency import (
    BackendUnavailable,
    DeviceLock,
    Latency,
    LatencyBackend,
    LatencyCache,
    LatencyMeter,
    get_backend,
)
from hwprofiles import HardwareProfile, load_profile

CPU_PROFILES = ["cpu", "cpu-torch"]
SHAPE = (1, 3, 16, 16)


def _profile(name: str, **changes: Any) -> HardwareProfile:
    """A shipped profile with a shorter protocol (one window, one attempt: neither noise nor
    load asks for another), validated like a YAML file."""
    fields = {**load_profile(name).model_dump(), "warmup": 2, "repeats": 10, "max_cv": None,
              "max_load": None, "windows": 1, **changes}
    return HardwareProfile(**fields)


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )


class _Counting(LatencyBackend):
    """Delegates to a real backend and counts the calls."""

    def __init__(self, inner: LatencyBackend) -> None:
        super().__init__(inner.profile)
        self.inner, self.calls = inner, 0

    def session(self, model: Any, input_shape: tuple[int, ...]) -> Any:
        return self.inner.session(model, input_shape)

    def time(self, model: Any, input_shape: tuple[int, ...], *, warmup: int,
             repeats: int, min_sample_ms: float = 0.0, **windows: Any) -> list[float]:
        self.calls += 1
        return self.inner.time(model, input_shape, warmup=warmup, repeats=repeats,
                               min_sample_ms=min_sample_ms, **windows)


class _Probe(nn.Module):
    """Records the batch size, thread count and grad mode of every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.seen: list[tuple[int, int, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((x.shape[0], torch.get_num_threads(), torch.is_inference_mode_enabled()))
        return self.conv(x)


@pytest.fixture
def lock(tmp_path: Path) -> DeviceLock:
    return DeviceLock("cpu", lock_dir=tmp_path / "locks", timeout=60)


def test_latency_from_samples_hand_computed() -> None:
    lat = Latency.from_samples([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (lat.median_ms, lat.mean_ms, lat.n) == (3.0, 3.0, 5)
    assert lat.p90_ms == pytest.approx(4.6)  # 0.9 of the way from 1.0 to 5.0, interpolated
    assert lat.cv == pytest.approx(math.sqrt(2) / 3)
    assert lat.samples_ms == (5.0, 1.0, 4.0, 2.0, 3.0)
    assert Latency.from_dict(lat.to_dict()) == lat
    assert "samples_ms" not in lat.to_dict(samples=False)
    assert Latency.from_samples([2.0], keep_samples=False) == Latency(2.0, 2.0, 2.0, 0.0, 1)


@pytest.mark.parametrize("samples", [[], [1.0, -1.0], [1.0, float("nan")]])
def test_latency_rejects_bad_samples(samples: list[float]) -> None:
    with pytest.raises(ValueError, match="samples_ms"):
        Latency.from_samples(samples)


@pytest.mark.parametrize("name", CPU_PROFILES)
def test_meter_measures_on_each_cpu_backend(name: str, lock: DeviceLock) -> None:
    profile = _profile(name)
    model = _net().train()
    model[1].eval()  # mixed flags must come back exactly
    before = {k: v.clone() for k, v in model.state_dict().items()}

    lat = LatencyMeter(profile, lock=lock).measure(model, SHAPE)

    assert lat.median_ms > 0 and lat.p90_ms >= lat.median_ms
    assert math.isfinite(lat.cv) and lat.cv >= 0
    assert lat.n == profile.repeats == len(lat.samples_ms)
    assert model.training and model[0].training and not model[1].training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_onnxruntime_int8_times_a_quantised_graph(lock: DeviceLock) -> None:
    import onnx

    from evaluators.latency._onnx import to_onnx

    quantised = onnx.load_from_string(to_onnx(_net().eval(), SHAPE, int8=True))
    assert "QuantizeLinear" in {node.op_type for node in quantised.graph.node}
    lat = LatencyMeter(_profile("cpu", precision="int8"), lock=lock).measure(_net(), SHAPE)
    assert lat.median_ms > 0 and lat.n == 10


def test_onnxruntime_times_onnx_bytes_and_files(tmp_path: Path, lock: DeviceLock) -> None:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_net().eval(), (torch.randn(SHAPE),), buffer, dynamo=False,
                          opset_version=17)
    path = tmp_path / "net.onnx"
    path.write_bytes(buffer.getvalue())
    meter = LatencyMeter(_profile("cpu"), lock=lock)
    assert meter.measure(buffer.getvalue(), SHAPE).median_ms > 0
    assert meter.measure(path, SHAPE).median_ms > 0
    with pytest.raises(TypeError, match="torch backend times torch.nn.Module"):
        LatencyMeter(_profile("cpu-torch"), lock=lock).measure(path, SHAPE)


def test_torch_backend_uses_profile_batch_and_threads_then_restores(lock: DeviceLock) -> None:
    threads_before = torch.get_num_threads()
    probe = _Probe()
    meter = LatencyMeter(_profile("cpu-torch", batch_size=3, threads=1, min_sample_ms=0), lock=lock)
    meter.measure(probe, (64, 3, 8, 8))
    assert probe.seen and len(probe.seen) == 2 + 10  # warm-up + repeats
    assert set(probe.seen) == {(3, 1, True)}
    assert torch.get_num_threads() == threads_before
    assert meter.input_shape((64, 3, 8, 8)) == (3, 3, 8, 8)


@pytest.mark.parametrize("shape", [(), (1, 0, 8, 8), (1, 3, 8.0, 8)])
def test_meter_rejects_bad_shapes(shape: tuple[Any, ...], lock: DeviceLock) -> None:
    with pytest.raises(ValueError, match="input_shape"):
        LatencyMeter(_profile("cpu-torch"), lock=lock).measure(_net(), shape)


@pytest.mark.parametrize("name", CPU_PROFILES)
def test_second_measure_with_same_key_is_a_cache_hit(name: str, lock: DeviceLock) -> None:
    profile = _profile(name)
    backend = _Counting(get_backend(profile))
    meter = LatencyMeter(profile, lock=lock, backend=backend)
    first = meter.measure(_net(), SHAPE, key="arch-1")
    second = meter.measure(_net(), SHAPE, key="arch-1")
    assert second == first
    assert (meter.hits, meter.misses, backend.calls) == (1, 1, 1)
    meter.measure(_net(), (1, 3, 8, 8), key="arch-1")  # another shape is another entry
    meter.measure(_net(), SHAPE)  # no key: always timed, never stored
    assert (meter.hits, meter.misses, backend.calls) == (1, 2, 3)
    assert len(meter.cache) == 2


def test_cache_persists_across_instances_on_one_file(tmp_path: Path, lock: DeviceLock) -> None:
    path = tmp_path / "cache" / "latency.db"
    profile = _profile("cpu")
    with LatencyCache(path) as cache:
        first = LatencyMeter(profile, cache=cache, lock=lock).measure(_net(), SHAPE, key="a")

    reopened = LatencyCache(path)
    assert len(reopened) == 1
    assert reopened.get("a", profile.fingerprint(), SHAPE) == first
    assert reopened.get("a", _profile("cpu", threads=2).fingerprint(), SHAPE) is None

    backend = _Counting(get_backend(profile))
    meter = LatencyMeter(profile, cache=reopened, lock=lock, backend=backend)
    assert meter.measure(_net(), SHAPE, key="a") == first
    assert (meter.hits, backend.calls) == (1, 0)

    clone = pickle.loads(pickle.dumps(reopened))  # e.g. sent to a Ray worker
    assert clone.get("a", profile.fingerprint(), SHAPE) == first


def test_in_memory_cache_pickles_with_its_rows() -> None:
    cache = LatencyCache()
    lat = Latency.from_samples([1.0, 2.0, 3.0, 4.0, 5.0])
    cache.put("k", "fp", (1, 3, 8, 8), lat)
    cache.put("k", "fp", (1, 3, 8, 8), lat)  # replaces, does not duplicate
    clone = pickle.loads(pickle.dumps(cache))
    assert len(clone) == 1 and clone.get("k", "fp", (1, 3, 8, 8)) == lat
    clone.put("other", "fp", (1,), lat)
    assert len(cache) == 1


def _put_many(path: str, worker: int, count: int) -> None:
    cache = LatencyCache(path)
    for i in range(count):
        cache.put(f"w{worker}-{i}", "fp", (1, 3, 8, 8), Latency.from_samples([1.0, float(i + 1)]))


def test_cache_is_safe_for_concurrent_writers(tmp_path: Path) -> None:
    import multiprocessing

    path = str(tmp_path / "latency.db")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_put_many, args=(path, w, 50)) for w in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    cache = LatencyCache(path)
    assert len(cache) == 200
    assert cache.get("w1-49", "fp", (1, 3, 8, 8)) == Latency.from_samples([1.0, 50.0])


@pytest.mark.parametrize(("name", "backend"), [("cpu", "onnxruntime"), ("cpu-torch", "torch")])
def test_get_backend_follows_profile(name: str, backend: str) -> None:
    assert get_backend(load_profile(name)).name == backend


def _tensorrt_runs_here() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def test_tensorrt_backend_runs_or_says_why_not(lock: DeviceLock) -> None:
    profile = HardwareProfile(name="trt", device="cuda", backend="tensorrt", precision="fp16",
                              warmup=2, repeats=10)
    if _tensorrt_runs_here():
        lat = LatencyMeter(profile, lock=DeviceLock("cuda", lock_dir=lock.lock_dir)).measure(
            _net(), SHAPE)
        assert lat.median_ms > 0 and lat.n == 10
        return
    expected = (r"^TensorRT backend skipped: (tensorrt is not installed "
                + re.escape("(pip install 'hwnas[tensorrt]')")
                + r"|no CUDA GPU is visible \(torch.cuda.is_available\(\) is False\))$")
    with pytest.raises(BackendUnavailable, match=expected):
        get_backend(profile)
    with pytest.raises(BackendUnavailable, match=expected):
        LatencyMeter(profile, lock=lock)


def test_torch_cuda_backend_without_gpu_says_why() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    with pytest.raises(BackendUnavailable, match=r"^torch CUDA backend skipped: no CUDA GPU"):
        get_backend(load_profile("h200"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_torch_cuda_backend_measures_without_moving_the_model(
    precision: str, tmp_path: Path
) -> None:
    profile = _profile("h200", precision=precision)
    model = _net()
    start = time.monotonic()
    lat = LatencyMeter(profile, lock=DeviceLock("cuda", lock_dir=tmp_path)).measure(model, SHAPE)
    assert lat.median_ms > 0 and lat.p90_ms >= lat.median_ms and lat.n == 10
    assert lat.median_ms < (time.monotonic() - start) * 1000
    assert next(model.parameters()).device.type == "cpu"
    assert next(model.parameters()).dtype == torch.float32


class _CallCounter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x)


def test_short_runs_are_averaged_until_a_sample_lasts_min_sample_ms() -> None:
    profile = HardwareProfile(name="t", device="cpu", backend="torch", threads=1)
    backend = get_backend(profile)
    model = _CallCounter().eval()
    single = backend.time(model, (1, 4), warmup=0, repeats=20)
    calls_single = model.calls
    model.calls = 0
    averaged = backend.time(model, (1, 4), warmup=0, repeats=20, min_sample_ms=2.0)
    assert calls_single == 20 and len(single) == 20 and len(averaged) == 20
    # a tiny linear layer takes microseconds: each sample needed many runs, about as many
    # as fit in 2 ms at the call-by-call median (whatever this CPU's speed)
    med = sorted(single)[10]
    inner = (model.calls - 20) // 20  # calibration runs come before the 20 samples
    assert inner >= 1 and model.calls > 20 * max(2.0, 2.0 / med / 4)
    # and the per-run estimate is of the same order as the call-by-call median
    assert 0.05 * med < sorted(averaged)[10] < 20 * med


class _Scripted(LatencyBackend):
    """Returns prepared sample lists in turn: a noisy one, then quieter ones."""

    name = "scripted"

    def __init__(self, profile: HardwareProfile, runs: list[list[float]]) -> None:
        super().__init__(profile)
        self.runs, self.calls = runs, 0

    def session(self, model: Any, input_shape: tuple[int, ...]) -> Any:
        raise NotImplementedError

    def time(self, model: Any, input_shape: tuple[int, ...], *, warmup: int, repeats: int,
             min_sample_ms: float = 0.0, **windows: Any) -> list[float]:
        self.calls += 1
        return self.runs[self.calls - 1]


def test_a_measurement_in_windows_reports_its_quietest_window(lock: DeviceLock) -> None:
    # the host slowed the middle window down: the median is the quiet windows', the tail
    # keeps the slow runs
    burst = [1.0, 1.02, 0.98, 1.0] + [1.6, 1.7, 1.65, 1.6] + [1.01, 0.99, 1.0, 1.0]
    profile = _profile("cpu", repeats=12, windows=3, max_cv=0.1, max_attempts=3)
    backend = _Scripted(profile, [burst])
    latency = LatencyMeter(profile, lock=lock, backend=backend).measure(_net(), SHAPE)
    assert backend.calls == 1 and latency.reliable and latency.n == 12
    assert latency.median_ms == pytest.approx(1.0) and latency.cv < 0.02
    assert latency.p90_ms >= 1.6
    # the same samples as one window: the burst is the measurement's own noise
    single = Latency.from_samples(burst)
    assert single.median_ms > 1.0 and single.cv > 0.2


def test_windows_are_timed_apart(lock: DeviceLock) -> None:
    backend = get_backend(_profile("cpu-torch"))
    start = time.perf_counter()
    samples = backend.time(_net(), SHAPE, warmup=1, repeats=7, windows=3, window_pause_ms=150)
    assert len(samples) == 7 and time.perf_counter() - start >= 0.3
    with pytest.raises(ValueError, match="windows: must be >= 1"):
        Latency.from_samples([1.0], windows=0)
    assert _profile("cpu").fingerprint() != _profile("cpu", windows=5).fingerprint()


def test_noisy_measurements_are_repeated_and_the_quietest_kept(lock: DeviceLock) -> None:
    noisy = [1.0] * 9 + [20.0]  # one stall: CV ~ 1.9
    quieter = [1.0] * 9 + [1.5]
    quiet = [1.0] * 10
    profile = _profile("cpu", max_cv=0.1, max_attempts=3)
    backend = _Scripted(profile, [noisy, quieter, quiet])
    latency = LatencyMeter(profile, lock=lock, backend=backend).measure(_net(), SHAPE)
    assert backend.calls == 3 and latency.cv == 0.0
    backend = _Scripted(profile, [noisy, quieter, noisy])
    meter = LatencyMeter(profile, lock=lock, backend=backend)
    latency = meter.measure(_net(), SHAPE, key="always-noisy")
    assert backend.calls == 3 and latency.median_ms == 1.0 and 0 < latency.cv < 0.2
    # never good enough: flagged with the reason, and not cached as if it were true
    assert not latency.reliable and "above max_cv 0.1" in latency.unreliable_reason
    assert "after 3 attempts" in latency.unreliable_reason
    assert meter.cache.get("always-noisy", profile.fingerprint(), (1, *SHAPE[1:])) is None
    once = _profile("cpu", max_cv=None)
    backend = _Scripted(once, [noisy, quiet])
    assert LatencyMeter(once, lock=lock, backend=backend).measure(_net(), SHAPE).cv > 1
    assert backend.calls == 1


def test_a_measurement_a_decision_rests_on_is_taken_again_while_unreliable(
    lock: DeviceLock,
) -> None:
    noisy, quiet = [1.0] * 9 + [20.0], [1.0] * 10
    profile = _profile("cpu", max_cv=0.1, max_attempts=1)
    # flagged once, then reliable: the retake stands, and is cached
    backend = _Scripted(profile, [noisy, quiet])
    meter = LatencyMeter(profile, lock=lock, backend=backend)
    latency = meter.measure(_net(), SHAPE, key="settles", retakes=2)
    assert backend.calls == 2 and latency.reliable and latency.cv == 0.0
    assert meter.cache.get("settles", profile.fingerprint(), (1, *SHAPE[1:])) is not None
    # flagged every time: 1 + retakes measurements, the least noisy one returned, flagged
    backend = _Scripted(profile, [noisy, [1.0] * 9 + [1.5], noisy, quiet])
    latency = LatencyMeter(profile, lock=lock, backend=backend).measure(_net(), SHAPE, retakes=2)
    assert backend.calls == 3 and not latency.reliable and 0 < latency.cv < 0.2
    # a reliable one is not taken again, and no retakes is the meter's own protocol
    backend = _Scripted(profile, [quiet, noisy])
    meter = LatencyMeter(profile, lock=lock, backend=backend)
    assert meter.measure(_net(), SHAPE, retakes=2).reliable
    assert backend.calls == 1
    backend = _Scripted(profile, [noisy, quiet])
    assert not LatencyMeter(profile, lock=lock, backend=backend).measure(_net(), SHAPE).reliable
    assert backend.calls == 1
    with pytest.raises(ValueError, match="retakes: must be >= 0"):
        meter.measure(_net(), SHAPE, retakes=-1)


def test_a_comparison_is_taken_again_while_any_of_its_figures_is_unreliable(
    lock: DeviceLock,
) -> None:
    noisy, quiet = [1.0] * 9 + [20.0], [1.0] * 10
    profile = _profile("cpu", max_cv=0.1, max_attempts=1)
    # two models, two rounds: four timings per comparison; one noisy round flags its model
    backend = _Scripted(profile, [quiet, noisy, quiet, quiet] + [quiet] * 4)
    taken = LatencyMeter(profile, lock=lock, backend=backend).compare_side_by_side(
        [_net(), _net()], SHAPE, rounds=2)
    assert len(taken) == 2 and backend.calls == 8
    assert not all(m.reliable for m in taken[0]) and all(m.reliable for m in taken[1])
    flagged = next(m for m in taken[0] if not m.reliable)
    assert "1 of 2 rounds unreliable" in flagged.unreliable_reason
    # never reliable: 1 + retakes comparisons, the last one flagged
    backend = _Scripted(profile, [noisy] * 6)
    taken = LatencyMeter(profile, lock=lock, backend=backend).compare_side_by_side(
        [_net(), _net()], SHAPE, rounds=1, retakes=2)
    assert len(taken) == 3 and not any(m.reliable for m in taken[-1])
    with pytest.raises(ValueError, match="retakes: must be >= 0"):
        LatencyMeter(profile, lock=lock, backend=backend).compare_side_by_side(
            [_net()], SHAPE, retakes=-1)


def test_a_cache_written_before_load_was_recorded_still_opens(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE latency (arch_key TEXT NOT NULL, fingerprint TEXT NOT NULL, "
               "input_shape TEXT NOT NULL, median_ms REAL NOT NULL, p90_ms REAL NOT NULL, "
               "mean_ms REAL NOT NULL, cv REAL NOT NULL, n INTEGER NOT NULL, samples_ms TEXT "
               "NOT NULL, PRIMARY KEY (arch_key, fingerprint, input_shape))")
    db.execute("INSERT INTO latency VALUES ('a', 'f', '1x1x8x8', 1.0, 1.2, 1.1, 0.01, 3, '[1.0, 1.0, 1.2]')")
    db.commit()
    db.close()
    assert LatencyCache.set_aside_if_damaged(path) is None
    with LatencyCache(path) as cache:
        old = cache.get("a", "f", (1, 1, 8, 8))
        assert old is not None and old.median_ms == 1.0 and old.load == 0.0
        busy = Latency.from_samples([2.0, 2.1, 2.2])
        busy = Latency(**{**busy.__dict__, "load": 0.4})
        cache.put("b", "f", (1, 1, 8, 8), busy)
        assert cache.get("b", "f", (1, 1, 8, 8)) == busy
