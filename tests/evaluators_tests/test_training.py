from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from evaluators import (
    NonFiniteLossError,
    OptimConfig,
    SandwichConfig,
    SandwichStep,
    shrunk_choices,
    SupernetEvaluator,
    TabularEvaluator,
    accuracy,
    inherited_subnet,
    recalibrate_batchnorm,
    train,
    train_supernet,
)
from hwprofiles import load_profile
from search_spaces import Arch, get_search_space


@pytest.fixture(scope="module")
def data(digits12):
    return digits12


def test_sandwich_step_accumulates_gradients_of_several_subnets(tiny_options, data) -> None:
    space = get_search_space("mobilenet_elastic", **tiny_options)
    supernet = space.build_supernet(num_classes=10, in_channels=1)
    x, y = data.x_train[:32], data.y_train[:32]
    step = SandwichStep(space, SandwichConfig(random_subnets=0), random.Random(0))
    loss = step(supernet, x, y)
    assert loss > 0
    grads_two = {n: p.grad.clone() for n, p in supernet.named_parameters() if p.grad is not None}
    supernet.zero_grad()
    supernet.set_active(space.max_arch())
    nn.functional.cross_entropy(supernet(x), y, label_smoothing=0.1).backward()
    grads_max = {n: p.grad.clone() for n, p in supernet.named_parameters() if p.grad is not None}
    # the smallest subnet's distillation loss adds gradient to the weights it shares
    assert any(not torch.allclose(grads_two[n], grads_max[n]) for n in grads_max)


def test_sandwich_step_without_distillation_trains_subnets_on_labels(tiny_options, data) -> None:
    space = get_search_space("mobilenet_elastic", **tiny_options)
    supernet = space.build_supernet(num_classes=10, in_channels=1)
    x, y = data.x_train[:32], data.y_train[:32]
    config = SandwichConfig(random_subnets=0, distill_weight=0.0)
    step = SandwichStep(space, config, random.Random(0))
    step(supernet, x, y)
    grads_step = {n: p.grad.clone() for n, p in supernet.named_parameters() if p.grad is not None}
    supernet.zero_grad()
    for arch in (space.max_arch(), space.min_arch()):
        supernet.set_active(arch)
        nn.functional.cross_entropy(supernet(x), y, label_smoothing=0.1).backward()
    grads_labels = dict(supernet.named_parameters())
    for name, grad in grads_step.items():
        torch.testing.assert_close(grad, grads_labels[name].grad)


def test_uniform_step_trains_only_drawn_subnets_on_labels(tiny_options, data) -> None:
    space = get_search_space("mobilenet_elastic", **tiny_options)
    supernet = space.build_supernet(num_classes=10, in_channels=1)
    x, y = data.x_train[:32], data.y_train[:32]
    step = SandwichStep(space, SandwichConfig(random_subnets=3, sampling="uniform"),
                        random.Random(1))
    loss = step(supernet, x, y)
    grads_step = {n: p.grad.clone() for n, p in supernet.named_parameters() if p.grad is not None}
    supernet.zero_grad()
    rng, losses = random.Random(1), []
    drawn = [space.sample(rng) for _ in range(3)]
    for arch in drawn:
        supernet.set_active(arch)
        arch_loss = nn.functional.cross_entropy(supernet(x), y, label_smoothing=0.1)
        arch_loss.backward()
        losses.append(float(arch_loss.detach()))
    # seed 1 draws neither the largest nor the smallest: the step trains them only if drawn
    assert space.max_arch() not in drawn and space.min_arch() not in drawn
    assert loss == pytest.approx(sum(losses) / 3)
    expected = {n: p.grad for n, p in supernet.named_parameters() if p.grad is not None}
    assert grads_step.keys() == expected.keys()
    for name, grad in grads_step.items():
        torch.testing.assert_close(grad, expected[name])


def test_uniform_sampling_needs_a_drawn_subnet() -> None:
    with pytest.raises(ValueError, match="random_subnets must be at least 1"):
        SandwichConfig(random_subnets=0, sampling="uniform")


def test_progressive_shrinking_grows_from_the_largest_subnet_to_all(tiny_options) -> None:
    space = get_search_space("mobilenet_elastic", **tiny_options)
    full = space.choices()
    parts = [shrunk_choices(space, epoch, shrink_epochs=3) for epoch in range(5)]
    # each choice keeps its most expensive values, at least one, and gains more every epoch
    for part in parts:
        assert all(values == full[name][-len(values):] and values for name, values in part.items())
    sizes = [sum(len(v) for v in part.values()) for part in parts]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert parts[0] == {name: values[-1:] for name, values in full.items()}  # 2 or 3 values, f=1/4
    assert parts[3] == parts[4] == full
    assert shrunk_choices(space, 0, shrink_epochs=0) == full


def test_shrinking_sandwich_step_trains_the_smallest_of_its_part(tiny_options, data) -> None:
    # three expansion ratios: at epoch 1 of 2 the part holds the top two, not the cheapest
    space = get_search_space("mobilenet_elastic", **{**tiny_options, "expand_ratios": [2, 3, 4]})
    supernet = space.build_supernet(num_classes=10, in_channels=1)
    x, y = data.x_train[:32], data.y_train[:32]
    config = SandwichConfig(random_subnets=0, distill_weight=0.0, shrink_epochs=2)
    step = SandwichStep(space, config, random.Random(0))

    def label_grads(archs: list[Arch]) -> dict[str, torch.Tensor]:
        supernet.zero_grad()
        for arch in archs:
            supernet.set_active(arch)
            nn.functional.cross_entropy(supernet(x), y, label_smoothing=0.1).backward()
        return {n: p.grad.clone() for n, p in supernet.named_parameters() if p.grad is not None}

    for epoch in (1, 2):  # shrinking (the smallest of the grown part), then the whole space
        step.set_epoch(epoch)
        part = shrunk_choices(space, epoch, shrink_epochs=2)
        smallest = space.decode({name: values[0] for name, values in part.items()})
        assert (smallest == space.min_arch()) == (epoch == 2)
        supernet.zero_grad()
        step(supernet, x, y)
        grads_step = {n: p.grad.clone() for n, p in supernet.named_parameters()
                      if p.grad is not None}
        expected = label_grads([space.max_arch(), smallest])
        assert grads_step.keys() == expected.keys()
        for name, grad in grads_step.items():
            torch.testing.assert_close(grad, expected[name])


def test_supernet_training_learns_and_subnets_inherit(tiny_options, data) -> None:
    space = get_search_space("mobilenet_elastic", **tiny_options)
    epochs = []
    _, result = train_supernet(
        space, data, epochs=4, batch_size=128, optim=OptimConfig(lr=5e-3),
        sandwich=SandwichConfig(random_subnets=1), seed=0,
        callbacks=[lambda epoch, loss: epochs.append((epoch, loss))],
    )
    assert [e for e, _ in epochs] == [0, 1, 2, 3]
    assert result.losses[-1] < result.losses[0]
    assert result.max_accuracy > 0.5 and result.min_accuracy > 0.3  # 10 classes: chance is 0.1


@pytest.mark.parametrize("zero_init", [False, True])
def test_supernet_training_can_start_every_residual_branch_at_zero(
    tiny_options, data, zero_init: bool
) -> None:
    space = get_search_space("mobilenet_elastic", **tiny_options)
    # a learning rate so small that one epoch leaves every weight where it started
    supernet, _ = train_supernet(
        space, data, epochs=1, batch_size=512, optim=OptimConfig(lr=1e-9, weight_decay=0.0),
        sandwich=SandwichConfig(random_subnets=0), seed=0, zero_init_residual=zero_init,
    )
    norms = supernet.residual_branch_norms()
    assert norms
    scales = torch.cat([norm.weight.detach().abs() for norm in norms])
    assert bool((scales < 1e-6).all()) if zero_init else bool((scales > 0.99).all())


def test_training_stops_on_a_non_finite_loss(tiny_options, data) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 10))
    def nan_step(model, x, y):
        return float("nan")
    with pytest.raises(NonFiniteLossError, match="learning rate"):
        train(model, lambda e: data.loader("train", 64), nan_step, epochs=1, steps_per_epoch=1, optim=OptimConfig())


def test_recalibration_replaces_inherited_statistics(tiny_options, data) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(400, 10))
    model[1].running_mean.fill_(100.0)
    used = recalibrate_batchnorm(model, data.loader("train", 64), max_batches=3)
    assert used == 3 and float(model[1].running_mean.abs().max()) < 10
    assert not model.training


def test_inherited_subnet_fine_tunes_a_copy_and_leaves_the_supernet(tiny_options, data) -> None:
    space = get_search_space("mobilenet_elastic", **tiny_options)
    torch.manual_seed(0)
    supernet = space.build_supernet(num_classes=10, in_channels=1).eval()
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    arch = space.min_arch()

    def score(finetune_epochs: int) -> float:
        subnet = inherited_subnet(supernet, arch, data, batch_size=64, recalibration_batches=2,
                                  finetune_epochs=finetune_epochs, finetune_lr=5e-3, seed=0)
        assert not subnet.training
        return accuracy(subnet, data.loader("val", 512))

    untrained, tuned = score(0), score(2)
    assert untrained < 0.3 < tuned  # 10 classes: an untrained supernet is near chance
    assert score(2) == tuned  # the same seed, the same fine-tune
    for name, tensor in supernet.state_dict().items():
        torch.testing.assert_close(tensor, before[name], msg=f"{name} changed")


def test_supernet_evaluator_reports_every_metric(tiny_options, data, tmp_path) -> None:
    space = get_search_space("mobilenet_elastic", **tiny_options)
    supernet = space.build_supernet(num_classes=10, in_channels=1)
    # caching is what counts here: a busy machine's doubtful figure (never cached) must not
    profile = load_profile("cpu").model_copy(update={"max_cv": None, "max_load": None})
    evaluator = SupernetEvaluator(
        space_name="mobilenet_elastic", space_options=tiny_options, state_dict=supernet.state_dict(),
        data=data, profile=profile, latency_cache=tmp_path / "lat.db",
        lock_dir=tmp_path / "locks", recalibration_batches=2,
    )
    first = evaluator(space.min_arch())
    assert set(first) == set(evaluator.metrics())
    assert 0 <= first["accuracy"] <= 1 and first["latency_ms"] > 0 and first["params"] > 0
    assert first["latency_cached"] == 0.0
    again = evaluator(space.min_arch())  # latency depends on the arch only: cached
    assert again["latency_cached"] == 1.0 and again["latency_ms"] == first["latency_ms"]
    bigger = evaluator(space.max_arch())
    assert bigger["macs"] > first["macs"] and bigger["params"] > first["params"]


def test_tabular_evaluator_looks_up_and_rejects_unknown_archs() -> None:
    import pandas as pd
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "acc": [0.5, 0.7], "lat": [1.0, 2.0]})
    table = TabularEvaluator.from_frame(frame, ["a", "b"], {"accuracy": "acc", "latency_ms": "lat"})
    assert table(Arch({"a": 2, "b": "y"})) == {"accuracy": 0.7, "latency_ms": 2.0}
    assert len(table) == 2 and table.metrics() == ("accuracy", "latency_ms")
    with pytest.raises(KeyError, match="not in the table"):
        table(Arch({"a": 1, "b": "y"}))
    with pytest.raises(KeyError, match="no column"):
        TabularEvaluator.from_frame(frame, ["a", "c"], {"accuracy": "acc"})
