"""Helpers shared by the search-space tests."""

from __future__ import annotations

import torch
from torch import nn

from search_spaces import SearchSpace

Outputs = tuple[torch.Tensor, torch.Tensor]


def deep_and_shallow_outputs(space: SearchSpace, x: torch.Tensor) -> tuple[Outputs, Outputs, int]:
    """Returns the eval-mode outputs on ``x`` of the max arch and of the max arch with stages
    0 and 1 at depth 1, before and after zeroing the supernet's residual branch norms, and how
    many norms were zeroed."""
    torch.manual_seed(0)
    supernet = space.build_supernet(10, x.shape[1]).eval()
    deep = space.max_arch()
    shallow = space.decode({**deep.to_dict(), "d0": 1, "d1": 1})

    def outputs() -> Outputs:
        with torch.no_grad():
            return supernet.extract(deep)(x), supernet.extract(shallow)(x)

    before = outputs()
    norms = supernet.residual_branch_norms()
    for norm in norms:
        nn.init.zeros_(norm.weight)
    return before, outputs(), len(norms)
