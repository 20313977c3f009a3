"""The architecture value: a frozen, JSON-serialisable set of named choices."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

ArchValue = int | float | str | bool


class Arch(Mapping[str, ArchValue]):
    """An immutable mapping of choice name to value that identifies one subnet.

    Two archs with the same items are equal and hash the same, whatever the order the
    items were given in, so an arch keys caches and de-duplicates trials. Search spaces
    build archs through ``SearchSpace.decode``, which also canonicalises choices that have
    no effect (e.g. the kernel of a block beyond the active depth).

    Example:
        >>> a = Arch({"d0": 2, "k0_0": 3})
        >>> a == Arch.from_json(a.to_json())
        True
    """

    __slots__ = ("_items", "_key")

    def __init__(self, values: Mapping[str, ArchValue]) -> None:
        items: dict[str, ArchValue] = {}
        for name in sorted(values):
            value = values[name]
            if not isinstance(name, str):
                raise TypeError(f"arch choice names must be str, got {name!r}")
            if not isinstance(value, (int, float, str, bool)):
                raise TypeError(
                    f"arch choice {name!r} must be int, float, str or bool, got {value!r}"
                )
            items[name] = value
        self._items = items
        self._key = json.dumps(items, sort_keys=True, separators=(",", ":"))

    def __getitem__(self, name: str) -> ArchValue:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Arch):
            return self._key == other._key
        return NotImplemented

    def __repr__(self) -> str:
        return f"Arch({self._key})"

    def key(self) -> str:
        """Returns the canonical JSON text of the arch (sorted keys, no spaces)."""
        return self._key

    def to_dict(self) -> dict[str, ArchValue]:
        """Returns a plain, mutable copy of the choices."""
        return dict(self._items)

    def to_json(self) -> str:
        """Returns the canonical JSON text of the arch; ``from_json`` inverts it."""
        return self._key

    @classmethod
    def from_dict(cls, values: Mapping[str, ArchValue]) -> Arch:
        """Returns the arch holding ``values``; raises TypeError on non-scalar values."""
        return cls(values)

    @classmethod
    def from_json(cls, text: str) -> Arch:
        """Returns the arch encoded by ``text``; raises ValueError if it is not a JSON object."""
        values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError(f"an arch is a JSON object, got {text!r}")  # noqa: TRY004
        return cls(values)
