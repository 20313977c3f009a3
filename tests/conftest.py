"""Fixtures shared across the test packages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from evaluators import DataSplits, load_dataset


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Small models train fastest on one intra-op thread, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_options() -> dict[str, Any]:
    """Options of a two-stage mobilenet_elastic that trains in seconds."""
    return {"stage_channels": [8, 16], "stage_strides": [2, 2], "use_se": [False, True],
            "activations": ["relu", "hardswish"], "depths": [1, 2], "kernel_sizes": [3, 5],
            "expand_ratios": [2, 3], "head_channels": 32}


@pytest.fixture(scope="session")
def digits12() -> DataSplits:
    """scikit-learn's digits at 12x12, split 60/20/20 with seed 0."""
    return load_dataset("digits", path=None, image_size=12, val_fraction=0.2, test_fraction=0.2, seed=0)
