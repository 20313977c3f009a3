"""Structural features of a staged elastic arch (``d{stage}`` depths, ``{x}{stage}_{block}``
per-block choices), for samplers' surrogates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from search_spaces._arch import ArchValue


def staged_features(
    values: Mapping[str, ArchValue], num_stages: int, max_depth: int, block_keys: Sequence[str]
) -> list[float]:
    """Returns the share of blocks that run, then per block key (``e``, ``k``) the mean
    value over the running blocks, first per stage and then over the whole network."""
    depths = [int(values[f"d{s}"]) for s in range(num_stages)]  # type: ignore[arg-type]
    out = [sum(depths) / (num_stages * max_depth)]
    for key in block_keys:
        every: list[float] = []
        for s, depth in enumerate(depths):
            stage = [float(values[f"{key}{s}_{b}"]) for b in range(depth)]  # type: ignore[arg-type]
            out.append(sum(stage) / len(stage) if stage else 0.0)
            every += stage
        out.append(sum(every) / len(every) if every else 0.0)
    return out
