"""Temporarily switching a module's mode without losing its submodules' own flags."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: object) -> Iterator[None]:
    """Puts ``model`` in eval mode for the block, then restores each submodule's flag.

    Anything that is not an ``nn.Module`` (ONNX bytes, a path) passes through untouched.
    """
    if not isinstance(model, nn.Module):
        yield
        return
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training
