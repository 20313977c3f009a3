"""Static cost of a model: parameters, multiply-accumulates, bytes."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from evaluators._modes import eval_mode

__all__ = ["count_macs", "count_params", "model_size_bytes"]


def count_params(model: nn.Module) -> int:
    """Returns the number of parameters, each shared tensor counted once.

    Args:
        model: Any module.

    Example:
        >>> count_params(nn.Linear(10, 5))
        55
    """
    return sum(p.numel() for p in _unique(model.parameters()))


def model_size_bytes(model: nn.Module) -> int:
    """Returns the in-memory size of the parameters and buffers (the state dict) in bytes.

    Args:
        model: Any module.

    Example:
        >>> model_size_bytes(nn.Linear(10, 5))
        220
    """
    tensors = _unique([*model.parameters(), *model.buffers()])
    return sum(t.numel() * t.element_size() for t in tensors)


_BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "int8": 1}


def weights_mb(model: nn.Module, precision: str = "fp32") -> float:
    """Returns the MiB (2**20 bytes) of ``model``'s parameters and buffers stored at
    ``precision`` (``fp32``, ``fp16`` or ``int8`` for floating-point tensors; integer
    buffers keep their own size): the ``size_mb`` a deployment carries.

    Raises:
        KeyError: ``precision`` is none of those.

    Example:
        >>> round(weights_mb(nn.Linear(1024, 256), "int8"), 4)
        0.2505
    """
    per = _BYTES_PER_WEIGHT[precision]
    tensors = _unique([*model.parameters(), *model.buffers()])
    total = sum(t.numel() * (per if t.is_floating_point() else t.element_size()) for t in tensors)
    return total / 2**20


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Returns the multiply-accumulates of one forward pass for a single sample.

    Counts convolutions (``Conv1d``/``Conv2d``/``Conv3d``, grouped and depthwise
    included) and ``Linear`` layers, which dominate the cost of CNNs and MLPs; bias,
    normalisation, activation and pooling are not counted (the usual convention). A layer
    called several times is counted each time. The forward pass runs in eval mode under
    ``torch.no_grad`` and restores every submodule's train/eval flag.

    Args:
        model: The module to cost.
        input_shape: Input shape with the batch first; the batch size is replaced by 1.

    Returns:
        Multiply-accumulates for one sample.

    Raises:
        ValueError: ``input_shape`` is empty or has a non-positive dimension.

    Example:
        >>> count_macs(nn.Conv2d(3, 8, kernel_size=3, padding=1), (1, 3, 4, 4))
        3456
    """
    dims = tuple(int(d) for d in input_shape)
    if not dims or any(d <= 0 for d in dims):
        raise ValueError(f"input_shape: must be positive with the batch first, got {dims}")
    total = 0

    def conv_hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.modules.conv._ConvNd)
        # Each output element sums (in_channels / groups) * prod(kernel) products.
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        total += output.numel() * per_output

    def linear_hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Linear)
        total += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros((1, *dims[1:]), device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    return total


def _unique(tensors: Iterator[torch.Tensor] | list[torch.Tensor]) -> list[torch.Tensor]:
    seen: set[int] = set()
    out = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out
