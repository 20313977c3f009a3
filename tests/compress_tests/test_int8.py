from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from compress._int8 import export_modelopt_onnx, quantize_modelopt
from evaluators import DataSplits, export_onnx, quantize_onnxruntime, read_metadata
from evaluators._quantize import needs_reduced_range

SHAPE = (1, 1, 16, 16)


@pytest.fixture(scope="module")
def fp32_onnx(digits_model: nn.Module, digits_splits: DataSplits) -> bytes:
    meta = {"preprocessing": digits_splits.normalization.to_dict(), "stage": "fp32"}
    return export_onnx(digits_model, SHAPE, metadata=meta)


def _predict(onnx_bytes: bytes, x: torch.Tensor) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    return np.array([session.run(None, {"input": row[None]})[0].argmax() for row in x.numpy()])


def _check_qdq(onnx_bytes: bytes) -> onnx.ModelProto:
    proto = onnx.load_from_string(onnx_bytes)
    onnx.checker.check_model(proto)
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    return proto


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_onnxruntime_int8_agrees_with_fp32_and_keeps_metadata(
    fp32_onnx: bytes, digits_splits: DataSplits, method: str
) -> None:
    calibration = digits_splits.x_train[:200].numpy()
    int8 = quantize_onnxruntime(fp32_onnx, calibration, calibrate_method=method)  # type: ignore[arg-type]
    _check_qdq(int8)
    fp32_pred = _predict(fp32_onnx, digits_splits.x_test)
    assert (_predict(int8, digits_splits.x_test) == fp32_pred).mean() >= 0.95
    meta = read_metadata(int8)
    assert meta["stage"] == "fp32" and meta["preprocessing"] == read_metadata(fp32_onnx)[
        "preprocessing"]


def test_onnxruntime_int8_rejects_bad_arguments(fp32_onnx: bytes) -> None:
    with pytest.raises(ValueError, match=r"^calibrate_method: must be one of"):
        quantize_onnxruntime(fp32_onnx, np.zeros((4, 1, 16, 16), np.float32),
                             calibrate_method="mse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^calibration: shape \(4, 3, 16, 16\) does not fit"):
        quantize_onnxruntime(fp32_onnx, np.zeros((4, 3, 16, 16), np.float32))


@pytest.mark.parametrize("calibrator", ["max", "histogram"])
def test_modelopt_qdq_agrees_with_fp32(
    digits_model: nn.Module, digits_splits: DataSplits, calibrator: str
) -> None:
    before = {k: v.clone() for k, v in digits_model.state_dict().items()}
    qmodel = quantize_modelopt(
        digits_model, digits_splits.x_train[:256].split(64), calibrator=calibrator  # type: ignore[arg-type]
    )
    assert qmodel is not digits_model
    after = digits_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the original is untouched
    assert not any("quantizer" in name for name, _ in digits_model.named_modules())

    proto = _check_qdq(export_modelopt_onnx(qmodel, SHAPE, metadata={"stage": "int8"}))
    # TensorRT's explicit quantisation: signed INT8 with zero points of 0, per-channel weights.
    constants = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
                 for n in proto.graph.node if n.op_type == "Constant"}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    quantize = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    for node in quantize:
        zero_point = constants[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any()
    assert any(n.input[0] in inits and constants[n.input[1]].size > 1 for n in quantize)

    qdq = proto.SerializeToString()
    assert read_metadata(qdq)["stage"] == "int8"
    fp32 = export_onnx(digits_model, SHAPE)
    agreement = (_predict(qdq, digits_splits.x_test) == _predict(fp32, digits_splits.x_test))
    assert agreement.mean() >= 0.95


def test_modelopt_rejects_bad_arguments(digits_model: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"^calibrator: must be 'max' or 'histogram'"):
        quantize_modelopt(digits_model, [], calibrator="entropy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^calibration_batches: yielded no batches"):
        quantize_modelopt(digits_model, [])
    with pytest.raises(ValueError, match=r"^qmodel: has no enabled quantisers"):
        export_modelopt_onnx(digits_model, SHAPE)


@pytest.mark.parametrize(("flags", "expected"), [
    ("fpu sse4_2 avx2 fma", True),  # AVX2 without VNNI: u8*s8 pair sums saturate
    ("fpu avx2 avx512f avx512_vnni", False),
    ("fpu avx2 avx_vnni", False),
    ("fp asimd asimddp", False),  # not x86
])
def test_reduced_range_is_chosen_by_the_cpu_flags(tmp_path, flags: str, expected: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert needs_reduced_range(cpuinfo) is expected
    assert needs_reduced_range(tmp_path / "missing") is False
