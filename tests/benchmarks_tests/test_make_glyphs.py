"""The glyphs data set of the ranking benchmark: reproducible from its seed, balanced, written
once, and its classes are glyphs a classifier can tell apart."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import make_glyphs  # noqa: E402


def test_the_same_seed_draws_the_same_images_and_classes_are_balanced() -> None:
    x, y = make_glyphs.make(240, classes=12, size=16, seed=3)
    again_x, again_y = make_glyphs.make(240, classes=12, size=16, seed=3)
    assert x.shape == (240, 3, 16, 16) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.array_equal(x, again_x) and np.array_equal(y, again_y)
    assert np.bincount(y, minlength=12).tolist() == [20] * 12
    other, _ = make_glyphs.make(240, classes=12, size=16, seed=4)
    assert not np.array_equal(x, other)


def test_a_class_is_its_glyph_not_noise() -> None:
    # a nearest-centroid classifier on the images' grey levels, signs of contrast aligned,
    # tells 4 glyphs apart far above chance; shuffled labels would leave it at chance
    x, y = make_glyphs.make(2000, classes=4, size=16, seed=0)
    grey = x.astype(np.float32).mean(axis=1).reshape(len(x), -1)
    grey -= np.median(grey, axis=1, keepdims=True)
    grey = np.abs(grey)  # a stroke darker or lighter than its background alike
    train, test = slice(0, 1600), slice(1600, None)
    centroids = np.stack([grey[train][y[train] == c].mean(axis=0) for c in range(4)])
    predicted = np.argmin(((grey[test][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == y[test]).mean() > 0.5  # chance is 0.25


def test_written_keeps_an_existing_file_and_writes_a_missing_one(tmp_path: Path) -> None:
    path = make_glyphs.written(tmp_path / "sub" / "glyphs.npz", 80, classes=8, size=12)
    with np.load(path) as data:
        assert data["x"].shape == (80, 3, 12, 12)
        assert list(data["classes"]) == [f"glyph{i}" for i in range(8)]
    stamp = path.stat().st_mtime_ns
    assert make_glyphs.written(path, 80, classes=8, size=12) == path
    assert path.stat().st_mtime_ns == stamp
    assert not list(path.parent.glob(".*tmp*"))  # written atomically, nothing left beside


def test_the_command_refuses_fewer_images_than_classes(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        make_glyphs.main([str(tmp_path / "g.npz"), "--n", "10", "--classes", "40"])
    assert make_glyphs.main([str(tmp_path / "g.npz"), "--n", "40", "--classes", "4"]) == 0
    assert (tmp_path / "g.npz").exists()
