"""Datasets: scikit-learn's bundled digits and user-supplied ``.npz`` arrays.

Both become a ``DataSplits``: stratified, seeded train / val / test tensors, normalised with
statistics from the training split only. Nothing is downloaded.
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

logger = logging.getLogger(__name__)

# scikit-learn's digits are 8x8 images with integer intensities 0..16.
_DIGITS_MAX_VALUE = 16.0


class DataError(ValueError):
    """A data set that cannot be loaded or split as configured."""


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


def load_npz_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], float]:
    """Returns ``(x, y, classes, scale)`` from an ``.npz`` file with arrays ``x``, ``y``
    and optionally ``classes``.

    ``x`` is (N,H,W) or (N,C,H,W), uint8 (scale 1/255) or float (scale 1); ``y`` is (N,)
    integer labels in 0..K-1.

    Raises:
        DataError: the file is missing or unreadable, or an array has the wrong shape or type.
    """
    if not path.is_file():
        raise DataError(f"data.path: no such file {str(path)!r}; give the path of an .npz file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:  # numpy raises several types for corrupt archives
        raise DataError(f"data.path: {str(path)!r} is not a readable .npz file ({exc})") from exc
    for name in ("x", "y"):
        if name not in arrays:
            raise DataError(
                f"data.path: {str(path)!r} has no array {name!r} (it has {sorted(arrays)}); "
                "an npz data set needs 'x' (N,H,W) or (N,C,H,W) and 'y' (N,) labels"
            )
    x, y = arrays["x"], arrays["y"]
    if x.ndim not in (3, 4):
        raise DataError(f"data.path: array 'x' must be (N,H,W) or (N,C,H,W), got shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(
            f"data.path: array 'y' must be (N,) with N={x.shape[0]} like 'x', got shape {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"data.path: array 'y' must hold integer labels, got dtype {y.dtype}")
    if x.dtype == np.uint8:
        scale = 1.0 / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        scale = 1.0
    else:
        raise DataError(f"data.path: array 'x' must be uint8 or float, got dtype {x.dtype}")
    if not np.isfinite(x.astype(np.float64)).all():
        raise DataError("data.path: array 'x' contains NaN or infinite values")
    labels = np.unique(y)
    if labels.min() < 0:
        raise DataError(f"data.path: labels in 'y' must be >= 0, got {labels.min()}")
    n_classes = int(labels.max()) + 1
    if "classes" in arrays:
        classes = tuple(str(c) for c in arrays["classes"].tolist())
        if len(classes) < n_classes:
            raise DataError(
                f"data.path: 'classes' names {len(classes)} classes but 'y' has labels up to "
                f"{n_classes - 1}"
            )
    else:
        classes = tuple(str(i) for i in range(n_classes))
    return x.astype(np.float32), y.astype(np.int64), classes, scale


def build_splits(
    x: np.ndarray,
    y: np.ndarray,
    classes: tuple[str, ...],
    scale: float,
    *,
    image_size: int | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> DataSplits:
    """Returns stratified, seeded splits of ``x``/``y``, resized to ``image_size`` and
    normalised with training-split statistics.

    Raises:
        DataError: a class has too few samples to stratify, or the fractions leave no data.
    """
    from sklearn.model_selection import train_test_split  # heavy (SciPy): only where used

    if x.ndim == 3:
        x = x[:, None, :, :]  # (N, H, W) -> (N, 1, H, W)
    indices = np.arange(len(y))
    holdout = val_fraction + test_fraction
    try:
        train_idx, rest_idx = train_test_split(
            indices, test_size=holdout, stratify=y, random_state=seed
        )
        val_idx, test_idx = train_test_split(
            rest_idx,
            test_size=test_fraction / holdout,
            stratify=y[rest_idx],
            random_state=seed,
        )
    except ValueError as exc:
        raise DataError(
            f"data: cannot split {len(y)} samples into stratified train/val/test with "
            f"val_fraction={val_fraction} and test_fraction={test_fraction} ({exc})"
        ) from exc

    tensor = torch.from_numpy(x * scale)
    if image_size is not None and tuple(tensor.shape[-2:]) != (image_size, image_size):
        tensor = F.interpolate(
            tensor, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
    train = tensor[train_idx]
    mean = train.mean(dim=(0, 2, 3))
    std = train.std(dim=(0, 2, 3)).clamp_min(1e-6)
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
    path: Path | None,
    image_size: int | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> DataSplits:
    """Returns the splits of a named data set (``digits`` or ``npz`` with ``path``).

    Raises:
        DataError: unknown data set, missing path, or a file that cannot be used.
    """
    if dataset == "digits":
        x, y, classes, scale = load_digits_arrays()
    elif dataset == "npz":
        if path is None:
            raise DataError("data.path: required when data.dataset is 'npz'")
        x, y, classes, scale = load_npz_arrays(path)
    else:
        raise DataError(f"data.dataset: must be one of ['digits', 'npz'], got {dataset!r}")
    return build_splits(
        x, y, classes, scale,
        image_size=image_size, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
    )
