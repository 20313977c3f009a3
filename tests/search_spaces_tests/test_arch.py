from __future__ import annotations

import json

import pytest

from search_spaces import Arch


def test_json_round_trip_preserves_equality_and_hash() -> None:
    arch = Arch({"k0_0": 5, "d0": 2, "name": "x", "ratio": 0.5, "flag": True})
    restored = Arch.from_json(arch.to_json())
    assert restored == arch
    assert hash(restored) == hash(arch)
    assert restored.to_dict() == arch.to_dict()
    assert json.loads(arch.to_json()) == arch.to_dict()


def test_order_of_items_does_not_matter() -> None:
    a = Arch({"a": 1, "b": 2})
    b = Arch({"b": 2, "a": 1})
    assert a == b
    assert hash(a) == hash(b)
    assert a.key() == '{"a":1,"b":2}'
    assert len({a, b}) == 1


def test_different_values_differ() -> None:
    assert Arch({"a": 1}) != Arch({"a": 2})
    assert Arch({"a": 1}) != {"a": 1}  # an Arch only equals an Arch


def test_arch_is_read_only() -> None:
    arch = Arch({"a": 1})
    with pytest.raises(TypeError):
        arch["a"] = 2  # type: ignore[index]
    copy = arch.to_dict()
    copy["a"] = 3
    assert arch["a"] == 1


def test_rejects_non_scalar_values_and_non_object_json() -> None:
    with pytest.raises(TypeError, match="'a' must be int, float, str or bool"):
        Arch({"a": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="JSON object"):
        Arch.from_json("[1, 2]")
