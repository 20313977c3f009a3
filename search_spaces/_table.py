"""A choice space given by its columns: for tabular benchmarks and quick experiments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from search_spaces._arch import Arch, ArchValue
from search_spaces._base import ChoiceSpace


class TableSpace(ChoiceSpace):
    """Every combination of named categorical values; each combination is one arch.

    It has no supernet: pair it with an evaluator that looks results up (a tabular
    benchmark such as NAS-Bench-201) or trains each arch itself.

    Example:
        >>> space = TableSpace("cells", {"op_0": ["conv", "skip"], "op_1": ["conv", "pool"]})
        >>> space.decode({"op_0": "skip", "op_1": "conv"})
        Arch({"op_0":"skip","op_1":"conv"})
    """

    def __init__(self, name: str, columns: Mapping[str, Sequence[ArchValue]]) -> None:
        if not columns or any(len(values) == 0 for values in columns.values()):
            raise ValueError("TableSpace needs at least one column, each with at least one value")
        self.name = name
        self._choices = {key: tuple(values) for key, values in columns.items()}

    def choices(self) -> dict[str, tuple[ArchValue, ...]]:
        """Returns the columns and their values."""
        return dict(self._choices)

    def decode(self, params: Mapping[str, ArchValue]) -> Arch:
        """Returns the arch of one value per column; raises SearchSpaceError otherwise."""
        self.validate_params(params)
        return Arch({key: params[key] for key in self._choices})
