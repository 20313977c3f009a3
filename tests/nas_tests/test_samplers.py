"""Samplers by registration: every registered sampler conforms, the model-based one beats
random search, and a user's own sampler runs from YAML."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from evaluators import TabularEvaluator
from nas import Objectives, StudyAdapter, cheap_objectives, load_config, make_sampler, open_study
from nas.samplers import ModelBasedSampler, _registry, list_samplers
from pareto import hypervolume, normalized, pareto_mask
from search_spaces import Arch, TableSpace

OBJECTIVES = Objectives({"accuracy": "max", "latency_ms": "min"}, {})
OPS = ["none", "skip", "conv1", "conv3", "pool"]
CELL = TableSpace("cell", {f"op_{i}": OPS for i in range(6)})  # 15,625 archs


TARGET = ("conv3", "skip", "conv3", "conv1", "pool", "conv3")


def _cell_metrics(arch: Arch) -> dict[str, float]:
    """A known trade-off with one best cell: accuracy falls with the distance to TARGET
    (ops that are alike count half), latency grows with the convs."""
    cost = {"none": 0.0, "skip": 0.05, "conv1": 0.4, "conv3": 1.0, "pool": 0.2}
    ops = [str(arch[f"op_{i}"]) for i in range(6)]
    distance = sum(0.0 if o == t else 0.5 if o[:4] == t[:4] else 1.0 for o, t in zip(ops, TARGET))
    return {"accuracy": 1.0 - 0.02 * distance**2, "latency_ms": 1.0 + sum(cost[o] for o in ops)}


CELL_TABLE = TabularEvaluator({
    arch: _cell_metrics(arch) for arch in (
        Arch({f"op_{i}": v for i, v in enumerate(combo)})
        for combo in itertools.product(OPS, repeat=6))
})


def _search(sampler_name: str, seed: int, n_trials: int, url: str, **options) -> optuna.Study:
    """Runs the product's ask/tell loop (without Ray) on the cell table."""
    cheap = cheap_objectives(CELL_TABLE, CELL, OBJECTIVES)
    sampler = make_sampler(sampler_name, seed=seed, objectives=OBJECTIVES, space=CELL,
                           known=cheap, **options)
    study = open_study(url, "cell", OBJECTIVES, sampler)
    adapter = StudyAdapter(study, CELL, OBJECTIVES)
    while adapter.finished_count() < n_trials:
        number, arch = adapter.ask()
        adapter.tell_result(number, CELL_TABLE(arch), None)
    return study


def _archs(study: optuna.Study) -> list[str]:
    return [t.user_attrs["arch"] for t in study.get_trials()]


@pytest.mark.parametrize("name", list_samplers())
def test_every_registered_sampler_proposes_valid_distinct_archs_deterministically_and_resumes(
    name: str, tmp_path: Path
) -> None:
    first = _search(name, 3, 12, f"sqlite:///{tmp_path / 'a.db'}")
    archs = _archs(first)
    assert len(archs) == 12
    for t in first.get_trials():
        assert CELL.decode(t.params) == Arch.from_json(t.user_attrs["arch"])  # valid
    assert len(set(archs)) == 12  # distinct
    assert _archs(_search(name, 3, 12, f"sqlite:///{tmp_path / 'b.db'}")) == archs  # seeded
    # resumed: a new sampler instance on the stored study goes on from what is there
    resumed = _search(name, 3, 16, f"sqlite:///{tmp_path / 'a.db'}")
    more = _archs(resumed)
    assert more[:12] == archs and len(more) == 16
    assert all(CELL.decode(t.params) for t in resumed.get_trials())


def _fraction(study: optuna.Study, true_front: np.ndarray, ideal, nadir) -> float:
    done = np.array([t.values for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))])

    def hv(values: np.ndarray) -> float:
        return hypervolume(normalized(values, ["max", "min"], ideal, nadir), ["min", "min"], [1.1, 1.1])

    return hv(done) / hv(true_front)


def test_the_model_based_sampler_finds_more_of_a_known_front_than_random_search(tmp_path: Path) -> None:
    values = np.array([[m["accuracy"], m["latency_ms"]] for m in map(CELL_TABLE, CELL_TABLE.archs())])
    front = values[pareto_mask(values, ["max", "min"])]
    ideal, nadir = [front[:, 0].max(), front[:, 1].min()], [front[:, 0].min(), front[:, 1].max()]
    model_based, random = [], []
    for seed in range(2):
        model_based.append(_fraction(_search("model_based", seed, 20, f"sqlite:///{tmp_path / f'm{seed}.db'}"),
                                     front, ideal, nadir))
        random.append(_fraction(_search("random", seed, 20, f"sqlite:///{tmp_path / f'r{seed}.db'}"),
                                front, ideal, nadir))
    assert min(model_based) > max(random)
    assert np.mean(model_based) > np.mean(random) + 0.1


def test_running_trials_get_distinct_archs_and_cheap_objectives_steer_the_choice(tmp_path: Path) -> None:
    asked: list[list[dict]] = []

    def cheap(params):  # latency known for every candidate, accuracy never
        asked.append(list(params))
        return np.array([[np.nan, CELL_TABLE(CELL.decode(p))["latency_ms"]] for p in params])

    sampler = ModelBasedSampler(seed=0, choices=CELL.choices(), cheap_objectives=cheap, n_startup_trials=4)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    for _ in range(6):
        trial = study.ask()
        arch = CELL.decode({k: trial.suggest_categorical(k, OPS) for k in CELL.choices()})
        study.tell(trial, [CELL_TABLE(arch)["accuracy"], CELL_TABLE(arch)["latency_ms"]])
    params = []
    for _ in range(4):  # four trials in flight, none told yet
        trial = study.ask()
        params.append(tuple(trial.suggest_categorical(k, OPS) for k in CELL.choices()))
    told = {tuple(t.params.values()) for t in study.trials if t.state.is_finished()}
    assert len(set(params)) == 4 and not set(params) & told
    assert len(asked[0]) == 15_625  # the whole space was scored on the cheap objective


def test_archs_that_run_the_same_network_are_proposed_once() -> None:
    # "deep" 0 leaves "width" unused: (0, w) for every w is one network
    space = TableSpace("gated", {"deep": [0, 1], "width": [1, 2, 3]})

    def canonical(params):
        return {"deep": params["deep"], "width": params["width"] if params["deep"] else 1}

    sampler = ModelBasedSampler(seed=1, choices=space.choices(), canonical=canonical, n_startup_trials=2)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    seen = []
    for _ in range(4):
        trial = study.ask()
        p = canonical({k: trial.suggest_categorical(k, list(v)) for k, v in space.choices().items()})
        seen.append(tuple(p.values()))
        study.tell(trial, [p["deep"] + 0.1 * p["width"], p["width"]])
    assert len(set(seen)) == 4  # all four distinct networks, none twice


PLUGIN = '''
import optuna
from pydantic import BaseModel, ConfigDict
from nas.samplers import register_sampler

CALLS = []


class EveryOtherOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    label: str = "mine"


class Recording(optuna.samplers.RandomSampler):
    def sample_independent(self, study, trial, name, distribution):
        CALLS.append(name)
        return super().sample_independent(study, trial, name, distribution)


@register_sampler(options=EveryOtherOptions)
def recording_random(options, context):
    CALLS.append(("built", options.label, context.seed, context.objectives))
    return Recording(seed=context.seed)
'''


@pytest.fixture
def private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test's plugin vanish with the test."""
    monkeypatch.setattr(_registry, "_SAMPLERS", dict(_registry._SAMPLERS))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))


@pytest.mark.usefixtures("private_registry")
def test_a_sampler_registered_in_a_plugin_runs_from_yaml(tmp_path: Path) -> None:
    (tmp_path / "my_sampler.py").write_text(PLUGIN)
    config = tmp_path / "config.yaml"
    config.write_text("plugins: [my_sampler.py]\nexperiment: {seed: 7}\n"
                      "search: {sampler: {name: recording_random, label: ours}}\n")
    spec = load_config(config)
    assert spec.search.sampler.name == "recording_random"
    assert spec.search.sampler.options() == {"label": "ours"}
    study = _search(spec.search.sampler.name, spec.experiment.seed, 3,
                    f"sqlite:///{tmp_path / 's.db'}", **spec.search.sampler.options())
    calls = sys.modules["hwnas_plugin_my_sampler"].CALLS
    assert calls[0] == ("built", "ours", 7, ("accuracy", "latency_ms"))
    assert calls.count("op_0") == 3 and len(study.trials) == 3


@pytest.mark.parametrize("use_cheap", [True, False])
def test_model_based_from_yaml_takes_its_own_cheap_objectives_switch(tmp_path: Path, use_cheap: bool) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("search: {sampler: {name: model_based, n_startup_trials: 3, "
                      f"cheap_objectives: {str(use_cheap).lower()}}}}}\n")
    spec = load_config(config)
    options = spec.search.sampler.options()  # every option, defaults filled, as the search passes them
    assert options["cheap_objectives"] is use_cheap
    study = _search(spec.search.sampler.name, 0, 6, f"sqlite:///{tmp_path / 's.db'}", **options)
    assert len({t.user_attrs["arch"] for t in study.get_trials()}) == 6
