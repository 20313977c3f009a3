from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from evaluators.latency import (
    DeviceLock,
    LatencyMeter,
    OpenVINOIR,
    check_profile,
    get_backend,
    list_backends,
)
from evaluators.latency._onnx import to_onnx
from evaluators.latency._openvino import OpenVINOBackend, import_openvino, telemetry_disabled
from hwprofiles import HardwareProfile, ProfileError, load_profile

SHAPE = (1, 3, 16, 16)


def _profile(**changes: Any) -> HardwareProfile:
    """The shipped cpu-openvino profile with a short protocol (one attempt)."""
    fields = {**load_profile("cpu-openvino").model_dump(), "warmup": 2, "repeats": 10,
              "max_cv": None, "max_load": None, **changes}
    return HardwareProfile(**fields)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return to_onnx(_net(), SHAPE)


@pytest.fixture(scope="module")
def ir(onnx_bytes: bytes) -> OpenVINOIR:
    return OpenVINOIR.from_model(import_openvino().Core().read_model(onnx_bytes))


@pytest.fixture
def lock(tmp_path: Path) -> DeviceLock:
    return DeviceLock("cpu", lock_dir=tmp_path / "locks", timeout=60)


def test_cpu_openvino_profile_picks_the_openvino_backend() -> None:
    profile = load_profile("cpu-openvino")
    assert "openvino" in list_backends()
    backend = get_backend(profile)
    assert backend.name == "openvino" and isinstance(backend, OpenVINOBackend)
    assert (profile.device, profile.precision, profile.threads, profile.batch_size) == (
        "cpu", "fp32", 1, 1)


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [({"precision": "int8"}, r"precision: backend 'openvino' supports 'fp32', got 'int8'"),
     ({"device": "cuda"}, r"device: backend 'openvino' measures on 'cpu' only, got 'cuda'")],
)
def test_profiles_the_backend_cannot_describe_are_rejected(
    changes: dict[str, str], pattern: str
) -> None:
    with pytest.raises(ProfileError, match=pattern):
        check_profile(_profile(**changes))


def test_backend_times_every_kind_of_model(
    tmp_path: Path, onnx_bytes: bytes, ir: OpenVINOIR
) -> None:
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(onnx_bytes)
    xml_path = ir.save(tmp_path / "model.xml")
    backend = get_backend(_profile())
    for model in (_net(), onnx_bytes, onnx_path, str(xml_path), ir):
        samples = backend.time(model, SHAPE, warmup=2, repeats=5, min_sample_ms=0.5)
        assert len(samples) == 5 and all(math.isfinite(s) and s > 0 for s in samples), model


def test_meter_measures_an_ir_file(tmp_path: Path, ir: OpenVINOIR, lock: DeviceLock) -> None:
    meter = LatencyMeter(_profile(), lock=lock)
    latency = meter.measure(str(ir.save(tmp_path / "model.xml")), SHAPE, key="ir")
    assert latency.n == 10 and latency.median_ms > 0
    assert meter.measure(str(tmp_path / "model.xml"), SHAPE, key="ir") == latency
    assert (meter.hits, meter.misses) == (1, 1)


@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_model_runs_in_f32_on_the_profile_threads(threads: int) -> None:
    compiled = OpenVINOBackend(_profile(threads=threads)).compile(_net(), SHAPE)
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    assert compiled.get_property("INFERENCE_NUM_THREADS") == threads
    assert compiled.get_property("NUM_STREAMS") == 1
    assert compiled.get_property("PERFORMANCE_HINT") == "LATENCY"
    assert compiled.get_property("ENABLE_CPU_PINNING") is False
    # What the CPU plugin actually executes: no bf16 layer, convolutions in f32.
    layers = [(op.get_rt_info()["layerType"].astype(str),
               op.get_rt_info()["runtimePrecision"].astype(str))
              for op in compiled.get_runtime_model().get_ops()]
    assert ("Convolution", "f32") in layers
    assert not [layer for layer in layers if layer[1] == "bf16"], layers


def test_outputs_match_torch_at_f32_accuracy(onnx_bytes: bytes, ir: OpenVINOIR) -> None:
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = _net()(x).numpy()
    backend = OpenVINOBackend(_profile())
    for model in (onnx_bytes, ir):
        compiled = backend.compile(model, SHAPE)
        got = compiled.create_infer_request().infer(x.numpy())[0]
        # f32 is off by ~2e-8 here; bf16 (the CPU plugin's default on CPUs with AVX-512 BF16
        # or AMX) by ~3e-4, on logits of ~0.2.
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_dynamic_batch_is_reshaped_and_static_mismatch_rejected(
    tmp_path: Path, onnx_bytes: bytes
) -> None:
    ov = import_openvino()
    param = ov.opset13.parameter([-1, 3, 16, 16], np.float32, name="input")
    model = ov.Model([ov.opset13.relu(param)], [param], "dynamic")
    dynamic = OpenVINOIR.from_model(model)
    backend = OpenVINOBackend(_profile())
    compiled = backend.compile(dynamic, (1, 3, 16, 16))
    assert list(compiled.input(0).get_shape()) == [1, 3, 16, 16]
    with pytest.raises(ValueError, match=r"input_shape: the model's input is \(1, 3, 16, 16\), "
                                         r"got \(1, 3, 32, 32\)"):
        backend.compile(onnx_bytes, (1, 3, 32, 32))
    with pytest.raises(TypeError, match=r"reads '.onnx' and IR '.xml' files, got '.*model.pt'"):
        backend.time(str(tmp_path / "model.pt"), SHAPE, warmup=0, repeats=5)


def test_ir_save_and_load_round_trip(tmp_path: Path, ir: OpenVINOIR) -> None:
    path = ir.save(tmp_path / "sub" / "model.int8.xml")
    assert path == tmp_path / "sub" / "model.int8.xml"
    assert (tmp_path / "sub" / "model.int8.bin").read_bytes() == ir.weights
    assert OpenVINOIR.load(path) == ir
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name.endswith(".tmp")]
    assert repr(ir) == f"OpenVINOIR(xml={len(ir.xml)} bytes, weights={len(ir.weights)} bytes)"
    with pytest.raises(ValueError, match=r"path_xml: an OpenVINO IR path must end with '.xml'"):
        ir.save(tmp_path / "model.bin")
    with pytest.raises(FileNotFoundError):
        OpenVINOIR.load(tmp_path / "missing.xml")


def test_telemetry_disabled_sets_the_switches_and_restores_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "false")
    monkeypatch.delenv("NNCF_CI", raising=False)
    with telemetry_disabled():
        with telemetry_disabled():
            assert (os.environ["CI"], os.environ["NNCF_CI"]) == ("true", "1")
        assert (os.environ["CI"], os.environ["NNCF_CI"]) == ("true", "1")  # outer still on
    assert os.environ["CI"] == "false" and "NNCF_CI" not in os.environ
