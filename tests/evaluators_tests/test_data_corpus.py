"""A corpus of malformed data sets: each raises DataError naming the problem and the file."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy_format
from PIL import Image

from evaluators import DataError, load_dataset


@dataclass(frozen=True)
class Case:
    """Writes a malformed data set; ``named`` is the file or folder the message must name."""

    dataset: str
    path: Path
    named: Path
    problem: str
    options: dict[str, object] = field(default_factory=dict)


def _labels(classes: int = 3, per_class: int = 10) -> np.ndarray:
    return np.repeat(np.arange(classes), per_class)


def _images(n: int = 30, shape: tuple[int, ...] = (8, 8)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _npz(tmp: Path, problem: str, options: dict[str, object] | None = None,
         **arrays: np.ndarray) -> Case:
    path = tmp / "data.npz"
    np.savez(path, **arrays)
    return Case("npz", path, path, problem, options or {})


def _raw_npz(tmp: Path, members: dict[str, bytes], problem: str,
             options: dict[str, object] | None = None) -> Case:
    """An npz written member by member, so a header may say what the data does not."""
    path = tmp / "data.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return Case("npz", path, path, problem, options or {})


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _header_only(shape: tuple[int, ...], dtype: str = "<f8", body: bytes = b"") -> bytes:
    """An .npy header declaring ``shape`` followed by ``body`` (not the data it declares)."""
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(
        buffer, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue() + body


def _zip_bomb(tmp: Path) -> Case:
    """20x512x512 float64 zeros (40 MiB) deflated to about 40 KiB."""
    path = tmp / "bomb.npz"
    shape = (20, 512, 512)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            member.write(_header_only(shape))
            chunk = bytes(8 * 512 * 512)
            for _ in range(shape[0]):
                member.write(chunk)
        archive.writestr("y.npy", _npy_bytes(np.zeros(20, dtype=np.int64)))
    assert path.stat().st_size < 2**20
    return Case("npz", path, path, "needs 40.0 MiB (41943040 bytes) in memory, over the limit of "
                "16.0 MiB", {"max_bytes": 16 * 2**20})


def _write_png(path: Path, mode: str = "RGB", size: tuple[int, int] = (8, 8),
               value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full(size[::-1], 1000 + value, dtype=np.uint16)).save(path)
    elif mode == "F":
        Image.fromarray(np.full(size[::-1], 0.5, dtype=np.float32)).save(path)
    else:
        Image.new(mode, size, color=value if mode in ("L", "1") else (value, 0, 0)).save(path)
    return path


def _folder(tmp: Path, classes: dict[str, int], mode: str = "RGB", split: str = "",
            suffix: str = ".png") -> Path:
    """Writes ``classes`` (name -> image count) under ``tmp/images[/split]``."""
    root = tmp / "images"
    for name, count in classes.items():
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            _write_png(root / split / name / f"{i:03d}{suffix}", mode, value=10 * i)
    return root


def _png_bytes(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` and that holds no pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _imagefolder(root: Path, named: Path, problem: str,
                 options: dict[str, object] | None = None) -> Case:
    return Case("imagefolder", root, named, problem, options or {})


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _flip_middle(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    middle = data.index(b"\x93NUMPY") + 400  # inside x's data, past its header
    data[middle: middle + 64] = bytes(b ^ 0xFF for b in data[middle: middle + 64])
    path.write_bytes(bytes(data))
    return path


def _file(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def _mixed_modes(tmp: Path) -> Case:
    root = _folder(tmp, {"a": 3, "b": 3}, mode="L")
    colour = _write_png(root / "b" / "zz.png", "RGB")
    return _imagefolder(root, colour, "mix grayscale and colour")


def _differing_splits(tmp: Path) -> Case:
    root = _folder(tmp, {"cat": 2, "dog": 2}, split="train")
    _folder(tmp, {"cat": 1, "cow": 1}, split="val")
    return _imagefolder(root, root / "val", "class folders differ between splits")


def _corrupt_image(tmp: Path) -> Case:
    root = _folder(tmp, {"a": 3, "b": 3})
    bad = _file(root / "b", "broken.png", b"this is not a png at all")
    return _imagefolder(root, bad, "cannot read image")


def _truncated_image(tmp: Path, suffix: str) -> Case:
    root = _folder(tmp, {"a": 3, "b": 3})
    noisy = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    path = root / "a" / f"noisy{suffix}"
    Image.fromarray(noisy).save(path)
    return _imagefolder(root, _truncate(path), "cannot read image")


def _bomb_image(tmp: Path) -> Case:
    root = _folder(tmp, {"a": 3, "b": 3})
    bomb = _file(root / "a", "huge.png", _png_bytes(100_000, 100_000))
    return _imagefolder(root, bomb, "decompression bomb")


def _odd_mode(tmp: Path, mode: str, suffix: str) -> Case:
    root = _folder(tmp, {"a": 3, "b": 3}, mode="L")
    odd = _write_png(root / "a" / f"odd{suffix}", mode)
    return _imagefolder(root, odd, f"has mode {mode}")


def _sizes_differ(tmp: Path) -> Case:
    root = _folder(tmp, {"a": 3, "b": 3})
    other = _write_png(root / "b" / "wide.png", "RGB", size=(12, 8))
    return _imagefolder(root, other, "must have the same size", {"image_size": None})


def _val_without_train(tmp: Path) -> Case:
    _folder(tmp, {"a": 2, "b": 2}, split="val")
    root = _folder(tmp, {"a": 2, "b": 2}, split="test")
    return _imagefolder(root, root, "no train folder")


def _empty_val_class(tmp: Path) -> Case:
    root = _folder(tmp, {"a": 3, "b": 3}, split="train")
    _folder(tmp, {"a": 1}, split="val")
    (root / "val" / "b").mkdir()
    return _imagefolder(root, root / "val" / "b", "is empty")


def _only_text(tmp: Path) -> Case:
    root = _folder(tmp, {"a": 3})
    (root / "b").mkdir()
    _file(root / "b", "notes.txt", b"labels go here")
    return _imagefolder(root, root / "b", "1 other files skipped")


def _train_too_small(tmp: Path) -> Case:
    _folder(tmp, {"a": 1, "b": 1}, split="test")
    root = _folder(tmp, {"a": 1, "b": 1}, split="train")
    return _imagefolder(root, root / "train" / "a", "needs at least 2 per class")


def _loose_images(tmp: Path) -> Case:
    root = tmp / "images"
    for i in range(3):
        _write_png(root / f"{i}.png")
    return _imagefolder(root, root, "no class folders (its 3 images must go in one subfolder")


CASES: dict[str, Callable[[Path], Case]] = {
    # --- npz: the file itself
    "npz-missing-file": lambda t: Case("npz", t / "none.npz", t / "none.npz", "no such file"),
    "npz-a-folder": lambda t: Case("npz", t, t, "no such file"),
    "npz-text-file": lambda t: Case("npz", _file(t, "d.npz", b"x,y\n1,2\n"), t / "d.npz",
                                    "is not an .npz file"),
    "npz-single-npy": lambda t: Case("npz", _file(t, "d.npz", _npy_bytes(_images())), t / "d.npz",
                                     "is a single .npy array"),
    "npz-truncated": lambda t: Case(
        "npz", _truncate(_npz(t, "", x=_images(), y=_labels()).path), t / "data.npz",
        "damaged or truncated zip"),
    "npz-corrupt-data": lambda t: Case(
        "npz", _flip_middle(_npz(t, "", x=_images(), y=_labels()).path), t / "data.npz",
        "array 'x' cannot be read (Bad CRC-32"),
    "npz-member-not-npy": lambda t: _raw_npz(
        t, {"x.npy": b"just text", "y.npy": _npy_bytes(_labels())}, "array 'x' cannot be read"),
    "npz-header-lies": lambda t: _raw_npz(
        t, {"x.npy": _header_only((30, 8, 8), "|u1", bytes(10)), "y.npy": _npy_bytes(_labels())},
        "cannot read its arrays"),
    "npz-negative-shape": lambda t: _raw_npz(
        t, {"x.npy": _header_only((-30, 8, 8), "|u1"), "y.npy": _npy_bytes(_labels())},
        "negative shape"),
    # --- npz: arrays missing or of the wrong kind
    "npz-no-y": lambda t: _npz(t, "no array 'y'", x=_images()),
    "npz-no-x": lambda t: _npz(t, "no array 'x'", images=_images(), y=_labels()),
    "npz-x-object": lambda t: _npz(t, "holds Python objects", x=np.array([[1], "a"], dtype=object),
                                   y=_labels()),
    "npz-y-object": lambda t: _npz(t, "holds Python objects", x=_images(),
                                   y=np.array(list(_labels()), dtype=object)),
    "npz-x-2d": lambda t: _npz(t, "'x' must be (N,H,W) or (N,C,H,W)", x=_images(shape=(8,)),
                               y=_labels()),
    "npz-x-5d": lambda t: _npz(t, "'x' must be (N,H,W) or (N,C,H,W)",
                               x=_images(shape=(1, 1, 8, 8)), y=_labels()),
    "npz-x-empty": lambda t: _npz(t, "zero-size dimension", x=np.zeros((0, 8, 8), np.uint8),
                                  y=np.zeros(0, np.int64)),
    "npz-x-zero-height": lambda t: _npz(t, "zero-size dimension", x=np.zeros((30, 0, 8), np.uint8),
                                        y=_labels()),
    "npz-x-int32": lambda t: _npz(t, "must be uint8 or float", x=_images().astype(np.int32),
                                  y=_labels()),
    "npz-x-bool": lambda t: _npz(t, "must be uint8 or float", x=_images() > 128, y=_labels()),
    "npz-x-channels-last": lambda t: _npz(t, "looks channels-last", x=_images(shape=(8, 8, 3)),
                                          y=_labels()),
    "npz-y-short": lambda t: _npz(t, "'y' must be (N,) with N=30", x=_images(), y=_labels()[:-1]),
    "npz-y-2d": lambda t: _npz(t, "'y' must be (N,) with N=30", x=_images(),
                               y=_labels().reshape(30, 1)),
    "npz-y-float": lambda t: _npz(t, "integer labels, got dtype float64", x=_images(),
                                  y=_labels().astype(float)),
    "npz-classes-2d": lambda t: _npz(t, "'classes' must be 1-D", x=_images(), y=_labels(),
                                     classes=np.array([["a", "b", "c"]])),
    # --- npz: values
    "npz-x-nan": lambda t: _npz(t, "NaN or infinite values, e.g. x[0, 1, 2] = nan",
                                x=np.where(np.arange(64).reshape(1, 8, 8) == 10, np.nan,
                                           _images().astype(np.float32)), y=_labels()),
    "npz-x-inf": lambda t: _npz(t, "NaN or infinite values", y=_labels(),
                                x=np.full((30, 8, 8), np.inf, np.float32)),
    "npz-x-1e35": lambda t: _npz(t, "values up to 1e+35 in magnitude", y=_labels(),
                                 x=np.full((30, 8, 8), 1e35, np.float32)),
    "npz-x-float64-beyond-float32": lambda t: _npz(t, "values up to 1e+300", y=_labels(),
                                                   x=np.full((30, 8, 8), -1e300)),
    # --- npz: labels
    "npz-y-negative": lambda t: _npz(t, "must be >= 0 (class indices 0..K-1), got -1",
                                     x=_images(), y=_labels() - 1),
    "npz-y-2**40": lambda t: _npz(t, "go up to 1099511627776 but there are only 30 samples",
                                  x=_images(), y=np.where(_labels() == 2, 2**40, _labels())),
    "npz-y-beyond-classes": lambda t: _npz(t, "'classes' names 3 classes but 'y' has label 5",
                                           x=_images(), y=_labels() * 2 + 1,
                                           classes=np.array(["a", "b", "c"])),
    "npz-one-class": lambda t: _npz(t, "only one class ('0')", x=_images(),
                                    y=np.zeros(30, np.int64)),
    "npz-class-without-samples": lambda t: _npz(t, "class '1' (label 1) has no samples",
                                                x=_images(), y=np.repeat([0, 2, 3], 10)),
    "npz-single-sample-class": lambda t: _npz(t, "class 'c' (label 2) has only 1 sample(s)",
                                              x=_images(), y=np.repeat([0, 1, 2], [15, 14, 1]),
                                              classes=np.array(["a", "b", "c"])),
    "npz-duplicate-classes": lambda t: _npz(t, "names 'a' more than once", x=_images(),
                                            y=_labels(), classes=np.array(["a", "b", "a"])),
    # --- npz: sizes, checked before anything is allocated
    "npz-header-declares-6GiB": lambda t: _raw_npz(
        t, {"x.npy": _header_only((3000, 512, 512)), "y.npy": _npy_bytes(np.zeros(3000, int))},
        "3000x512x512 float64) needs 5.9 GiB"),
    "npz-zip-bomb": _zip_bomb,
    "npz-float32-copy-too-big": lambda t: _npz(t, "array 'x' as float32 (64x64x64) needs 1.0 MiB",
                                               {"max_bytes": 2**19}, x=_images(64, (64, 64)),
                                               y=np.repeat(np.arange(2), 32)),
    "npz-resize-too-big": lambda t: _npz(t, "30 images of 1x1024x1024 as float32",
                                         {"image_size": 1024, "max_bytes": 2**20},
                                         x=_images(), y=_labels()),
    # --- image folders
    "folder-missing": lambda t: _imagefolder(t / "none", t / "none", "does not exist"),
    "folder-is-a-file": lambda t: _imagefolder(_file(t, "x.png", b""), t / "x.png", "is a file"),
    "folder-loose-images": _loose_images,
    "folder-no-classes": lambda t: _imagefolder(t, t, "has no class folders"),
    "folder-one-class": lambda t: _imagefolder(_folder(t, {"cat": 4}), t / "images",
                                               "only one class folder ('cat')"),
    "folder-empty-class": lambda t: _imagefolder(
        _folder(t, {"cat": 3, "dog": 0}), t / "images" / "dog", "is empty"),
    "folder-only-text-files": _only_text,
    "folder-corrupt-image": _corrupt_image,
    "folder-truncated-png": lambda t: _truncated_image(t, ".png"),
    "folder-truncated-jpeg": lambda t: _truncated_image(t, ".jpg"),
    "folder-decompression-bomb": _bomb_image,
    "folder-mixed-modes": _mixed_modes,
    "folder-16-bit": lambda t: _odd_mode(t, "I;16", ".png"),
    "folder-float-tiff": lambda t: _odd_mode(t, "F", ".tif"),
    "folder-sizes-differ": _sizes_differ,
    "folder-single-image-class": lambda t: _imagefolder(
        _folder(t, {"a": 3, "b": 1}), t / "images" / "b", "has only 1 image(s)"),
    "folder-splits-differ": _differing_splits,
    "folder-val-without-train": _val_without_train,
    "folder-empty-val-class": _empty_val_class,
    "folder-train-too-small-to-draw-val": _train_too_small,
    "folder-over-the-limit": lambda t: _imagefolder(
        _folder(t, {"a": 3, "b": 3}), t / "images", "6 images of 3x512x512 as float32",
        {"image_size": 512, "max_bytes": 2**20}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_data_names_problem_and_file(tmp_path: Path, name: str) -> None:
    case = CASES[name](tmp_path)
    options: dict[str, object] = {"image_size": 16, **case.options}
    with pytest.raises(DataError) as raised:
        load_dataset(case.dataset, path=case.path, val_fraction=0.2, test_fraction=0.2, seed=0,
                     **options)  # type: ignore[arg-type]
    message = str(raised.value)
    assert case.problem in message
    assert str(case.named) in message


def test_corpus_is_large() -> None:
    assert len(CASES) >= 30
