from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from compress import (
    export_onnx,
    openvino_accuracy,
    quantize_nncf,
    read_metadata,
    read_openvino_metadata,
)
from evaluators import DataSplits, predict
from evaluators.latency import OpenVINOIR
from evaluators.latency._openvino import OpenVINOBackend
from hwprofiles import load_profile

SHAPE = (1, 1, 16, 16)


@pytest.fixture(scope="module")
def fp32_onnx(digits_model: nn.Module, digits_splits: DataSplits) -> bytes:
    meta = {"preprocessing": digits_splits.normalization.to_dict(),
            "classes": list(digits_splits.classes), "stage": "fp32"}
    return export_onnx(digits_model, SHAPE, metadata=meta)


@pytest.fixture(scope="module")
def int8_ir(fp32_onnx: bytes, digits_splits: DataSplits) -> OpenVINOIR:
    return quantize_nncf(fp32_onnx, digits_splits.x_train[:200].numpy())


@pytest.fixture(scope="module")
def torch_pred(digits_model: nn.Module, digits_splits: DataSplits) -> torch.Tensor:
    with torch.no_grad():
        return predict(digits_model, digits_splits.x_test)


def test_int8_ir_agrees_with_the_fp32_model(
    int8_ir: OpenVINOIR, fp32_onnx: bytes, digits_splits: DataSplits, torch_pred: torch.Tensor
) -> None:
    x, y = digits_splits.x_test, digits_splits.y_test
    assert len(x) % 256 != 0  # the last chunk of a fixed batch-1 input is padded...
    # ...and agreement with the torch predictions is accuracy against them as labels.
    assert openvino_accuracy(fp32_onnx, x, torch_pred) == 1.0
    assert openvino_accuracy(int8_ir, x, torch_pred) >= 0.95
    fp32_acc = float((torch_pred == y).float().mean())
    assert fp32_acc > 0.9
    assert openvino_accuracy(int8_ir, x, y) >= fp32_acc - 0.03


def test_int8_ir_has_int8_ops_that_run_in_int8(int8_ir: OpenVINOIR) -> None:
    assert b'type="FakeQuantize"' in int8_ir.xml
    assert b'element_type="i8"' in int8_ir.xml  # weights stored as INT8
    assert b'element_type="f16"' not in int8_ir.xml  # no fp16 weight compression
    compiled = OpenVINOBackend(load_profile("cpu-openvino")).compile(int8_ir, SHAPE)
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str)
                  for op in compiled.get_runtime_model().get_ops()
                  if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    assert precisions <= {"u8", "i8"} and precisions, precisions


def test_metadata_survives_quantisation_and_a_save_load_round_trip(
    int8_ir: OpenVINOIR, fp32_onnx: bytes, digits_splits: DataSplits, tmp_path: Path
) -> None:
    meta = read_openvino_metadata(int8_ir)
    assert meta == read_metadata(fp32_onnx)
    assert meta["preprocessing"] == digits_splits.normalization.to_dict()
    assert meta["classes"] == list(digits_splits.classes) and meta["input_shape"] == list(SHAPE)

    path = int8_ir.save(tmp_path / "model.int8.xml")
    assert (tmp_path / "model.int8.bin").is_file()
    assert OpenVINOIR.load(path) == int8_ir
    assert read_openvino_metadata(path) == meta
    x, y = digits_splits.x_test[:50], digits_splits.y_test[:50]
    assert openvino_accuracy(OpenVINOIR.load(path), x, y) == openvino_accuracy(int8_ir, x, y)


def test_ir_without_our_metadata_reads_as_empty(fp32_onnx: bytes) -> None:
    from evaluators.latency._openvino import import_openvino

    bare = OpenVINOIR.from_model(import_openvino().Core().read_model(fp32_onnx))
    assert read_openvino_metadata(bare) == {}


def test_arguments_reach_nncf_and_its_output_goes_to_the_log(
    fp32_onnx: bytes, digits_splits: DataSplits, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="compress._openvino")
    ir = quantize_nncf(fp32_onnx, digits_splits.x_train[:40].numpy(), subset_size=16,
                       preset="mixed")
    captured = capsys.readouterr()
    assert captured.out == "" and "Statistics collection" not in captured.err
    assert any(r.levelno == logging.DEBUG and "nncf: Statistics collection" in r.getMessage()
               for r in caplog.records)
    nncf_info = ir.read().get_rt_info()["nncf"]["quantization"]
    assert {key: nncf_info[key].astype(str) for key in
            ("preset", "subset_size", "target_device", "fast_bias_correction")} == {
        "preset": "mixed", "subset_size": "16", "target_device": "CPU",
        "fast_bias_correction": "True"}


@pytest.mark.parametrize(
    ("kwargs", "calibration", "pattern"),
    [({"preset": "fast"}, (8, 1, 16, 16), r"^preset: must be one of \['performance', 'mixed'\]"),
     ({"subset_size": 0}, (8, 1, 16, 16), r"^subset_size: must be >= 1, got 0"),
     ({}, (8, 3, 16, 16), r"^calibration: shape \(8, 3, 16, 16\) does not fit the model input"),
     ({}, (0, 1, 16, 16), r"^calibration: needs at least 1 samples, got 0")],
)
def test_quantize_nncf_rejects_bad_arguments(
    fp32_onnx: bytes, kwargs: dict[str, Any], calibration: tuple[int, ...], pattern: str
) -> None:
    with pytest.raises(ValueError, match=pattern):
        quantize_nncf(fp32_onnx, np.zeros(calibration, np.float32), **kwargs)


_NO_TELEMETRY_SCRIPT = """
import json, os, numpy as np
from torch import nn
from compress import export_onnx, quantize_nncf
from evaluators.latency import LatencyMeter
from hwprofiles import HardwareProfile, load_profile
net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
ir = quantize_nncf(export_onnx(net, (1, 1, 8, 8)), np.ones((4, 1, 8, 8), np.float32))
fields = {**load_profile("cpu-openvino").model_dump(), "warmup": 1, "repeats": 5}
LatencyMeter(HardwareProfile(**fields)).measure(net, (1, 1, 8, 8))
import openvino_telemetry
print(json.dumps({"consent": openvino_telemetry.Telemetry().consent,
                  "env": [k for k in ("CI", "NNCF_CI") if k in os.environ]}))
"""


def test_nothing_phones_home_or_writes_to_the_home_directory(tmp_path: Path) -> None:
    # A fresh process, without pytest (which alone switches NNCF's telemetry off) and
    # with an empty home: openvino-telemetry would write ~/intel/openvino_ga_cid there.
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NNCF_CI", "NNCF_DEV")}
    env["HOME"] = str(home)
    result = subprocess.run(
        [sys.executable, "-c", _NO_TELEMETRY_SCRIPT], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"consent": False, "env": []}  # declined, and the switches restored
    assert not (home / "intel").exists()
