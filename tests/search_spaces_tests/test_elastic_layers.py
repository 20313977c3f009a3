from __future__ import annotations

import pytest
import torch
from torch import nn

from search_spaces._elastic import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticDepthwiseConv2d,
    ElasticLinear,
    make_divisible,
)


def _randomise_bn(bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.5, 2.0)


def test_batchnorm_train_mode_matches_a_plain_bn_and_writes_back_running_stats() -> None:
    torch.manual_seed(0)
    elastic = ElasticBatchNorm2d(8)
    _randomise_bn(elastic)
    before_mean = elastic.running_mean.clone()
    before_var = elastic.running_var.clone()
    plain = nn.BatchNorm2d(5)
    elastic.copy_to(plain)
    x = torch.randn(6, 5, 4, 4) * 3 + 1
    torch.testing.assert_close(elastic.train()(x), plain.train()(x))
    # The first 5 slots moved like the plain BN's; the last 3 kept their values.
    torch.testing.assert_close(elastic.running_mean[:5], plain.running_mean)
    torch.testing.assert_close(elastic.running_var[:5], plain.running_var)
    assert not torch.allclose(elastic.running_mean[:5], before_mean[:5])
    assert torch.equal(elastic.running_mean[5:], before_mean[5:])
    assert torch.equal(elastic.running_var[5:], before_var[5:])
    assert int(elastic.num_batches_tracked) == 1


def test_batchnorm_eval_mode_uses_the_running_stats_slice() -> None:
    torch.manual_seed(0)
    elastic = ElasticBatchNorm2d(8)
    _randomise_bn(elastic)
    x = torch.randn(2, 3, 4, 4)
    plain = nn.BatchNorm2d(3)
    elastic.copy_to(plain)
    torch.testing.assert_close(elastic.eval()(x), plain.eval()(x), atol=1e-6, rtol=0)
    assert torch.equal(plain.running_mean, elastic.running_mean[:3])
    with pytest.raises(ValueError, match="at most 8 channels"):
        elastic(torch.randn(1, 9, 2, 2))


def test_batchnorm_cumulative_average_when_momentum_is_none() -> None:
    torch.manual_seed(0)
    elastic = ElasticBatchNorm2d(6, momentum=None)
    plain = nn.BatchNorm2d(4, momentum=None)
    for _ in range(3):
        x = torch.randn(5, 4, 3, 3) * 2 + 0.3
        elastic.train()(x)
        plain.train()(x)
    torch.testing.assert_close(elastic.running_mean[:4], plain.running_mean)
    torch.testing.assert_close(elastic.running_var[:4], plain.running_var)
    assert torch.equal(elastic.running_mean[4:], torch.zeros(2))


def test_conv_crops_the_kernel_centre_and_slices_channels() -> None:
    torch.manual_seed(0)
    elastic = ElasticConv2d(6, 10, kernel_size=5, stride=2, bias=True)
    with torch.no_grad():
        elastic.bias.normal_()
    elastic.active_out_channels = 7
    elastic.active_kernel_size = 3
    x = torch.randn(2, 4, 9, 9)
    plain = nn.Conv2d(4, 7, 3, stride=2, padding=1, bias=True)
    elastic.copy_to(plain)
    assert torch.equal(plain.weight, elastic.weight[:7, :4, 1:4, 1:4])
    torch.testing.assert_close(elastic(x), plain(x))
    assert elastic(x).shape == (2, 7, 5, 5)


def test_conv_rejects_bad_kernels_and_bias_mismatch() -> None:
    elastic = ElasticConv2d(4, 4, kernel_size=5)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        elastic.get_weight(4, 4, 4)
    with pytest.raises(ValueError, match=r"in \[1, 5\]"):
        elastic.get_weight(4, 4, 7)
    with pytest.raises(ValueError, match="bias"):
        elastic.copy_to(nn.Conv2d(4, 4, 5, bias=True))


def test_depthwise_conv_matches_a_plain_depthwise_conv() -> None:
    torch.manual_seed(0)
    elastic = ElasticDepthwiseConv2d(12, kernel_size=7, stride=1)
    elastic.active_kernel_size = 5
    x = torch.randn(3, 9, 8, 8)
    plain = nn.Conv2d(9, 9, 5, padding=2, groups=9, bias=False)
    elastic.copy_to(plain)
    torch.testing.assert_close(elastic(x), plain(x))
    with pytest.raises(ValueError, match="depthwise"):
        elastic.copy_to(nn.Conv2d(9, 9, 5))


def test_kernel_transforms_start_as_the_centre_crop_and_are_learned_per_step() -> None:
    torch.manual_seed(0)
    plain = ElasticDepthwiseConv2d(6, kernel_size=7)
    torch.manual_seed(0)
    elastic = ElasticDepthwiseConv2d(6, kernel_size=7, kernel_transform=True, min_kernel_size=3)
    assert sorted(elastic.kernel_transforms) == ["5to3", "7to5"]
    assert plain.kernel_transforms is not None and len(plain.kernel_transforms) == 0
    for k in (7, 5, 3):  # identity matrices: the plain centre crop
        torch.testing.assert_close(elastic.get_weight(4, k), plain.get_weight(4, k))
    with torch.no_grad():
        elastic.kernel_transforms["5to3"].mul_(2.0)
    torch.testing.assert_close(elastic.get_weight(4, 3), 2 * plain.get_weight(4, 3))
    torch.testing.assert_close(elastic.get_weight(4, 5), plain.get_weight(4, 5))
    # the 3x3 kernel passes through both steps, so both matrices learn from it
    elastic.active_kernel_size = 3
    elastic(torch.randn(2, 4, 6, 6)).sum().backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0
               for m in elastic.kernel_transforms.values())
    with pytest.raises(ValueError, match="at least 3"):
        elastic.get_weight(4, 1)


def test_a_transformed_kernel_is_what_the_extracted_conv_runs() -> None:
    torch.manual_seed(0)
    elastic = ElasticDepthwiseConv2d(8, kernel_size=5, kernel_transform=True, min_kernel_size=3)
    with torch.no_grad():
        elastic.kernel_transforms["5to3"].add_(0.3 * torch.randn(9, 9))
    elastic.active_kernel_size = 3
    plain = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    elastic.copy_to(plain)
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(elastic(x), plain(x))
    assert not torch.allclose(plain.weight, elastic.weight[:, :, 1:4, 1:4])


def test_linear_slices_input_features() -> None:
    torch.manual_seed(0)
    elastic = ElasticLinear(16, 3)
    plain = nn.Linear(10, 3)
    elastic.copy_to(plain)
    x = torch.randn(4, 10)
    torch.testing.assert_close(elastic(x), plain(x))
    assert torch.equal(plain.weight, elastic.weight[:, :10])
    assert elastic(torch.randn(2, 16)).shape == (2, 3)


def test_gradients_reach_only_the_active_slice() -> None:
    elastic = ElasticConv2d(4, 8, kernel_size=5)
    elastic.active_out_channels = 3
    elastic.active_kernel_size = 3
    elastic(torch.randn(2, 2, 6, 6)).sum().backward()
    grad = elastic.weight.grad
    assert grad is not None
    assert grad[:3, :2, 1:4, 1:4].abs().sum() > 0
    assert grad[3:].abs().sum() == 0
    assert grad[:, 2:].abs().sum() == 0
    assert grad[:, :, 0].abs().sum() == 0


@pytest.mark.parametrize(
    ("value", "expected"), [(12, 16), (18, 24), (32, 32), (3, 8), (36, 40), (72, 72)]
)
def test_make_divisible(value: float, expected: int) -> None:
    assert make_divisible(value, 8) == expected
