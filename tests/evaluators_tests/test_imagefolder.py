"""Image folders as users keep them: real PNG and JPEG files written with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluators import load_dataset
from evaluators._imagefolder import load_image_folder


def _noise(seed: int, size: tuple[int, int], channels: int) -> np.ndarray:
    shape = (size[1], size[0]) if channels == 1 else (size[1], size[0], channels)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def write_folder(root: Path, counts: dict[str, int], *, channels: int = 3,
                 sizes: tuple[tuple[int, int], ...] = ((10, 10),), suffix: str = ".png") -> None:
    """Writes ``counts[name]`` noise images per class folder, cycling through ``sizes``."""
    for c, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = _noise(100 * c + i, sizes[i % len(sizes)], channels)
            Image.fromarray(pixels).save(root / name / f"{i:03d}{suffix}")


def _load(root: Path, image_size: int | None = 8, seed: int = 0):  # type: ignore[no-untyped-def]
    return load_dataset("imagefolder", path=root, image_size=image_size, val_fraction=0.2,
                        test_fraction=0.2, seed=seed)


def test_rgb_folder_of_png_and_jpeg_loads_split_and_sorted(tmp_path: Path) -> None:
    write_folder(tmp_path, {"zebra": 6, "ant": 6}, sizes=((10, 10), (14, 9)))
    write_folder(tmp_path, {"moth": 6}, suffix=".JPG")
    data = _load(tmp_path)
    assert data.classes == ("ant", "moth", "zebra")  # sorted folder names
    assert data.input_shape == (1, 3, 8, 8)
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 18
    for y in (data.y_train, data.y_val, data.y_test):  # stratified, like npz data
        assert set(y.tolist()) == {0, 1, 2}
    assert data.normalization.scale == pytest.approx(1 / 255) and len(data.normalization.mean) == 3
    assert torch.equal(_load(tmp_path).x_val, data.x_val)
    assert not torch.equal(_load(tmp_path, seed=1).x_val, data.x_val)


def test_grayscale_stays_one_channel_and_native_size_without_image_size(tmp_path: Path) -> None:
    write_folder(tmp_path, {"a": 5, "b": 5}, channels=1, sizes=((12, 7),))
    data = _load(tmp_path, image_size=None)
    assert data.input_shape == (1, 1, 7, 12)  # (C, H, W) of a 12 wide, 7 high image


def test_given_splits_are_used_as_given(tmp_path: Path) -> None:
    write_folder(tmp_path / "train", {"cat": 7, "dog": 5})
    write_folder(tmp_path / "val", {"cat": 2, "dog": 1})
    write_folder(tmp_path / "test", {"cat": 1, "dog": 3})
    data = _load(tmp_path)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (12, 3, 4)
    assert data.y_val.tolist() == [0, 0, 1] and data.y_test.tolist() == [0, 1, 1, 1]
    assert data.classes == ("cat", "dog")


def test_missing_val_split_is_drawn_from_train(tmp_path: Path) -> None:
    write_folder(tmp_path / "train", {"cat": 10, "dog": 10})
    write_folder(tmp_path / "test", {"cat": 2, "dog": 2})
    data = _load(tmp_path)
    assert len(data.y_test) == 4  # the test folder, as given
    assert (len(data.y_train), len(data.y_val)) == (16, 4)  # val_fraction 0.2 of train
    assert sorted(data.y_val.tolist()) == [0, 0, 1, 1]  # stratified


def test_palette_and_alpha_images_become_rgb(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "rgba").mkdir()
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    for suffix in (".png", ".gif", ".bmp"):
        red.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p" / f"red{suffix}")
        Image.new("RGBA", (4, 4), (0, 0, 255, 0)).save(tmp_path / "rgba" / f"blue{suffix}.png")
    folder = load_image_folder(tmp_path, image_size=None, max_bytes=2**20)
    assert folder.x.shape == (6, 3, 4, 4)
    assert folder.x[:3, :, 0, 0].tolist() == [[255, 0, 0]] * 3  # the palette's colour
    assert folder.x[3:, :, 0, 0].tolist() == [[0, 0, 255]] * 3  # alpha dropped, not composited


def test_folder_resizes_like_npz_of_the_same_pixels(tmp_path: Path) -> None:
    write_folder(tmp_path / "images", {"a": 5, "b": 5}, channels=1)
    files = sorted((tmp_path / "images").rglob("*.png"))  # the folder's order: class, then name
    pixels = np.stack([np.asarray(Image.open(p)) for p in files])
    np.savez(tmp_path / "same.npz", x=pixels, y=np.repeat([0, 1], 5), classes=np.array(["a", "b"]))
    folder = _load(tmp_path / "images", image_size=16)
    npz = load_dataset("npz", path=tmp_path / "same.npz", image_size=16, val_fraction=0.2,
                       test_fraction=0.2, seed=0)
    assert folder.classes == npz.classes
    assert torch.allclose(folder.x_train, npz.x_train, atol=1e-4)
    assert torch.equal(folder.y_test, npz.y_test)
