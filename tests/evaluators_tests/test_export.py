from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from evaluators import DataSplits, export_onnx, preprocess, read_metadata, set_metadata
from search_spaces import get_search_space

SHAPE = (1, 1, 16, 16)


def _session(onnx_bytes: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def _ort_predict(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    session = _session(onnx_bytes)
    return np.array([session.run(None, {"input": row[None]})[0].argmax() for row in x])


def test_export_round_trip(digits_model: nn.Module, digits_splits: DataSplits) -> None:
    arch = get_search_space("mobilenet_elastic").min_arch()
    meta = {
        "preprocessing": digits_splits.normalization,  # objects with to_dict() are stored
        "classes": digits_splits.classes,
        "arch": arch,
        "stage": "fp32",
    }
    onnx_bytes = export_onnx(digits_model, SHAPE, metadata=meta)

    proto = onnx.load_from_string(onnx_bytes)
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == list(SHAPE)
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}

    x = digits_splits.x_test[:8]
    session = _session(onnx_bytes)
    got = np.concatenate([session.run(None, {"input": row[None].numpy()})[0] for row in x])
    with torch.no_grad():
        expected = digits_model(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)

    assert read_metadata(onnx_bytes) == {
        "preprocessing": digits_splits.normalization.to_dict(),
        "classes": list(digits_splits.classes),
        "arch": arch.to_dict(),
        "stage": "fp32",
        "input_shape": list(SHAPE),
        "input_layout": "NCHW",
    }


def test_set_metadata_replaces_keys_and_reads_from_a_path(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).train()
    onnx_bytes = export_onnx(model, (1, 1, 8, 8), metadata={"stage": "fp32", "n": 1})
    assert model.training  # the caller's mode is restored
    updated = set_metadata(onnx_bytes, {"stage": "int8", "scales": np.array([0.5, 2.0])})
    path = tmp_path / "model.onnx"
    path.write_bytes(updated)
    meta = read_metadata(path)
    assert (meta["stage"], meta["n"], meta["scales"]) == ("int8", 1, [0.5, 2.0])
    with pytest.raises(TypeError, match=r"^metadata\.bad: cannot be written as JSON"):
        set_metadata(updated, {"bad": object()})
    with pytest.raises(ValueError, match=r"^input_shape: must be positive ints"):
        export_onnx(model, (1, 1, 0, 8))


def test_preprocess_matches_torch_resize_and_normalisation() -> None:
    raw = np.random.default_rng(0).integers(0, 256, size=(4, 3, 10, 7)).astype(np.uint8)
    meta = {
        "preprocessing": {"scale": 1 / 255, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.25]},
        "input_shape": [1, 3, 24, 16],
    }
    x = torch.from_numpy(raw).float() * (1 / 255)
    x = F.interpolate(x, size=(24, 16), mode="bilinear", align_corners=False)
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.3, 0.25])
    expected = ((x - mean[:, None, None]) / std[:, None, None]).numpy()
    got = preprocess(raw, meta)
    assert got.dtype == np.float32 and got.shape == (4, 3, 24, 16)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_preprocess_says_what_is_missing() -> None:
    raw = np.zeros((2, 8, 8))
    with pytest.raises(ValueError, match=r"^metadata: has no 'preprocessing'"):
        preprocess(raw, {"input_shape": [1, 1, 8, 8]})
    prep = {"scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    with pytest.raises(ValueError, match=r"^raw: has 1 channels but .* has 3"):
        preprocess(raw, {"preprocessing": prep, "input_shape": [1, 3, 8, 8]})
    with pytest.raises(ValueError, match=r"^metadata.input_layout: only 'NCHW'"):
        preprocess(raw, {"preprocessing": prep, "input_layout": "NHWC"})
    with pytest.raises(ValueError, match=r"^metadata: has no 'input_shape'; pass size"):
        preprocess(raw, {"preprocessing": prep})


def test_raw_digits_are_classified_from_the_onnx_file_alone(
    digits_model: nn.Module, digits_splits: DataSplits, tmp_path: Path
) -> None:
    path = tmp_path / "digits.onnx"
    path.write_bytes(export_onnx(
        digits_model, SHAPE, metadata={"preprocessing": digits_splits.normalization.to_dict()}
    ))
    raw = load_digits().images  # (1797, 8, 8), values 0..16

    inputs = preprocess(raw, read_metadata(path)).reshape(len(raw), -1)
    test = digits_splits.x_test.reshape(len(digits_splits.x_test), -1).numpy()
    # Find each test sample among the raw digits: the preprocessing must reproduce it.
    distances = (test**2).sum(1)[:, None] + (inputs**2).sum(1)[None, :] - 2 * test @ inputs.T
    index = distances.argmin(1)
    np.testing.assert_allclose(inputs[index], test, atol=1e-4)

    predicted = _ort_predict(path.read_bytes(), preprocess(raw[index], read_metadata(path)))
    with torch.no_grad():
        expected = digits_model(digits_splits.x_test).argmax(1).numpy()
    assert (predicted == expected).mean() >= 0.99
