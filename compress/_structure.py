"""Saving and reloading pruned models without pickled modules.

A pruned model no longer matches the code that builds it: its layers have fewer channels.
Pickling the modules would tie a checkpoint to the classes' import paths and needs an
unsafe ``torch.load``. Instead the file holds only tensors and plain Python values: each
module's plain public attributes (``in_channels``, ``num_features``, ``groups``, ...) and
the state dict. Loading rebuilds the unpruned model, applies the attributes, resizes the
parameters and buffers, and loads the weights, so ``torch.load(weights_only=True)`` works.

(``torch_pruning.state_dict`` copies whole ``module.__dict__`` entries, submodules and
hooks included, so its files need ``weights_only=False``.)

Example:
    >>> import io
    >>> from torch import nn
    >>> buffer = io.BytesIO()
    >>> save_pruned(nn.Linear(4, 2), buffer)
    >>> _ = buffer.seek(0)
    >>> load_pruned(lambda: nn.Linear(8, 3), buffer).weight.shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, overload

import torch
from torch import nn

from evaluators._structure import module_structure, structure_key

__all__ = ["load_pruned", "save_pruned", "structure_key"]

logger = logging.getLogger(__name__)

_FORMAT = "compress.pruned_structure"
_VERSION = 1

PathOrBuffer = str | Path | IO[bytes]


@overload
def save_pruned(model: nn.Module, path_or_buffer: None = None) -> bytes: ...
@overload
def save_pruned(model: nn.Module, path_or_buffer: PathOrBuffer) -> None: ...


def save_pruned(model: nn.Module, path_or_buffer: PathOrBuffer | None = None) -> bytes | None:
    """Writes the structure and weights of ``model`` with ``torch.save``, without pickled modules.

    Args:
        model: A (pruned) model.
        path_or_buffer: A file path or a binary buffer; None to get the bytes.

    Returns:
        The bytes written when ``path_or_buffer`` is None, else None.
    """
    payload = {
        "format": _FORMAT,
        "version": _VERSION,
        "modules": module_structure(model),
        "state_dict": {k: v.detach() for k, v in model.state_dict().items()},
    }
    if path_or_buffer is not None:
        torch.save(payload, path_or_buffer)
        return None
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def load_pruned(
    build_unpruned: Callable[[], nn.Module],
    path_or_buffer: PathOrBuffer | bytes,
) -> nn.Module:
    """Rebuilds a model saved by ``save_pruned``.

    Args:
        build_unpruned: Returns the model before pruning (any weights), e.g.
            ``lambda: space.build_supernet(10, 1).extract(arch)``.
        path_or_buffer: What ``save_pruned`` wrote (a path, a buffer or the bytes); read
            with ``weights_only=True``.

    Returns:
        The model with the saved layer shapes, weights and train/eval flags, on the device
        ``build_unpruned`` put it.

    Raises:
        ValueError: The file was not written by ``save_pruned``, or its modules do not
            match those of ``build_unpruned()``.
    """
    if isinstance(path_or_buffer, bytes):
        path_or_buffer = io.BytesIO(path_or_buffer)
    payload = torch.load(path_or_buffer, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError("load_pruned: not a file written by save_pruned")
    if payload.get("version") != _VERSION:
        raise ValueError(
            f"load_pruned: format version {payload.get('version')} is not supported "
            f"(this code reads version {_VERSION})"
        )
    spec: dict[str, dict[str, Any]] = payload["modules"]
    state: dict[str, torch.Tensor] = payload["state_dict"]
    model = build_unpruned()
    modules = dict(model.named_modules())
    missing, extra = sorted(set(spec) - set(modules)), sorted(set(modules) - set(spec))
    if missing or extra:
        raise ValueError(
            "load_pruned: build_unpruned() does not build the saved model: "
            f"modules missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for name, entry in spec.items():
        module = modules[name]
        if type(module).__qualname__ != entry["type"]:
            raise ValueError(
                f"load_pruned: module {name!r} is a {type(module).__qualname__}, "
                f"the saved one a {entry['type']}"
            )
        for key, value in entry["attributes"].items():
            setattr(module, key, value)
        _resize(module, name, state)
    model.load_state_dict(state, strict=True)
    return model


def _resize(module: nn.Module, name: str, state: dict[str, torch.Tensor]) -> None:
    """Replaces the module's own parameters and buffers whose saved shape differs."""
    prefix = f"{name}." if name else ""
    for key, param in list(module.named_parameters(recurse=False)):
        saved = state.get(prefix + key)
        if saved is not None and saved.shape != param.shape:
            empty = torch.empty(saved.shape, dtype=saved.dtype, device=param.device)
            setattr(module, key, nn.Parameter(empty, requires_grad=param.requires_grad))
    for key, buffer in list(module.named_buffers(recurse=False)):
        saved = state.get(prefix + key)
        if saved is not None and saved.shape != buffer.shape:
            setattr(module, key, torch.empty(saved.shape, dtype=saved.dtype,
                                             device=buffer.device))
