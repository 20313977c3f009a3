"""The registry of pruning criteria: how the channels of a coupled group are scored.

A criterion is a factory of a torch-pruning ``Importance`` (``__call__(group) -> Tensor`` of
one score per channel, higher meaning more important), registered under the name a config's
``compress.prune.importance`` uses. Adding one is one function and one decorator:

Example:
    >>> import torch_pruning as tp
    >>> from compress import register_importance
    >>> @register_importance("l1")
    ... def l1_norm() -> tp.importance.Importance:
    ...     return tp.importance.GroupMagnitudeImportance(p=1)
    >>> "l1" in list_importances()
    True

Scores are compared across groups by the latency-aware pruner (importance lost per
millisecond saved), so a criterion should normalise within each group as torch-pruning's
built-in ones do (``normalizer="mean"``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

__all__ = [
    "ImportanceCriterion", "fill_gradients", "get_importance", "list_importances",
    "register_importance",
]

ImportanceFactory = Callable[[], tp.importance.Importance]


@dataclass(frozen=True)
class ImportanceCriterion:
    """A registered way of scoring channels.

    Attributes:
        name: The registry key.
        build: Returns a fresh torch-pruning ``Importance`` (``__call__(group) -> Tensor``).
        needs_gradients: Whether the criterion reads ``.grad`` (a backward pass on a
            calibration batch runs before each pruning step).
    """

    name: str
    build: ImportanceFactory
    needs_gradients: bool = False


_CRITERIA: dict[str, ImportanceCriterion] = {}


def register_importance(
    name: str, *, needs_gradients: bool = False
) -> Callable[[ImportanceFactory], ImportanceFactory]:
    """Registers a factory of a torch-pruning ``Importance`` under ``name``; warns on duplicates.

    Args:
        name: The key ``compress.prune.importance`` takes.
        needs_gradients: The criterion reads ``.grad``: the pruner runs a backward pass on a
            calibration batch before scoring.

    Returns:
        A decorator that registers the factory and returns it unchanged.

    Raises:
        ValueError: ``name`` is empty.
    """
    if not name:
        raise ValueError("register_importance: the name must not be empty")

    def decorator(factory: ImportanceFactory) -> ImportanceFactory:
        if name in _CRITERIA:
            warnings.warn(f"importance criterion {name!r} registered again; replacing it",
                          stacklevel=2)
        _CRITERIA[name] = ImportanceCriterion(name, factory, needs_gradients)
        return factory

    return decorator


def list_importances() -> list[str]:
    """Returns the registered importance criteria, sorted."""
    return sorted(_CRITERIA)


def get_importance(name: str) -> ImportanceCriterion:
    """Returns the criterion registered as ``name``.

    Raises:
        ValueError: ``name`` is not registered; the message lists the registered names.
    """
    try:
        return _CRITERIA[name]
    except KeyError:
        raise ValueError(
            f"compress.prune.importance: must be one of {list_importances()}, got {name!r} "
            "(a new criterion registers with compress.register_importance)"
        ) from None


def fill_gradients(
    model: nn.Module, example_inputs: torch.Tensor,
    calibration: tuple[torch.Tensor, torch.Tensor] | None,
) -> None:
    """Fills ``.grad`` for a gradient-based criterion with one backward pass of the
    cross-entropy on ``calibration`` ``(x, y)``, or on ``example_inputs`` labelled with the
    model's own predictions."""
    model.zero_grad(set_to_none=True)
    if calibration is not None:
        x, y = calibration
        logits = model(x)
    else:
        logits = model(example_inputs)
        y = logits.detach().argmax(dim=1)
    F.cross_entropy(logits, y).backward()  # type: ignore[no-untyped-call]


@register_importance("magnitude")
def _magnitude() -> tp.importance.Importance:
    """L2 norm of each channel's weights, averaged over the coupled layers of its group."""
    return tp.importance.GroupMagnitudeImportance(p=2)


@register_importance("taylor", needs_gradients=True)
def _taylor() -> tp.importance.Importance:
    """First-order Taylor estimate of the loss change (Molchanov et al., CVPR 2019)."""
    return tp.importance.GroupTaylorImportance()


@register_importance("random")
def _random() -> tp.importance.Importance:
    """Uniform random scores from torch's global generator: the baseline criterion."""
    return tp.importance.RandomImportance()
