"""The image-folder reader: ``DIR/<class>/*.png`` read with Pillow, as users keep images.

The rules:

- Classes are the sorted names of the class folders; images may sit in subfolders of a class
  folder. Hidden entries and files without an image suffix (``IMAGE_SUFFIXES``) are skipped.
  At least two classes, and no class folder without images.
- With ``DIR/train`` (then required), ``DIR/val`` and ``DIR/test``, each split is the images of
  its folder, and every split has the same class folders. A missing val or test split is drawn
  from train (stratified, seeded, its fraction of the train folder). Without split folders the
  one folder is split like npz data.
- Grayscale images (modes 1, L, LA) give 1 channel, colour images (RGB, RGBA, P, PA, CMYK,
  YCbCr, ...) 3: alpha is dropped (not composited), palette images become their colours. The
  images must all be grayscale or all colour. 16-bit and float images (I;16, I, F) are refused.
- Multi-frame files (GIF, TIFF) give their first frame; EXIF orientation is not applied.
- Each image is resized to ``image_size`` x ``image_size`` by bilinear interpolation, as npz data
  is; without ``image_size`` all images must have the same size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evaluators._data_error import DataError, check_bytes
from evaluators._splits import MIN_PER_CLASS_THREE_WAY, MIN_PER_CLASS_TWO_WAY

logger = logging.getLogger(__name__)

#: Suffixes read as images (compared in lower case); other files are skipped.
IMAGE_SUFFIXES = frozenset({
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
    ".pnm",
})
SPLITS = ("train", "val", "test")
_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
_COLOUR_MODES = frozenset({
    "RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV",
})


@dataclass(frozen=True)
class ImageFolder:
    """The images of a folder, resized, with their labels and any splits given as folders."""

    x: np.ndarray  # (N, C, S, S) float32, raw 0..255
    y: np.ndarray  # (N,) int64
    classes: tuple[str, ...]
    given: dict[str, np.ndarray] = field(default_factory=dict)  # split -> indices; {}: none


@dataclass(frozen=True)
class _Image:
    path: Path
    label: int
    mode: str
    size: tuple[int, int]  # (W, H), as Pillow gives it


def load_image_folder(root: Path, *, image_size: int | None, max_bytes: int) -> ImageFolder:
    """Returns the images under ``root`` read by the rules of this module, scale 0..255.

    Raises:
        DataError: naming the folder or file: no such folder, no or one class folder, an
            empty class folder, class folders that differ between splits, too few images
            of a class to split, an unreadable image, mixed grayscale and colour, a 16-bit
            image, differing sizes without ``image_size``, or images over ``max_bytes``.
    """
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(
            f"data.path: {str(root)!r} {what}; data.dataset 'imagefolder' needs a folder with "
            "one subfolder of images per class"
        )
    splits = _split_folders(root)
    files = {split: _class_files(folder) for split, folder in splits.items()}
    _check_classes(splits, files)
    classes = tuple(next(iter(files.values())))
    images: list[_Image] = []
    given: dict[str, np.ndarray] = {}
    for split, by_class in files.items():
        start = len(images)
        for label, name in enumerate(classes):
            images += [_probe(path, label) for path in by_class[name]]
        given[split] = np.arange(start, len(images))
    channels, (height, width) = _check_images(images, image_size)
    n = len(images)
    check_bytes(f"{n} images of {channels}x{height}x{width} as float32",
                n * channels * height * width * 4, max_bytes, f"data.path: {str(root)!r}")
    x = np.empty((n, channels, height, width), dtype=np.float32)
    for i, image in enumerate(images):
        x[i] = _read(image, channels == 1, (height, width))
    y = np.array([image.label for image in images], dtype=np.int64)
    logger.info("data: %d images in %d classes read from %s", len(images), len(classes), root)
    return ImageFolder(x=x, y=y, classes=classes, given=given if len(splits) > 1 else {})


def _split_folders(root: Path) -> dict[str, Path]:
    """Returns ``{"train": DIR/train, ...}`` for the split folders, or ``{"all": DIR}``."""
    names = {p.name for p in _entries(root) if p.is_dir()}
    found = [s for s in SPLITS if s in names]
    if not found:
        return {"all": root}
    ignored = sorted(names - set(SPLITS))
    if ignored:
        logger.warning("data: %s has split folders; its folders %s are ignored", root, ignored)
    if "train" not in found:
        raise DataError(
            f"data.path: {str(root)!r} has {' and '.join(found)} but no train folder; when "
            "splits are given as folders, train is required (val and test are drawn from it "
            "when missing)"
        )
    return {split: root / split for split in found}


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """Returns each class folder's name with its sorted image files.

    Raises:
        DataError: no class folder, or a class folder without images.
    """
    class_dirs = sorted((p for p in _entries(folder) if p.is_dir()), key=lambda p: p.name)
    if not class_dirs:
        loose = sum(p.suffix.lower() in IMAGE_SUFFIXES for p in _entries(folder))
        hint = f" (its {loose} images must go in one subfolder per class)" if loose else ""
        raise DataError(
            f"data.path: {str(folder)!r} has no class folders{hint}; expected "
            f"{str(folder / '<class>' / '*.png')!r}"
        )
    result = {}
    for class_dir in class_dirs:
        try:
            found = class_dir.rglob("*")
            paths = sorted(p for p in found if p.is_file() and not _hidden(p, class_dir))
        except OSError as exc:
            raise DataError(f"data.path: cannot list {str(class_dir)!r} ({exc})") from exc
        images = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            skipped = f" ({len(paths)} other files skipped)" if paths else ""
            raise DataError(
                f"data.path: class folder {str(class_dir)!r} is empty: it has no images{skipped}; "
                f"image files end in {sorted(IMAGE_SUFFIXES)}"
            )
        result[class_dir.name] = images
    return result


def _hidden(path: Path, under: Path) -> bool:
    """Returns whether ``path`` or a folder between it and ``under`` is hidden (``.name``)."""
    return any(part.startswith(".") for part in path.relative_to(under).parts)


def _entries(folder: Path) -> list[Path]:
    """Returns the entries of ``folder`` that are not hidden."""
    try:
        return [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError as exc:
        raise DataError(f"data.path: cannot list {str(folder)!r} ({exc})") from exc


def _check_classes(splits: dict[str, Path], files: dict[str, dict[str, list[Path]]]) -> None:
    """Checks there are two classes or more, that every split has the same ones, and that
    each has enough images to draw the splits not given.

    Raises:
        DataError: one class only, the class folders of a split differ from train's, or a
            class has too few images.
    """
    first = next(iter(splits))
    classes = set(files[first])
    if len(classes) < 2:
        raise DataError(
            f"data.path: {str(splits[first])!r} has only one class folder ({min(classes)!r}); "
            "classification needs at least two"
        )
    for split, by_class in files.items():
        if set(by_class) != classes:
            lacks, extra = sorted(classes - set(by_class)), sorted(set(by_class) - classes)
            raise DataError(
                f"data.path: class folders differ between splits: {str(splits[split])!r} lacks "
                f"{lacks} and has extra {extra} compared with {str(splits[first])!r}"
            )
    _check_counts(splits, files)


def _check_counts(splits: dict[str, Path], files: dict[str, dict[str, list[Path]]]) -> None:
    """Checks that the first (or only) folder has enough images of each class to draw the
    splits not given from it: 3 for val and test, 2 for one of them, 1 for none.

    Raises:
        DataError: naming the class folder with too few images.
    """
    first = next(iter(splits))
    need = {1: MIN_PER_CLASS_THREE_WAY, 2: MIN_PER_CLASS_TWO_WAY, 3: 1}[len(splits)]
    for name, paths in files[first].items():
        if len(paths) < need:
            drawn = "train/val/test" if len(splits) == 1 else "val or test"
            raise DataError(
                f"data.path: class folder {str(splits[first] / name)!r} has only {len(paths)} "
                f"image(s); drawing stratified {drawn} splits from it needs at least {need} "
                "per class"
            )


def _probe(path: Path, label: int) -> _Image:
    """Returns an image's mode and size, read from its header only."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return _Image(path=path, label=label, mode=image.mode, size=image.size)
    except MemoryError:
        raise
    except Exception as exc:  # Pillow's decoders raise many types on damaged files
        raise DataError(f"data.path: cannot read image {str(path)!r} ({exc})") from exc


def _check_images(
    images: list[_Image], image_size: int | None
) -> tuple[int, tuple[int, int]]:
    """Returns ``(channels, (H, W))`` of the images once read.

    Raises:
        DataError: a 16-bit or float image, grayscale and colour mixed, or differing sizes
            without ``image_size``.
    """
    for image in images:
        if image.mode not in _GRAY_MODES | _COLOUR_MODES:
            raise DataError(
                f"data.path: image {str(image.path)!r} has mode {image.mode} (16-bit, float or "
                "unknown pixels), which is not read; save it as 8-bit grayscale (L) or RGB"
            )
    gray = next((i for i in images if i.mode in _GRAY_MODES), None)
    colour = next((i for i in images if i.mode in _COLOUR_MODES), None)
    if gray is not None and colour is not None:
        raise DataError(
            f"data.path: images mix grayscale and colour: {str(gray.path)!r} is {gray.mode}, "
            f"{str(colour.path)!r} is {colour.mode}; convert them all to one mode, e.g. "
            "Image.open(f).convert('RGB').save(f)"
        )
    if image_size is not None:
        return (1 if gray else 3), (image_size, image_size)
    other = next((i for i in images if i.size != images[0].size), None)
    if other is not None:
        raise DataError(
            f"data.path: with data.image_size null all images must have the same size, but "
            f"{str(images[0].path)!r} is {images[0].size[0]}x{images[0].size[1]} and "
            f"{str(other.path)!r} is {other.size[0]}x{other.size[1]}; set data.image_size"
        )
    width, height = images[0].size
    return (1 if gray else 3), (height, width)


def _read(image: _Image, gray: bool, size: tuple[int, int]) -> np.ndarray:
    """Returns one image as (C, H, W) float32 in 0..255, resized to ``size`` like npz data."""
    from PIL import Image

    try:
        with Image.open(image.path) as opened:
            if gray:
                converted = opened if opened.mode == "L" else opened.convert("L")
            elif opened.mode in ("P", "PA"):  # through RGBA: palette transparency stays valid
                converted = opened.convert("RGBA").convert("RGB")
            else:
                converted = opened if opened.mode == "RGB" else opened.convert("RGB")
            pixels = np.asarray(converted, dtype=np.float32)
    except MemoryError:
        raise
    except Exception as exc:  # a truncated file fails only here, when decoded
        raise DataError(f"data.path: cannot read image {str(image.path)!r} ({exc})") from exc
    chw = pixels[None] if gray else pixels.transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)
    if chw.shape[1:] == size:
        return chw
    resized = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(chw))[None], size=size,
        mode="bilinear", align_corners=False,
    )
    return resized[0].numpy()
