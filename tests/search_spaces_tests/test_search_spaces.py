"""Conformance checks that every registered search space passes."""

from __future__ import annotations

import io
import random

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from search_spaces import (
    Arch,
    SearchSpace,
    SearchSpaceError,
    Supernet,
    get_search_space,
    list_search_spaces,
)

NUM_CLASSES = 10
IN_CHANNELS = 1
INPUT_SHAPE = (4, IN_CHANNELS, 16, 16)

pytestmark = pytest.mark.parametrize("name", list_search_spaces())


def _warm_supernet(space: SearchSpace, seed: int = 0) -> Supernet:
    """Returns a supernet with non-trivial BN parameters and running statistics."""
    torch.manual_seed(seed)
    supernet = space.build_supernet(NUM_CLASSES, IN_CHANNELS)
    with torch.no_grad():
        for module in supernet.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    rng = random.Random(seed)
    supernet.train()
    with torch.no_grad():
        for _ in range(4):
            supernet.set_active(space.sample(rng))
            supernet(torch.randn(*INPUT_SHAPE) * 2 + 0.5)
    return supernet.eval()


def _archs(space: SearchSpace, n_random: int = 4) -> list[Arch]:
    rng = random.Random(1)
    return [space.max_arch(), space.min_arch()] + [space.sample(rng) for _ in range(n_random)]


def test_extract_matches_the_supernet(name: str) -> None:
    space = get_search_space(name)
    supernet = _warm_supernet(space)
    x = torch.randn(*INPUT_SHAPE)
    for arch in _archs(space):
        supernet.set_active(arch)
        subnet = supernet.extract(arch)
        assert not subnet.training
        with torch.no_grad():
            expected = supernet(x)
            got = subnet(x)
        assert got.shape == (INPUT_SHAPE[0], NUM_CLASSES)
        assert torch.allclose(got, expected, atol=1e-5, rtol=0), (
            f"{arch}: max abs difference {(got - expected).abs().max().item():.3g}"
        )


def test_extract_leaves_the_active_arch_and_shares_no_storage(name: str) -> None:
    space = get_search_space(name)
    supernet = _warm_supernet(space)
    x = torch.randn(*INPUT_SHAPE)
    supernet.set_active(space.min_arch())
    with torch.no_grad():
        before = supernet(x)
    subnet = supernet.extract(space.max_arch())
    with torch.no_grad():
        torch.testing.assert_close(supernet(x), before, atol=0, rtol=0)
        for param in subnet.parameters():
            param.add_(1.0)
        torch.testing.assert_close(supernet(x), before, atol=0, rtol=0)


def test_extracted_subnets_use_standard_torch_layers(name: str) -> None:
    space = get_search_space(name)
    supernet = space.build_supernet(NUM_CLASSES, IN_CHANNELS).eval()
    subnet = supernet.extract(space.sample(random.Random(2)))
    leaves = [m for m in subnet.modules() if not list(m.children())]
    assert leaves
    for leaf in leaves:
        assert type(leaf).__module__.startswith("torch.nn."), type(leaf)
    x = torch.randn(*INPUT_SHAPE)
    with torch.no_grad():
        features = subnet.forward_features(x)
        assert features.dim() == 4
        torch.testing.assert_close(subnet.forward_head(features), subnet(x))


def test_onnx_export_matches_torch(name: str) -> None:
    space = get_search_space(name)
    supernet = _warm_supernet(space)
    x = torch.randn(*INPUT_SHAPE)
    for arch in _archs(space, n_random=1):
        subnet = supernet.extract(arch).eval()
        buffer = io.BytesIO()
        torch.onnx.export(
            subnet,
            (x,),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
        model = onnx.load_from_string(buffer.getvalue())
        onnx.checker.check_model(model)
        session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
        for batch in (x, x[:1]):
            (got,) = session.run(None, {"input": batch.numpy()})
            with torch.no_grad():
                expected = subnet(batch).numpy()
            np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_extracted_subnet_prunes_with_torch_pruning(name: str) -> None:
    tp = pytest.importorskip("torch_pruning")
    space = get_search_space(name)
    supernet = space.build_supernet(NUM_CLASSES, IN_CHANNELS).eval()
    subnet = supernet.extract(space.max_arch()).eval()
    example = torch.randn(1, IN_CHANNELS, 16, 16)
    n_before = sum(p.numel() for p in subnet.parameters())
    heads = [m for m in subnet.modules() if isinstance(m, nn.Linear)]
    pruner = tp.pruner.MetaPruner(
        subnet,
        example,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5,
        ignored_layers=heads,
    )
    pruner.step()
    assert sum(p.numel() for p in subnet.parameters()) < n_before
    assert subnet(example).shape == (1, NUM_CLASSES)


def test_decode_is_canonical_and_idempotent(name: str) -> None:
    space = get_search_space(name)
    rng = random.Random(3)
    choices = space.choices()
    assert choices
    for _ in range(20):
        params = {n: rng.choice(values) for n, values in choices.items()}
        arch = space.decode(params)
        again = space.decode(arch)
        assert again == arch
        assert hash(again) == hash(arch)
        assert Arch.from_json(arch.to_json()) == arch
        for choice, value in arch.items():
            assert value in choices[choice]
    assert space.decode(space.max_arch()) == space.max_arch()
    assert space.decode(space.min_arch()) == space.min_arch()
    assert space.max_arch() != space.min_arch()


def test_decode_errors_name_the_choice(name: str) -> None:
    space = get_search_space(name)
    params = dict(space.max_arch())
    choice = next(iter(space.choices()))
    missing = {k: v for k, v in params.items() if k != choice}
    with pytest.raises(SearchSpaceError, match=f"choice '{choice}' is missing"):
        space.decode(missing)
    with pytest.raises(SearchSpaceError, match="no choice 'not_a_choice'"):
        space.decode({**params, "not_a_choice": 1})
    with pytest.raises(SearchSpaceError, match=f"choice '{choice}' must be one of"):
        space.decode({**params, choice: "bad"})
    supernet = space.build_supernet(NUM_CLASSES, IN_CHANNELS)
    with pytest.raises(SearchSpaceError, match=f"'{choice}'"):
        supernet.set_active(missing)  # type: ignore[arg-type]
    with pytest.raises(SearchSpaceError, match=f"'{choice}'"):
        supernet.extract(missing)  # type: ignore[arg-type]


def test_train_forward_and_backward_with_a_random_arch(name: str) -> None:
    space = get_search_space(name)
    torch.manual_seed(0)
    supernet = space.build_supernet(NUM_CLASSES, IN_CHANNELS).train()
    supernet.set_active(space.sample(random.Random(4)))
    x = torch.randn(*INPUT_SHAPE)
    target = torch.randint(0, NUM_CLASSES, (INPUT_SHAPE[0],))
    loss = nn.functional.cross_entropy(supernet(x), target)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in supernet.parameters() if p.grad is not None]
    assert grads
    assert any(g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)


def test_describe_is_one_paragraph(name: str) -> None:
    text = get_search_space(name).describe()
    assert text.strip()
    assert "\n" not in text.strip()


def test_residual_branch_norms_are_distinct_batchnorms_of_the_supernet(name: str) -> None:
    supernet = get_search_space(name).build_supernet(NUM_CLASSES, IN_CHANNELS)
    norms = supernet.residual_branch_norms()
    owned = {id(m) for m in supernet.modules()}
    assert all(isinstance(norm, nn.BatchNorm2d) and id(norm) in owned for norm in norms)
    assert len({id(norm) for norm in norms}) == len(norms)
