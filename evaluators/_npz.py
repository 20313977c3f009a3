"""The ``.npz`` reader: arrays ``x``, ``y`` and optionally ``classes``, checked before use.

Whatever is wrong with a file raises ``DataError`` naming the file and the problem; nothing
reaches the trainer as an internal error. The ``.npy`` headers are read from the zip members
first, so a small compressed file that would expand to a huge array is refused before anything
is allocated (``data.max_bytes``), and no array is ever unpickled (``allow_pickle=False``).

The rules:

- ``x``: (N,H,W) or (N,C,H,W), uint8 (scale 1/255) or float (scale 1), no zero-size dimension,
  finite, and no value beyond ±1e10 (so float32 statistics stay far from overflow). Any number
  of channels; a 4-D ``x`` shaped like channels-last (N,H,W,C) with C in 1, 3, 4 is refused.
- ``y``: (N,) integer labels that are class indices 0..K-1. Labels are not remapped (a label is
  the model's output index): K is ``len(classes)`` when ``classes`` is given, else ``max(y)+1``,
  which may not exceed N (a label of 2**40 is refused, not turned into 2**40 classes). Every
  class 0..K-1 has at least 3 samples (a stratified 3-way split), so none is left untrained.
- ``classes``: optional, 1-D, one unique name (str, bytes or integer) per class.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from evaluators._data_error import DataError, check_bytes
from evaluators._splits import MIN_PER_CLASS_THREE_WAY, smallest_class

#: The largest magnitude of a float ``x`` value: sums of 2**31 such values, and their
#: squares, stay far below float32's 3.4e38, so the normalisation statistics cannot overflow.
MAX_ABS_VALUE = 1e10
_KEYS = ("x", "y", "classes")
# what numpy, zipfile and zlib raise on a damaged or truncated archive
_READ_ERRORS = (
    OSError, ValueError, TypeError, EOFError, RuntimeError, NotImplementedError, KeyError,
    zipfile.BadZipFile, zlib.error,
)


@dataclass(frozen=True)
class _Header:
    """One array's shape and type, read from its ``.npy`` header."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        """Returns the bytes the array takes in memory."""
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self, key: str) -> str:
        """Returns e.g. ``"array 'x' (3000x512x512 float64)"``."""
        return f"array {key!r} ({'x'.join(map(str, self.shape)) or 'scalar'} {self.dtype})"


def load_npz_arrays(
    path: Path, *, max_bytes: int, image_size: int | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], float]:
    """Returns ``(x float32, y int64, classes, scale)`` of an ``.npz`` file checked against
    the rules of this module.

    Raises:
        DataError: naming the file and what is wrong: missing, not an npz, truncated, an
            array missing, of the wrong shape or type, too large, with NaN/inf or huge values,
            or labels that are not class indices with at least 3 samples each; the size
            checks include the images resized to ``image_size``.
    """
    where = f"data.path: {str(path)!r}"
    if not path.is_file():
        raise DataError(f"data.path: no such file {str(path)!r}; give the path of an .npz file")
    headers, members = _read_headers(path, where)
    _check_headers(headers, members, where, max_bytes)
    if image_size is not None:
        n, c = headers["x"].shape[0], math.prod(headers["x"].shape[1:-2])
        check_bytes(f"{n} images of {c}x{image_size}x{image_size} as float32",
                    n * c * image_size * image_size * 4, max_bytes, where)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in headers}
    except _READ_ERRORS as exc:
        raise DataError(
            f"{where}: cannot read its arrays ({exc}); the file may be truncated or damaged, "
            "write it again with numpy.savez"
        ) from exc
    x = arrays["x"]
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    if x.dtype != np.uint8:
        _check_values(x, where)
    y, classes = _check_labels(arrays["y"], arrays.get("classes"), where)
    return x.astype(np.float32), y, classes, scale


def _read_headers(path: Path, where: str) -> tuple[dict[str, _Header], list[str]]:
    """Returns the headers of the arrays ``x``, ``y``, ``classes`` found, and all array names."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DataError(f"{where} {_not_npz_reason(path)}") from None
    except OSError as exc:
        raise DataError(f"{where}: cannot read the file ({exc})") from exc
    headers = {}
    with archive:
        names = archive.namelist()
        for key in _KEYS:
            member = next((m for m in (f"{key}.npy", key) if m in names), None)
            if member is not None:
                headers[key] = _read_header(archive, member, f"{where}: array {key!r}")
    return headers, sorted(n.removesuffix(".npy") for n in names)


def _not_npz_reason(path: Path) -> str:
    """Returns why a file that is not a zip archive is no ``.npz``."""
    try:
        with path.open("rb") as file:
            head = file.read(6)
    except OSError as exc:
        return f"cannot read the file ({exc})"
    if head == npy_format.MAGIC_PREFIX:
        return ("is a single .npy array, not an .npz archive; save the arrays together with "
                "numpy.savez(path, x=x, y=y)")
    if head.startswith(b"PK"):
        return "is a damaged or truncated zip archive; write it again with numpy.savez"
    return "is not an .npz file (numpy.savez writes a zip archive of .npy arrays)"


def _read_header(archive: zipfile.ZipFile, member: str, where: str) -> _Header:
    """Returns the shape and dtype in one member's ``.npy`` header, reading nothing else."""
    try:
        with archive.open(member) as fp:
            version = npy_format.read_magic(fp)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(fp)
            else:
                raise DataError(
                    f"{where} uses .npy format version {version[0]}.{version[1]}, which this "
                    "reader does not check; save it again with numpy.savez"
                )
    except _READ_ERRORS as exc:
        raise DataError(
            f"{where} cannot be read ({exc}); the file may be damaged or not written by "
            "numpy.savez"
        ) from exc
    if any(d < 0 for d in shape):
        raise DataError(f"{where} has a corrupt header: negative shape {shape}")
    return _Header(shape=tuple(int(d) for d in shape), dtype=np.dtype(dtype))


def _check_headers(
    headers: dict[str, _Header], members: list[str], where: str, max_bytes: int
) -> None:
    """Checks the arrays' shapes, types and sizes before any is loaded.

    Raises:
        DataError: a missing array, a wrong shape or type, or an array over ``max_bytes``.
    """
    for key in ("x", "y"):
        if key not in headers:
            raise DataError(
                f"{where} has no array {key!r} (it has {members}); an npz data set needs "
                "'x' (N,H,W) or (N,C,H,W) and 'y' (N,) labels"
            )
    for key, header in headers.items():
        if header.dtype.hasobject:
            raise DataError(
                f"{where}: {header.describe(key)} holds Python objects, which are not loaded "
                "(unpickling can run code); store numbers in 'x' and 'y' and strings in 'classes'"
            )
    x, y = headers["x"], headers["y"]
    if len(x.shape) not in (3, 4):
        raise DataError(f"{where}: array 'x' must be (N,H,W) or (N,C,H,W), got shape {x.shape}")
    if 0 in x.shape:
        raise DataError(f"{where}: array 'x' is empty: shape {x.shape} has a zero-size dimension")
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{where}: array 'x' must be uint8 or float, got dtype {x.dtype}")
    if len(x.shape) == 4 and x.shape[3] in (1, 3, 4) and x.shape[1] > 4:
        raise DataError(
            f"{where}: array 'x' of shape {x.shape} looks channels-last (N,H,W,C); it must be "
            "(N,C,H,W): save x.transpose(0, 3, 1, 2)"
        )
    if len(y.shape) != 1 or y.shape[0] != x.shape[0]:
        raise DataError(
            f"{where}: array 'y' must be (N,) with N={x.shape[0]} like 'x', got shape {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: array 'y' must hold integer labels, got dtype {y.dtype}")
    classes = headers.get("classes")
    if classes is not None and (len(classes.shape) != 1 or classes.dtype.kind not in "USiu"):
        raise DataError(
            f"{where}: array 'classes' must be 1-D names (str, bytes or integers), one per "
            f"class, got shape {classes.shape} dtype {classes.dtype}"
        )
    for key, header in headers.items():
        check_bytes(header.describe(key), header.nbytes, max_bytes, where)
    check_bytes(f"array 'x' as float32 ({'x'.join(map(str, x.shape))})",
                math.prod(x.shape) * 4, max_bytes, where)


def _check_values(x: np.ndarray, where: str) -> None:
    """Checks that float pixels are finite and small enough for float32 statistics.

    Raises:
        DataError: a NaN or infinite value (one is named), or a value beyond ``MAX_ABS_VALUE``.
    """
    low, high = x.min(), x.max()  # NaN propagates: both finite means every value is
    if not (np.isfinite(low) and np.isfinite(high)):
        first = np.unravel_index(int(np.argmax(~np.isfinite(x))), x.shape)
        index = ", ".join(str(int(i)) for i in first)
        raise DataError(
            f"{where}: array 'x' contains NaN or infinite values, e.g. x[{index}] = {x[first]}"
        )
    peak = max(abs(float(low)), abs(float(high)))
    if peak > MAX_ABS_VALUE:
        raise DataError(
            f"{where}: array 'x' has values up to {peak:.3g} in magnitude, beyond the "
            f"±{MAX_ABS_VALUE:.0e} whose mean and variance float32 can hold; rescale the "
            "pixel values (e.g. to [0, 1])"
        )


def _check_labels(
    y: np.ndarray, names: np.ndarray | None, where: str
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Returns ``(y int64, class names)`` once the labels are class indices 0..K-1 with at
    least 3 samples per class.

    Raises:
        DataError: a negative or out-of-range label, duplicate class names, one class only,
            or a class with too few samples (each named).
    """
    n, low, high = len(y), int(y.min()), int(y.max())
    if low < 0:
        raise DataError(
            f"{where}: labels in 'y' must be >= 0 (class indices 0..K-1), got {low} at "
            f"y[{int(np.argmin(y))}]"
        )
    if names is not None:
        classes = tuple(_name(c) for c in names.tolist())
        duplicate = next((c for i, c in enumerate(classes) if c in classes[:i]), None)
        if duplicate is not None:
            raise DataError(f"{where}: array 'classes' names {duplicate!r} more than once")
        if high >= len(classes):
            raise DataError(
                f"{where}: 'classes' names {len(classes)} classes but 'y' has label {high}; "
                f"labels index 'classes' (0..{len(classes) - 1})"
            )
    else:
        if high >= n:
            raise DataError(
                f"{where}: labels in 'y' go up to {high} but there are only {n} samples; labels "
                "must be class indices 0..K-1 (renumber them with numpy.unique(y, "
                "return_inverse=True))"
            )
        classes = tuple(str(i) for i in range(high + 1))
    if len(classes) < 2:
        raise DataError(
            f"{where}: 'y' has only one class ({classes[0]!r}); classification needs at least two"
        )
    labels = y.astype(np.int64)
    label, count = smallest_class(labels, len(classes))
    if count == 0:
        raise DataError(
            f"{where}: class {classes[label]!r} (label {label}) has no samples in 'y'; labels "
            f"must be 0..{len(classes) - 1} with every class present"
        )
    if count < MIN_PER_CLASS_THREE_WAY:
        raise DataError(
            f"{where}: class {classes[label]!r} (label {label}) has only {count} sample(s); a "
            f"stratified train/val/test split needs at least {MIN_PER_CLASS_THREE_WAY} per class"
        )
    return labels, classes


def _name(value: object) -> str:
    """Returns a class name as text (bytes decoded as UTF-8)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
