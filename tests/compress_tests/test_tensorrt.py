from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from compress._tensorrt import build_engine, tensorrt_unavailable_reason
from evaluators import export_onnx

_REASONS = (
    re.escape("tensorrt is not installed (pip install 'hwnas[tensorrt]')"),
    re.escape("no CUDA GPU is visible (torch.cuda.is_available() is False)"),
)


def _onnx() -> bytes:
    return export_onnx(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten()), (1, 3, 8, 8))


def test_builds_an_engine_or_says_why_not() -> None:
    reason = tensorrt_unavailable_reason()
    if reason is None:
        plan = build_engine(_onnx(), precision="fp16")
        assert isinstance(plan, bytes) and len(plan) > 0
        return
    assert re.fullmatch("|".join(_REASONS), reason)
    expected = rf"^cannot build a TensorRT engine: ({'|'.join(_REASONS)})$"
    with pytest.raises(RuntimeError, match=expected):
        build_engine(_onnx(), precision="fp16")


def test_int8_needs_a_qdq_graph_and_precision_is_checked() -> None:
    with pytest.raises(ValueError, match=r"^onnx_bytes: precision 'int8' needs a QDQ model"):
        build_engine(_onnx(), precision="int8")
    with pytest.raises(ValueError, match=r"^precision: must be 'fp32', 'fp16' or 'int8'"):
        build_engine(_onnx(), precision="bf16")  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(tensorrt_unavailable_reason() is not None,
                    reason=str(tensorrt_unavailable_reason()))
def test_builds_an_int8_engine_from_a_modelopt_export(digits_model: nn.Module) -> None:
    from compress._int8 import export_modelopt_onnx, quantize_modelopt

    qmodel = quantize_modelopt(digits_model, [torch.randn(32, 1, 16, 16)])
    plan = build_engine(export_modelopt_onnx(qmodel, (1, 1, 16, 16)), precision="int8")
    assert len(plan) > 0
