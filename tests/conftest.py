"""Fixtures shared across the test packages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from evaluators import DataSplits, OptimConfig, cross_entropy_step, load_dataset, train
from search_spaces import get_search_space


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


@pytest.fixture(scope="session")
def digits_splits() -> DataSplits:
    return load_dataset(
        "digits", path=None, image_size=16, val_fraction=0.2, test_fraction=0.2, seed=0
    )


@pytest.fixture(scope="session")
def digits_model(digits_splits: DataSplits) -> nn.Module:
    """The smallest mobilenet_elastic subnet after 5 epochs (about 97% test accuracy)."""
    space = get_search_space("mobilenet_elastic")
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # small batches train faster on one thread than on a shared pool
    try:
        model = space.build_supernet(digits_splits.num_classes, 1).extract(space.min_arch())
        train(
            model,
            lambda epoch: digits_splits.loader("train", 64, shuffle=True, seed=epoch),
            cross_entropy_step(),
            epochs=5,
            steps_per_epoch=len(digits_splits.loader("train", 64)),
            optim=OptimConfig(),
        )
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Returns the URL of a PostgreSQL server on 127.0.0.1 started for the session (stopped
    after it). CI installs the server (``.ci/run``); elsewhere the tests that need it skip
    with the reason when it is missing."""
    import os

    from tests.postgres_server import postgres_server, server_binaries

    if server_binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's server is not installed, and CI needs it (.ci/run installs it)")
        pytest.skip("PostgreSQL's server (initdb, pg_ctl) is not installed")
    with postgres_server(tmp_path_factory.mktemp("postgres")) as url:
        yield url


@pytest.fixture
def postgres_db(postgres_url: str) -> str:
    """Returns the URL of an empty database of its own on the session's PostgreSQL server."""
    from tests.postgres_server import fresh_database

    return fresh_database(postgres_url)
