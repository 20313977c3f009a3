"""Datasets: scikit-learn's bundled digits, user-supplied ``.npz`` arrays and image folders.

Each becomes a ``DataSplits``: stratified, seeded train / val / test tensors (or the splits an
image folder gives), normalised with statistics from the training split only. Nothing is
downloaded. The readers check the user's files (``_npz.py``, ``_imagefolder.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from evaluators._data_error import DEFAULT_MAX_BYTES, DataError, check_bytes
from evaluators._imagefolder import load_image_folder
from evaluators._npz import load_npz_arrays
from evaluators._splits import Indices, complete_splits, split_indices

logger = logging.getLogger(__name__)

# scikit-learn's digits are 8x8 images with integer intensities 0..16.
_DIGITS_MAX_VALUE = 16.0

#: The values of ``data.dataset``.
DATASETS = ("digits", "npz", "imagefolder")


@dataclass(frozen=True)
class Normalization:
    """The preprocessing that maps raw pixels to model inputs: ``(raw * scale - mean) / std``.

    ``scale`` brings raw values to [0, 1] (1/255 for uint8, 1/16 for digits, 1 for floats);
    ``mean`` and ``std`` are per channel, computed on the training split after scaling and
    resizing.
    """

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, float | list[float]]:
        """Returns a JSON-ready dict with keys ``scale``, ``mean`` and ``std``."""
        return {"scale": self.scale, "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class DataSplits:
    """Normalised tensors of the three splits and what a model needs to know about them."""

    x_train: torch.Tensor  # (N, C, H, W) float32, normalised
    y_train: torch.Tensor  # (N,) int64
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    normalization: Normalization

    @property
    def num_classes(self) -> int:
        """Returns the number of classes."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Returns the model input shape for batch size 1, ``(1, C, H, W)``."""
        _, c, h, w = self.x_train.shape
        return (1, int(c), int(h), int(w))

    def loader(
        self,
        split: Literal["train", "val", "test"],
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
    ) -> DataLoader[tuple[torch.Tensor, ...]]:
        """Returns a DataLoader over one split; shuffling is seeded by ``seed``."""
        x, y = {
            "train": (self.x_train, self.y_train),
            "val": (self.x_val, self.y_val),
            "test": (self.x_test, self.y_test),
        }[split]
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=generator
        )

    def calibration_inputs(self, batches: int, batch_size: int, *, seed: int = 0) -> torch.Tensor:
        """Returns ``batches`` seeded, shuffled batches of training inputs, concatenated: the
        calibration set of INT8 quantisation, the same wherever it is drawn for a seed."""
        loader = self.loader("train", batch_size, shuffle=True, seed=seed)
        return torch.cat([x for (x, _), _ in zip(loader, range(batches))])

    def summary(self) -> dict[str, object]:
        """Returns the split sizes, classes, input shape and normalisation as a JSON-ready dict."""
        return {
            "train": int(self.y_train.numel()),
            "val": int(self.y_val.numel()),
            "test": int(self.y_test.numel()),
            "classes": list(self.classes),
            "input_shape": list(self.input_shape),
            "normalization": self.normalization.to_dict(),
        }


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray, tuple[str, ...], float]:
    """Returns scikit-learn's bundled digits as ``(x (N,8,8) float, y, classes, scale)``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)
    y = digits.target.astype(np.int64)
    return x, y, tuple(str(i) for i in range(10)), 1.0 / _DIGITS_MAX_VALUE


def build_splits(
    x: np.ndarray,
    y: np.ndarray,
    classes: tuple[str, ...],
    scale: float,
    *,
    image_size: int | None,
    indices: Indices,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DataSplits:
    """Returns the ``(train, val, test)`` ``indices`` of ``x``/``y`` as splits, resized to
    ``image_size`` and normalised with training-split statistics.

    Raises:
        DataError: the resized images would be over ``max_bytes``, or the statistics overflow.
    """
    if x.ndim == 3:
        x = x[:, None, :, :]  # (N, H, W) -> (N, 1, H, W)
    train_idx, val_idx, test_idx = indices
    if image_size is not None:
        n, c = x.shape[:2]
        check_bytes(f"{n} images of {c}x{image_size}x{image_size} as float32",
                    n * c * image_size * image_size * 4, max_bytes, "data.image_size")
    tensor = torch.from_numpy(x * scale)
    if image_size is not None and tuple(tensor.shape[-2:]) != (image_size, image_size):
        tensor = F.interpolate(
            tensor, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
    train = tensor[train_idx]
    mean = train.mean(dim=(0, 2, 3))
    std = train.std(dim=(0, 2, 3)).clamp_min(1e-6)
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
        raise DataError(
            "data: the training images' mean or standard deviation overflows float32; rescale "
            "the pixel values (e.g. to [0, 1])"
        )
    normalised = (tensor - mean[None, :, None, None]) / std[None, :, None, None]
    labels = torch.from_numpy(y)
    logger.info(
        "data: %d train, %d val, %d test samples, %d classes, input %s",
        len(train_idx), len(val_idx), len(test_idx), len(classes), tuple(tensor.shape[1:]),
    )
    return DataSplits(
        x_train=normalised[train_idx].contiguous(),
        y_train=labels[train_idx],
        x_val=normalised[val_idx].contiguous(),
        y_val=labels[val_idx],
        x_test=normalised[test_idx].contiguous(),
        y_test=labels[test_idx],
        classes=classes,
        normalization=Normalization(
            scale=scale,
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
        ),
    )


def load_dataset(
    dataset: str,
    *,
    path: str | Path | None,
    image_size: int | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DataSplits:
    """Returns the splits of a named data set: ``digits``, or ``npz`` / ``imagefolder`` read
    from ``path`` (a ``str`` or ``Path``), no array larger than ``max_bytes``.

    Raises:
        DataError: unknown data set, missing path, or a file or folder that cannot be used
            (the message names it and the problem).
    """
    if dataset not in DATASETS:
        raise DataError(f"data.dataset: must be one of {list(DATASETS)}, got {dataset!r}")
    given: dict[str, np.ndarray] = {}
    if dataset == "digits":
        x, y, classes, scale = load_digits_arrays()
    elif path is None:
        raise DataError(f"data.path: required when data.dataset is {dataset!r}")
    elif dataset == "npz":
        x, y, classes, scale = load_npz_arrays(Path(path), max_bytes=max_bytes,
                                               image_size=image_size)
    else:
        folder = load_image_folder(Path(path), image_size=image_size, max_bytes=max_bytes)
        x, y, classes, scale, given = folder.x, folder.y, folder.classes, 1.0 / 255.0, folder.given
    if given:
        indices = complete_splits(
            y, given, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        )
    else:
        indices = split_indices(
            y, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        )
    return build_splits(x, y, classes, scale, image_size=image_size, indices=indices,
                        max_bytes=max_bytes)
