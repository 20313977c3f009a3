"""Knowledge distillation: the KD loss, the train step, and lifting a pruned student."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from compress._distill import (
    DistillConfig,
    DistillStep,
    DistillStudent,
    distill,
    feature_adapter,
    kd_loss,
)
from compress._pruning import MacsTarget, prune
from evaluators import OptimConfig, accuracy, cross_entropy_step, load_dataset, train
from search_spaces import get_search_space

SMALL = {"stage_channels": [16, 24, 32, 48], "depths": [1], "kernel_sizes": [3],
         "expand_ratios": [2, 4], "head_channels": 64}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits", path=None, image_size=16, val_fraction=0.2,
                        test_fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def teacher(data):
    space = get_search_space("mobilenet_elastic", **SMALL)
    torch.manual_seed(0)
    model = space.build_supernet(num_classes=10, in_channels=1).extract(space.max_arch())
    steps = -(-int(data.y_train.numel()) // 64)
    train(model, lambda epoch: data.loader("train", 64, shuffle=True, seed=epoch),
          cross_entropy_step(), epochs=4, steps_per_epoch=steps, optim=OptimConfig(lr=1e-2))
    return model.eval()


@pytest.fixture(scope="module")
def student(teacher, data):
    """The teacher pruned hard without fine-tuning: its accuracy collapses."""
    return prune(teacher, data.x_train[:1], target=MacsTarget(3.0), iterations=1).model


def _val_kd(model, teacher, data) -> float:
    with torch.no_grad():
        return float(kd_loss(model(data.x_val), teacher(data.x_val), 4.0))


def test_kd_loss_is_the_scaled_kl_divergence():
    torch.manual_seed(0)
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    assert float(kd_loss(t, t, 4.0)) == pytest.approx(0.0, abs=1e-7)
    p_t = F.softmax(t / 2.0, dim=1)
    expected = (p_t * (p_t.log() - F.log_softmax(s / 2.0, dim=1))).sum(dim=1).mean() * 4.0
    assert float(kd_loss(s, t, 2.0)) == pytest.approx(float(expected), rel=1e-5)
    assert float(kd_loss(s, t, 2.0)) > 0


@pytest.mark.parametrize(("field", "value", "message"), [
    ("temperature", 0.0, "distill.temperature: must be > 0, got 0.0"),
    ("alpha", 1.5, r"distill.alpha: must be in \[0, 1\], got 1.5"),
    ("feature_weight", -1.0, "distill.feature_weight: must be >= 0, got -1.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        DistillConfig(**{field: value})


def test_distillation_lifts_a_pruned_students_accuracy(teacher, student, data):
    val = data.loader("val", 512)
    teacher_acc = accuracy(teacher, val)
    before = accuracy(student, val)
    assert teacher_acc > 0.9 and before < teacher_acc - 0.2  # pruning hurt
    kd_before = _val_kd(student, teacher, data)
    original = copy.deepcopy(student.state_dict())
    teacher_state = copy.deepcopy(teacher.state_dict())
    result = distill(student, teacher, data, epochs=3, batch_size=64,
                     optim=OptimConfig(lr=5e-3), seed=0)
    after = accuracy(result.model, val)
    assert after > before + 0.3
    assert len(result.losses) == 3 and result.losses[-1] < result.losses[0]
    assert _val_kd(result.model, teacher, data) < 0.5 * kd_before
    assert result.adapter is None and not result.model.training
    # neither the student given nor the teacher changed
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in original.items())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_state.items())
    assert not teacher.training


def test_feature_distillation_trains_the_adapter(teacher, student, data):
    assert student.conv_head.out_channels < teacher.conv_head.out_channels
    config = DistillConfig(feature_weight=1.0)
    result = distill(student, teacher, data, epochs=1, batch_size=64, config=config, seed=3)
    assert isinstance(result.adapter, torch.nn.Conv2d)
    assert (result.adapter.in_channels, result.adapter.out_channels) == (
        student.conv_head.out_channels, teacher.conv_head.out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        initial = feature_adapter(student, teacher, data.input_shape)
    assert not torch.equal(initial.weight, result.adapter.weight)  # the optimiser moved it
    # without an adapter the channel counts cannot be compared
    step = DistillStep(teacher, config)
    x, y = data.x_train[:8], data.y_train[:8]
    with pytest.raises(ValueError, match="with an adapter"):
        step(copy.deepcopy(student), x, y)
    assert step(DistillStudent(copy.deepcopy(student), initial), x, y) > 0


def test_in_place_distillation_trains_the_given_student(teacher, student, data):
    own = copy.deepcopy(student)
    weight = own.classifier.weight.detach().clone()
    result = distill(own, teacher, data, epochs=1, batch_size=128, in_place=True)
    assert result.model is own and not torch.equal(weight, own.classifier.weight)
