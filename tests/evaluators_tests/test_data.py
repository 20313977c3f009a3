from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evaluators import DataError, load_dataset


def make_npz(path: Path, n_per_class: int = 30, classes: int = 3, shape: tuple[int, ...] = (12, 12)) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.integers(0, 256, size=(len(y), *shape), dtype=np.uint8)
    np.savez(path, x=x, y=y, classes=np.array([f"class_{i}" for i in range(classes)]))


def test_npz_loads_splits_stratified_and_normalised_on_train(tmp_path: Path) -> None:
    make_npz(tmp_path / "d.npz")
    data = load_dataset("npz", path=tmp_path / "d.npz", image_size=16, val_fraction=0.2,
                        test_fraction=0.2, seed=3)
    assert data.classes == ("class_0", "class_1", "class_2")
    assert data.input_shape == (1, 1, 16, 16)
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 90
    for y in (data.y_train, data.y_val, data.y_test):  # stratified: every class in every split
        assert set(y.tolist()) == {0, 1, 2}
    # the statistics come from the training split only
    assert float(data.x_train.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(data.x_train.std()) == pytest.approx(1.0, abs=1e-2)
    assert data.normalization.scale == pytest.approx(1 / 255)


def test_npz_channels_first_and_seeded_splits(tmp_path: Path) -> None:
    make_npz(tmp_path / "c.npz", shape=(3, 8, 8))
    a = load_dataset("npz", path=tmp_path / "c.npz", image_size=None, val_fraction=0.2, test_fraction=0.2, seed=1)
    b = load_dataset("npz", path=tmp_path / "c.npz", image_size=None, val_fraction=0.2, test_fraction=0.2, seed=1)
    c = load_dataset("npz", path=tmp_path / "c.npz", image_size=None, val_fraction=0.2, test_fraction=0.2, seed=2)
    assert a.input_shape == (1, 3, 8, 8) and len(a.normalization.mean) == 3
    assert torch.equal(a.x_val, b.x_val)
    assert not torch.equal(a.x_val, c.x_val)


def test_a_path_given_as_a_string_reads_the_same_file(tmp_path: Path) -> None:
    make_npz(tmp_path / "s.npz")
    as_path = load_dataset("npz", path=tmp_path / "s.npz", image_size=None, val_fraction=0.2,
                           test_fraction=0.2, seed=0)
    as_str = load_dataset("npz", path=str(tmp_path / "s.npz"), image_size=None,
                          val_fraction=0.2, test_fraction=0.2, seed=0)
    assert torch.equal(as_path.x_train, as_str.x_train)
    assert torch.equal(as_path.y_test, as_str.y_test)


def test_digits_are_bundled() -> None:
    data = load_dataset("digits", path=None, image_size=16, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert data.num_classes == 10 and data.input_shape == (1, 1, 16, 16)
    assert len(data.y_train) > 1000


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((10, 4, 4))}, "no array 'y'"),
        ({"x": np.zeros((10, 4)), "y": np.zeros(10, dtype=int)}, "'x' must be"),
        ({"x": np.zeros((10, 4, 4)), "y": np.zeros(9, dtype=int)}, "'y' must be"),
        ({"x": np.zeros((10, 4, 4)), "y": np.zeros(10)}, "integer labels"),
        ({"x": np.zeros((10, 4, 4), dtype=np.int32), "y": np.zeros(10, dtype=int)}, "uint8 or float"),
    ],
)
def test_bad_npz_names_the_problem(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset("npz", path=tmp_path / "bad.npz", image_size=None, val_fraction=0.2, test_fraction=0.2, seed=0)


def test_missing_npz_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.path"):
        load_dataset("npz", path=tmp_path / "none.npz", image_size=None, val_fraction=0.2, test_fraction=0.2, seed=0)
