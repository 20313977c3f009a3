"""A cell space given by its edges: one op per edge of a small DAG, each combination one arch
(NAS-Bench-201 and its kin), with the structure a surrogate should see declared."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from search_spaces._arch import ArchValue
from search_spaces._table import TableSpace

#: NAS-Bench-201's cell: nodes 0 (input) to 3 (output), edges in the benchmark's order
#: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, i.e. (0,1), (0,2), (1,2), (0,3), (1,3), (2,3).
NB201_EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


class CellSpace(TableSpace):
    """Every assignment of one op to each edge of a cell; columns ``op_0``... in edge order.

    Many assignments run the same network: an edge that no path from the input to the
    output crosses computes nothing that reaches the output, and a cell with no such path
    at all computes nothing. The choices alone hide this, so the space declares
    :meth:`features` that see it: whether the cell connects its input to its output, how
    many *live* edges (on some input-output path) carry each op, and the most ops with
    weights on one path. A sampler's surrogate learns from them beside the choices.

    Args:
        name: The space's name.
        edges: ``(source, target)`` node pairs, one per column, with ``source < target``;
            node 0 is the cell's input and the largest node its output.
        ops: The op names every edge chooses among.
        none: The op that cuts an edge (it passes nothing on).
        weighted: The ops with weights (convolutions): they count towards depth.

    Raises:
        ValueError: An edge points backwards, or ``none``/``weighted`` name unknown ops.

    Example:
        >>> space = CellSpace.nas_bench_201()
        >>> cut = {f"op_{i}": "none" for i in range(6)}
        >>> [round(f, 2) for f in space.features({**cut, "op_3": "nor_conv_3x3"})]
        [1.0, 0.0, 0.0, 0.33, 0.0, 0.33]
        >>> space.live_edges({**cut, "op_0": "nor_conv_3x3"})  # node 1 leads nowhere
        [False, False, False, False, False, False]
    """

    def __init__(self, name: str, edges: Sequence[tuple[int, int]], ops: Sequence[str], *,
                 none: str | None = "none", weighted: Sequence[str] = ()) -> None:
        if any(source >= target or source < 0 for source, target in edges):
            raise ValueError(f"edges: each must go from a lower node to a higher one, got "
                             f"{list(edges)}")
        unknown = [op for op in [none, *weighted] if op is not None and op not in ops]
        if unknown:
            raise ValueError(f"ops: {unknown} named as none/weighted but not among {list(ops)}")
        super().__init__(name, {f"op_{i}": list(ops) for i in range(len(edges))})
        self.edges = tuple((int(s), int(t)) for s, t in edges)
        self.ops = tuple(ops)
        self.none = none
        self.weighted = frozenset(weighted)
        self.output = max(t for _, t in self.edges)
        self._scale = float(self._longest_path())

    @classmethod
    def nas_bench_201(cls, name: str = "nb201") -> CellSpace:
        """Returns NAS-Bench-201's cell space (6 edges, 5 ops, 15,625 cells)."""
        return cls(name, NB201_EDGES, NB201_OPS, none="none",
                   weighted=("nor_conv_1x1", "nor_conv_3x3"))

    def live_edges(self, params: Mapping[str, ArchValue]) -> list[bool]:
        """Returns, per edge, whether it lies on a path from the input to the output.

        Raises:
            SearchSpaceError: ``params`` is not an arch of this space.
        """
        ops = [self.decode(params)[f"op_{i}"] for i in range(len(self.edges))]
        cut = [op == self.none for op in ops]
        reached = {0}
        for (source, target), off in sorted(zip(self.edges, cut), key=lambda e: e[0]):
            if not off and source in reached:
                reached.add(target)
        leads_out = {self.output}
        for (source, target), off in sorted(zip(self.edges, cut), key=lambda e: -e[0][1]):
            if not off and target in leads_out:
                leads_out.add(source)
        return [not off and s in reached and t in leads_out
                for (s, t), off in zip(self.edges, cut)]

    def features(self, params: Mapping[str, ArchValue]) -> list[float]:
        """Returns ``[connected, live share per op other than none..., depth share]``:
        1.0 when a path joins input and output (else 0.0), per op the live edges carrying it
        over the longest input-output path's length, and the most weighted ops on one live
        path over the same length.

        Raises:
            SearchSpaceError: ``params`` is not an arch of this space.
        """
        live = self.live_edges(params)
        ops = [params[f"op_{i}"] for i in range(len(self.edges))]
        scale = self._scale
        counts = [sum(1 for op, on in zip(ops, live) if on and op == name) / scale
                  for name in self.ops if name != self.none]
        depth: dict[int, int] = {0: 0}
        for (source, target), op, on in sorted(zip(self.edges, ops, live), key=lambda e: e[0]):
            if on and source in depth:
                step = depth[source] + (op in self.weighted)
                depth[target] = max(depth.get(target, 0), step)
        connected = any(live)
        return [float(connected), *counts, depth.get(self.output, 0) / scale]

    def _longest_path(self) -> int:
        """Returns the most edges on one input-output path of the full cell (at least 1)."""
        length: dict[int, int] = {0: 0}
        for source, target in sorted(self.edges):
            if source in length:
                length[target] = max(length.get(target, 0), length[source] + 1)
        return max(1, length.get(self.output, 1))
