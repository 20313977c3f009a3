"""Stratified, seeded train / val / test indices, drawn or (partly) given by the user."""

from __future__ import annotations

import numpy as np

from evaluators._data_error import DataError

#: The fewest samples a class needs for a stratified train / val / test split: each of the
#: two draws needs two of a class in what it splits, and training keeps at least one.
MIN_PER_CLASS_THREE_WAY = 3
#: The fewest samples a class needs when one holdout split is drawn from training data.
MIN_PER_CLASS_TWO_WAY = 2

Indices = tuple[np.ndarray, np.ndarray, np.ndarray]


def smallest_class(y: np.ndarray, num_classes: int) -> tuple[int, int]:
    """Returns ``(label, count)`` of the least populated class of labels ``y`` in 0..K-1."""
    counts = np.bincount(y, minlength=num_classes)
    label = int(np.argmin(counts))
    return label, int(counts[label])


def split_indices(
    y: np.ndarray, *, val_fraction: float, test_fraction: float, seed: int
) -> Indices:
    """Returns stratified, seeded ``(train, val, test)`` indices into ``y``.

    Raises:
        DataError: a class has too few samples to stratify, or the fractions leave no data.
    """
    from sklearn.model_selection import train_test_split  # heavy (SciPy): only where used

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
    return train_idx, val_idx, test_idx


def complete_splits(
    y: np.ndarray,
    given: dict[str, np.ndarray],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> Indices:
    """Returns ``(train, val, test)`` indices: those in ``given`` as they are, the missing
    ones drawn from ``given["train"]`` (stratified, seeded, each fraction of that split).

    Raises:
        DataError: the training split has too few samples of a class to draw from.
    """
    from sklearn.model_selection import train_test_split

    train = given["train"]
    if "val" in given and "test" in given:
        return train, given["val"], given["test"]
    if "val" not in given and "test" not in given:
        t, v, s = split_indices(
            y[train], val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        )
        return train[t], train[v], train[s]
    missing = "val" if "val" not in given else "test"
    fraction = val_fraction if missing == "val" else test_fraction
    try:
        kept, drawn = train_test_split(
            train, test_size=fraction, stratify=y[train], random_state=seed
        )
    except ValueError as exc:
        raise DataError(
            f"data: cannot draw a stratified {missing} split ({missing}_fraction={fraction}) "
            f"from {len(train)} training samples ({exc})"
        ) from exc
    if missing == "val":
        return kept, drawn, given["test"]
    return kept, given["val"], drawn
