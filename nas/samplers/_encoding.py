"""Archs as rows of choice indices, their numeric encoding, and the pool of candidates."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

#: A feature function: one candidate's params -> its extra numbers.
Features = Callable[[dict[str, Any]], Sequence[float]]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class ChoiceEncoder:
    """Turns rows of choice indices into the vectors a surrogate learns from.

    Each choice gives a one-hot block; a choice whose values are all numbers also gives
    its value scaled to [0, 1] (an order the one-hot block cannot see); choices that share
    one tuple of values (the edges of a cell, say) give how often each value occurs among
    them; ``features`` (declared by the search space) add their own numbers as they are.

    Args:
        choices: The named categorical choices, in a fixed order.
        features: Extra structural features of one candidate, or None.
    """

    def __init__(self, choices: Mapping[str, Sequence[Any]], features: Features | None = None) -> None:
        self.names = list(choices)
        self.values = [tuple(v) for v in choices.values()]
        self.features = features
        self._groups: list[tuple[list[int], int]] = []
        by_values: dict[tuple[Any, ...], list[int]] = {}
        for column, values in enumerate(self.values):
            by_values.setdefault(values, []).append(column)
        self._groups = [(columns, len(values)) for values, columns in by_values.items()
                        if len(columns) > 1 and len(values) > 1]

    def params(self, row: np.ndarray) -> dict[str, Any]:
        """Returns the params dict of one row of indices."""
        return {name: self.values[j][int(row[j])] for j, name in enumerate(self.names)}

    def rows(self, params: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Returns the index rows of ``params``; a value not among the choices raises
        ValueError."""
        lookup = [{value: i for i, value in enumerate(values)} for values in self.values]
        out = np.empty((len(params), len(self.names)), dtype=np.int64)
        for i, p in enumerate(params):
            for j, name in enumerate(self.names):
                out[i, j] = lookup[j][p[name]]
        return out

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """Returns the ``(n, d)`` float encoding of index rows ``(n, k)``."""
        return self._encode(rows)[0]

    def column_groups(self, rows: np.ndarray) -> list[list[int]]:
        """Returns the columns of ``encode(rows)`` that belong together: one group per
        choice's one-hot block, one per other column. A kernel gives each group one length
        scale, so a choice counts as one input however many values it has."""
        return self._encode(rows[:1])[1]

    def _encode(self, rows: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
        blocks: list[np.ndarray] = []
        groups: list[list[int]] = []
        width = 0

        def add(block: np.ndarray, together: bool) -> None:
            nonlocal width
            blocks.append(block)
            columns = list(range(width, width + block.shape[1]))
            groups.extend([columns] if together else [[c] for c in columns])
            width += block.shape[1]

        for j, values in enumerate(self.values):
            if len(values) < 2:
                continue
            add(np.eye(len(values))[rows[:, j]], together=True)
            if all(_is_number(v) for v in values):
                numbers = np.asarray(values, dtype=float)
                span = numbers.max() - numbers.min()
                if span > 0:
                    add(((numbers[rows[:, j]] - numbers.min()) / span)[:, None], together=False)
        for columns, n_values in self._groups:
            counts = np.stack([(rows[:, columns] == v).sum(axis=1) for v in range(n_values)], axis=1)
            add(counts / len(columns), together=False)
        if self.features is not None and len(rows):
            extra = np.array([list(self.features(self.params(r))) for r in rows], dtype=float)
            if extra.ndim == 2 and extra.shape[1]:
                add(extra, together=False)
        if not blocks:
            return np.zeros((len(rows), 0)), []
        return np.concatenate(blocks, axis=1), groups


def row_keys(rows: np.ndarray) -> list[bytes]:
    """Returns one hashable key per index row."""
    return [r.tobytes() for r in np.ascontiguousarray(rows, dtype=np.int64)]


class CandidatePool:
    """The archs a sampler chooses among: the whole space when it has at most
    ``max_enumerate`` archs, otherwise ``size`` random archs plus, at each step, every
    single-choice change of the archs the caller names (the current front).

    Args:
        sizes: How many values each choice has.
        max_enumerate: The largest space enumerated whole.
        size: How many random archs a larger space's pool starts with.
        seed: Seeds the random part, so one seed gives one pool.
        canonical: Maps index rows to the rows of the archs they run (for spaces where
            several choice combinations are one network); duplicates are then dropped.
    """

    def __init__(self, sizes: Sequence[int], *, max_enumerate: int, size: int, seed: int | None,
                 canonical: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.sizes = [int(s) for s in sizes]
        self.space_size = math.prod(self.sizes)
        self.enumerated = self.space_size <= max_enumerate
        if self.enumerated:
            rows = np.array(list(itertools.product(*[range(s) for s in self.sizes])), dtype=np.int64)
        else:
            rng = np.random.default_rng(seed)
            draws = np.stack([rng.integers(0, s, size=2 * size) for s in self.sizes], axis=1)
            _, first = np.unique(draws, axis=0, return_index=True)
            rows = draws[np.sort(first)][:size]
        self.canonical = canonical
        rows = self._distinct(rows.reshape(len(rows), len(self.sizes)), set())
        self.rows = rows
        self._keys = set(row_keys(self.rows))

    def _distinct(self, rows: np.ndarray, known: set[bytes]) -> np.ndarray:
        """Returns ``rows`` canonical, without duplicates or rows in ``known``, in order."""
        if self.canonical is not None and len(rows):
            rows = self.canonical(rows)
        keep, seen = [], set(known)
        for i, key in enumerate(row_keys(rows)):
            if key not in seen:
                seen.add(key)
                keep.append(i)
        return rows[keep]

    def neighbours(self, rows: np.ndarray) -> np.ndarray:
        """Returns every single-choice change of ``rows`` that is not in the pool yet, and
        adds them to it (nothing when the pool is the whole space)."""
        if self.enumerated or not len(rows):
            return np.zeros((0, len(self.sizes)), dtype=np.int64)
        changes = []
        for row in rows:
            for j, size in enumerate(self.sizes):
                for v in range(size):
                    if v != row[j]:
                        changed = row.copy()
                        changed[j] = v
                        changes.append(changed)
        new = self._distinct(np.array(changes, dtype=np.int64).reshape(-1, len(self.sizes)),
                             self._keys)
        self._keys.update(row_keys(new))
        self.rows = np.concatenate([self.rows, new])
        return new
