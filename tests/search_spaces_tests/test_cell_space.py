"""CellSpace: a cell's structure as features, seen through dead edges."""

from __future__ import annotations

import itertools

import pytest

from search_spaces import CellSpace, SearchSpaceError

CUT = {f"op_{i}": "none" for i in range(6)}


@pytest.fixture
def nb201() -> CellSpace:
    return CellSpace.nas_bench_201()


def test_nas_bench_201_has_its_15625_cells(nb201: CellSpace) -> None:
    choices = nb201.choices()
    assert list(choices) == [f"op_{i}" for i in range(6)]
    assert len(list(itertools.product(*choices.values()))) == 15_625


def test_a_cell_without_an_input_output_path_has_no_live_edge(nb201: CellSpace) -> None:
    # 0->1 and 1->2 carry convolutions, but nothing leaves node 2
    params = {**CUT, "op_0": "nor_conv_3x3", "op_2": "nor_conv_3x3"}
    assert nb201.live_edges(params) == [False] * 6
    assert nb201.features(params) == [0.0] * 6


def test_dead_edges_change_no_feature(nb201: CellSpace) -> None:
    # the path 0 -> 1 -> 3; edge 1->2 leads to node 2, which reaches nothing
    base = {**CUT, "op_0": "nor_conv_3x3", "op_4": "nor_conv_1x1"}
    with_dead_edge = {**base, "op_2": "avg_pool_3x3"}
    assert nb201.live_edges(with_dead_edge) == [True, False, False, False, True, False]
    assert nb201.features(with_dead_edge) == nb201.features(base)
    # the same edge made live (2->3 added) is seen
    live = {**with_dead_edge, "op_5": "skip_connect"}
    assert nb201.live_edges(live)[2]
    assert nb201.features(live) != nb201.features(base)


def test_depth_counts_the_weighted_ops_on_the_deepest_path(nb201: CellSpace) -> None:
    chain = {**CUT, "op_0": "nor_conv_3x3", "op_2": "nor_conv_1x1", "op_5": "nor_conv_3x3",
             "op_3": "skip_connect"}
    connected, skip, conv1, conv3, pool, depth = nb201.features(chain)
    assert connected == 1.0
    assert (skip, conv1, conv3, pool) == pytest.approx((1 / 3, 1 / 3, 2 / 3, 0.0))
    assert depth == pytest.approx(1.0)  # three convolutions on 0 -> 1 -> 2 -> 3, of at most 3
    pooled = {**chain, "op_2": "avg_pool_3x3"}
    assert nb201.features(pooled)[-1] == pytest.approx(2 / 3)


def test_features_reject_what_is_not_an_arch_of_the_space(nb201: CellSpace) -> None:
    with pytest.raises(SearchSpaceError):
        nb201.features({**CUT, "op_0": "conv_7x7"})


@pytest.mark.parametrize(("edges", "ops", "kwargs", "match"), [
    (((1, 0),), ("none", "conv"), {}, "lower node"),
    (((0, 1),), ("skip", "conv"), {}, "not among"),
    (((0, 1),), ("none", "conv"), {"weighted": ("conv5",)}, "not among"),
])
def test_a_malformed_cell_is_refused(edges, ops, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        CellSpace("bad", edges, ops, **kwargs)
