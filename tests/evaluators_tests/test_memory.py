"""Peak memory, weight size and energy: measured where the device can, refused where not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from evaluators import (
    EnergyUnavailable,
    energy_unavailable_reason,
    export_onnx,
    measure_energy_mj,
    memory_unavailable_reason,
    peak_memory_mb,
    weights_mb,
)
from evaluators.latency import DeviceLock, LatencyMeter
from hwprofiles import HardwareProfile, load_profile

# 64 channels of 192x192 float32: a 9 MiB activation, tiny weights
SHAPE = (1, 3, 192, 192)

_INDEPENDENT = r"""
import json, sys, threading, time
import numpy as np, onnxruntime as ort, psutil
proc = psutil.Process()
data = open(sys.argv[1], "rb").read()
peak, stop = [proc.memory_info().rss], False
def watch():
    while not stop:
        peak.append(proc.memory_info().rss)
        time.sleep(0.0005)
base = proc.memory_info().rss
thread = threading.Thread(target=watch); thread.start()
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(data, sess_options=o, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal(tuple(json.loads(sys.argv[2]))).astype("float32")
for _ in range(3):
    s.run(None, {s.get_inputs()[0].name: x})
time.sleep(0.01); stop = True; thread.join()
print(json.dumps((max(peak) - base) / 2**20))
"""


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(64, 16, 3, padding=1)).eval()


def _profile(name: str, **changes: Any) -> HardwareProfile:
    return HardwareProfile(**{**load_profile(name).model_dump(), **changes})


@pytest.mark.skipif(memory_unavailable_reason(load_profile("cpu")) is not None,
                    reason="no /proc peak-memory mark here")
def test_peak_memory_agrees_with_an_independent_measurement(tmp_path: Path) -> None:
    onnx = export_onnx(_net(), SHAPE)
    path = tmp_path / "net.onnx"
    path.write_bytes(onnx)
    measured = peak_memory_mb(load_profile("cpu"), onnx, SHAPE)
    result = subprocess.run([sys.executable, "-c", _INDEPENDENT, str(path), json.dumps(SHAPE)],
                            capture_output=True, text=True, timeout=120, check=True)
    independent = float(result.stdout.strip().splitlines()[-1])
    activation = 64 * 192 * 192 * 4 / 2**20
    assert measured > activation  # at least the largest activation had to be held
    assert abs(measured - independent) <= max(4.0, 0.25 * independent), (measured, independent)


@pytest.mark.skipif(memory_unavailable_reason(load_profile("cpu")) is not None,
                    reason="no /proc peak-memory mark here")
def test_peak_memory_grows_with_the_batch_and_runs_on_torch() -> None:
    one = peak_memory_mb(load_profile("cpu-torch"), _net(), SHAPE)
    four = peak_memory_mb(_profile("cpu-torch", batch_size=4), _net(), SHAPE)
    assert 2.0 * one < four  # activations scale with the profile's batch


def test_weights_mb_counts_parameters_at_the_profile_precision() -> None:
    net = _net()
    params = sum(p.numel() for p in net.parameters())
    assert weights_mb(net, "fp32") == pytest.approx(4 * params / 2**20)
    assert weights_mb(net, "int8") == pytest.approx(params / 2**20)
    # and about what the exported fp32 file carries
    assert abs(len(export_onnx(net, SHAPE)) / 2**20 - weights_mb(net)) < 0.01


def test_energy_is_measured_or_refused_with_the_reason(tmp_path: Path) -> None:
    profile = load_profile("cpu")
    reason = energy_unavailable_reason(profile)
    meter = LatencyMeter(profile, lock=DeviceLock("cpu", lock_dir=tmp_path))
    if reason is None:  # a machine whose RAPL counters this user may read
        assert measure_energy_mj(meter, _net(), SHAPE) > 0
    else:
        assert "RAPL" in reason
        with pytest.raises(EnergyUnavailable, match="^energy_mj: "):
            measure_energy_mj(meter, _net(), SHAPE)
