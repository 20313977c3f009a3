from __future__ import annotations

from collections.abc import Iterator, Mapping

import pydantic
import pytest
from pydantic import BaseModel, ConfigDict

import search_spaces
from search_spaces import (
    MobileNetElasticOptions,
    SearchSpace,
    SearchSpaceError,
    _registry,
    get_search_space,
    get_search_space_options,
    list_search_spaces,
    register_search_space,
)
from search_spaces.mobilenet_elastic import MobileNetElasticSpace


@pytest.fixture
def restore_registry() -> Iterator[None]:
    saved = dict(_registry._SEARCH_SPACES)
    yield
    _registry._SEARCH_SPACES.clear()
    _registry._SEARCH_SPACES.update(saved)


def test_builtins_are_registered_on_package_import() -> None:
    assert "mobilenet_elastic" in list_search_spaces()
    assert list_search_spaces() == sorted(list_search_spaces())
    assert list_search_spaces("mobilenet_*") == ["mobilenet_elastic"]
    assert list_search_spaces("no_such_*") == []
    assert get_search_space_options("mobilenet_elastic") is MobileNetElasticOptions


def test_public_names_are_exported() -> None:
    for name in search_spaces.__all__:
        assert hasattr(search_spaces, name), name


def test_get_builds_the_space_with_validated_options() -> None:
    space = get_search_space("mobilenet_elastic", depths=[1, 2], kernel_sizes=[3])
    assert isinstance(space, MobileNetElasticSpace)
    assert space.name == "mobilenet_elastic"
    assert space.options.depths == (1, 2)
    assert space.choices()["k0_0"] == (3,)


def test_unknown_name_lists_the_registered_names() -> None:
    with pytest.raises(SearchSpaceError, match="unknown search space 'nope'.*mobilenet_elastic"):
        get_search_space("nope")
    with pytest.raises(SearchSpaceError, match="mobilenet_elastic"):
        get_search_space_options("nope")


def test_options_validation_errors_propagate_unchanged() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        get_search_space("mobilenet_elastic", depth=[1, 2])
    assert info.value.errors()[0]["loc"] == ("depth",)
    assert info.value.errors()[0]["type"] == "extra_forbidden"
    with pytest.raises(pydantic.ValidationError) as info:
        get_search_space("mobilenet_elastic", head_channels=0)
    assert info.value.errors()[0]["loc"] == ("head_channels",)


def test_duplicate_name_warns_and_replaces(restore_registry: None) -> None:
    @register_search_space
    def tiny_dup(options: None) -> SearchSpace:
        return MobileNetElasticSpace(MobileNetElasticOptions(depths=(1,)))

    first = tiny_dup
    with pytest.warns(UserWarning, match="'tiny_dup' is already registered"):

        @register_search_space
        def tiny_dup(options: None) -> SearchSpace:
            return MobileNetElasticSpace(MobileNetElasticOptions(depths=(2,)))

    assert tiny_dup is not first
    assert list_search_spaces("tiny_dup") == ["tiny_dup"]
    space = get_search_space("tiny_dup")
    assert isinstance(space, MobileNetElasticSpace)
    assert space.options.depths == (2,)
    assert space.name == "tiny_dup"


def test_space_without_options_rejects_options(restore_registry: None) -> None:
    @register_search_space
    def tiny_no_options(options: None) -> SearchSpace:
        assert options is None
        return MobileNetElasticSpace()

    assert get_search_space_options("tiny_no_options") is None
    assert isinstance(get_search_space("tiny_no_options"), MobileNetElasticSpace)
    with pytest.raises(SearchSpaceError, match="takes no options, got \\['depths'\\]"):
        get_search_space("tiny_no_options", depths=[1])


def test_options_model_must_forbid_extra_keys_and_be_frozen(restore_registry: None) -> None:
    class Loose(BaseModel):
        width: int = 1

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        width: int = 1

    with pytest.raises(TypeError, match="extra='forbid', frozen=True"):

        @register_search_space(options=Loose)
        def tiny_loose(options: Loose | None) -> SearchSpace:
            return MobileNetElasticSpace()

    assert "tiny_loose" not in list_search_spaces()

    @register_search_space(options=Strict)
    def tiny_strict(options: Strict | None) -> SearchSpace:
        assert isinstance(options, Strict)
        return MobileNetElasticSpace(MobileNetElasticOptions(head_channels=options.width))

    space = get_search_space("tiny_strict", width=8)
    assert isinstance(space, MobileNetElasticSpace)
    assert space.options.head_channels == 8


def test_factory_must_return_a_search_space(restore_registry: None) -> None:
    @register_search_space
    def tiny_wrong(options: None) -> Mapping[str, int]:
        return {}

    with pytest.raises(TypeError, match="returned dict, not a SearchSpace"):
        get_search_space("tiny_wrong")
