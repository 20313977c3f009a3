"""A small model trained on the digits, shared by the export and INT8 tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from evaluators import DataSplits, OptimConfig, cross_entropy_step, load_dataset, train
from search_spaces import get_search_space


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
