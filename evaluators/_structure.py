"""A model's structure, apart from its weights: what it is made of, as plain data and a key.

Two models with the same structure run the same graph at the same widths: on one hardware
profile their latency is one measurement.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from torch import nn

__all__ = ["module_structure", "structure_key"]

_SCALARS = (bool, int, float, str, type(None))


def _is_plain(value: object) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, (tuple, list)) and type(value) in (tuple, list):
        return all(_is_plain(v) for v in value)
    return False


def module_structure(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Returns, per module name, its class name and its plain public attributes."""
    spec: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        attributes = {
            key: value
            for key, value in vars(module).items()
            if not key.startswith("_") and _is_plain(value)
        }
        spec[name] = {"type": type(module).__qualname__, "attributes": attributes}
    return spec


def structure_key(model: nn.Module) -> str:
    """Returns a stable hash of ``model``'s structure: its modules' classes and plain
    attributes and every parameter's and buffer's shape, never their values.

    Two models with equal keys run the same graph at the same widths, so their latency on a
    profile is one measurement (distillation, for one, changes weights only).
    """
    spec = module_structure(model)
    for entry in spec.values():
        entry["attributes"].pop("training", None)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    text = json.dumps({"modules": spec, "shapes": shapes}, sort_keys=True, default=str)
    return "structure:" + hashlib.sha256(text.encode()).hexdigest()[:24]
