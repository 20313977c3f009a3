from __future__ import annotations

import pytest
import torch
from torch import nn

from evaluators import count_macs, count_params, model_size_bytes


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),           # 8x8 -> 4x4
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),  # depthwise
        nn.Conv2d(8, 16, 1, groups=2),                      # grouped pointwise
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


# Hand-computed for a 3x8x8 input.
#   conv 3->8 k3 s2:  8*4*4 outputs * (3*3*3)        = 128 * 27 = 3456 MACs, 8*27 + 8 = 224 params
#   depthwise k3:     8*4*4 outputs * (1*3*3)        = 128 * 9  = 1152 MACs, 8*9      =  72 params
#   1x1 8->16 g2:    16*4*4 outputs * (8/2*1*1)      = 256 * 4  = 1024 MACs, 16*4 + 16 = 80 params
#   batchnorm(16):    not counted as MACs                                   2*16     =  32 params
#   linear 16->10:   10 outputs * 16                 =            160 MACs, 160 + 10 = 170 params
MACS = 3456 + 1152 + 1024 + 160
PARAMS = 224 + 72 + 80 + 32 + 170


def test_params_and_macs_match_hand_computed_values() -> None:
    model = _net()
    assert count_params(model) == PARAMS == 578
    assert count_macs(model, (1, 3, 8, 8)) == MACS == 5792


def test_macs_are_per_sample() -> None:
    assert count_macs(_net(), (32, 3, 8, 8)) == MACS


def test_model_size_counts_parameters_and_buffers() -> None:
    # fp32 params + running mean/var (2*16 fp32) + num_batches_tracked (one int64).
    assert model_size_bytes(_net()) == PARAMS * 4 + 32 * 4 + 8
    assert model_size_bytes(_net().half()) == PARAMS * 2 + 32 * 2 + 8


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fc(x))


def test_shared_layer_params_once_macs_per_call() -> None:
    model = _Shared()
    assert count_params(model) == 16
    assert count_macs(model, (1, 4)) == 2 * 16


def test_count_macs_restores_training_flags_and_removes_hooks() -> None:
    model = _net().train()
    model[3].eval()
    count_macs(model, (1, 3, 8, 8))
    assert model.training and model[0].training and not model[3].training
    assert all(not m._forward_hooks for m in model.modules())


def test_count_macs_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match="input_shape"):
        count_macs(_net(), (1, 0, 8, 8))
