from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nas import ConfigError, load_config
from nas._cli import main

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"

# (YAML text, the key the message must name)
MALFORMED = [
    ("search: {n_trials: 0}", "search.n_trials"),
    ("search: {sampler: cmaes}", "search.sampler"),
    ("search: {objectives: {accuracy: max, energy: min}}", "search.objectives.energy"),
    ("search: {objectives: {accuracy: up}}", "search.objectives.accuracy"),
    ("search: {constraints: {accuracy: 0.5}}", "search.constraints.accuracy"),
    ("search: {constraints: {latency_ms: -1}}", "search.constraints.latency_ms"),
    ("search: {max_concurrent: 0}", "search.max_concurrent"),
    ("experiment: {name: quick, seeds: 3}", "experiment.seeds"),
    ("experiment: {name: 'bad name/../x'}", "experiment.name"),
    ("data: {dataset: cifar10}", "data.dataset"),
    ("data: {dataset: npz}", "data.path"),
    ("data: {val_fraction: 1.5}", "data.val_fraction"),
    ("data: {batch_size: many}", "data.batch_size"),
    ("search_space: {name: no_such_space}", "search_space.name"),
    ("search_space: {name: mobilenet_elastic, kernel_sizes: [4]}", "search_space.kernel_sizes"),
    ("search_space: {name: mobilenet_elastic, width: 2}", "search_space.width"),
    ("hardware: {profile: tpu-v9}", "hardware.profile"),
    ("supernet: {epochs: 0}", "supernet.epochs"),
    ("unknown_section: {a: 1}", "unknown_section"),
    ("ray: {dashboard_port: 80}", "ray.dashboard_port"),
    ("- just\n- a list", "top level"),
    ("search: {n_trials: [unclosed", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "key"), MALFORMED, ids=[k for _, k in MALFORMED])
def test_malformed_config_exits_2_and_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    status = main(["search", str(path), "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert status == 2
    assert key in " ".join(out.split()), out
    assert "Traceback" not in out
    assert not (tmp_path / "run").exists()  # nothing written for bad input


def test_an_objective_the_device_cannot_measure_exits_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from evaluators import energy_unavailable_reason
    from hwprofiles import load_profile

    if energy_unavailable_reason(load_profile("cpu")) is None:
        pytest.skip("this CPU reports its energy: energy_mj is a valid objective here")
    for override in ("search.objectives={accuracy: max, energy_mj: min}",
                     "search.constraints={energy_mj: 5}"):
        status = main(["search", str(QUICKSTART), "--set", override,
                       "--run-dir", str(tmp_path / "run")])
        out = " ".join(capsys.readouterr().out.split())
        assert status == 2 and "energy_mj: cannot be measured on profile 'cpu'" in out, out
        assert "RAPL" in out and not (tmp_path / "run").exists()


def test_memory_and_size_objectives_are_accepted() -> None:
    objectives = "search.objectives={accuracy: max, latency_ms: min, peak_memory_mb: min}"
    spec = load_config(QUICKSTART, [objectives, "search.constraints={size_mb: 1}"])
    assert list(spec.search.objectives) == ["accuracy", "latency_ms", "peak_memory_mb"]


def test_bad_override_is_validated_like_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["search", str(QUICKSTART), "--set", "search.n_trials=-3"])
    assert status == 2
    assert "search.n_trials" in capsys.readouterr().out


def test_shrink_epochs_must_leave_the_whole_space_an_epoch() -> None:
    assert load_config(QUICKSTART, ["supernet.shrink_epochs=29"]).supernet.shrink_epochs == 29
    with pytest.raises(ConfigError, match=r"supernet.shrink_epochs \(30\) must be below"):
        load_config(QUICKSTART, ["supernet.shrink_epochs=30"])


def test_supernet_sampling_is_validated_by_key() -> None:
    spec = load_config(QUICKSTART, ["supernet.sampling=uniform"])
    assert spec.supernet.sandwich().sampling == "uniform"
    with pytest.raises(ConfigError, match=r"supernet.random_subnets must be at least 1"):
        load_config(QUICKSTART, ["supernet.sampling=uniform", "supernet.random_subnets=0"])
    with pytest.raises(ConfigError, match=r"supernet.sampling.*'sandwich' or 'uniform'"):
        load_config(QUICKSTART, ["supernet.sampling=fair"])


def test_override_without_equals_is_an_error() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(QUICKSTART, ["search.n_trials"])


def test_overrides_apply_and_defaults_resolve() -> None:
    spec = load_config(QUICKSTART, ["search.n_trials=8", "search.sampler=tpe", "search.multivariate=true"])
    assert spec.search.n_trials == 8 and spec.search.sampler.name == "tpe"
    assert spec.search.sampler.options() == {"multivariate": True, "n_startup_trials": 10}
    assert spec.experiment.name == "quickstart"
    assert spec.search.objectives == {"accuracy": "max", "latency_ms": "min"}
    resolved = yaml.safe_load(spec.to_yaml())
    assert resolved["search"]["n_trials"] == 8 and resolved["hardware"]["profile"] == "cpu"


def test_relative_npz_path_is_resolved_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text("data: {dataset: npz, path: sub/images.npz}")
    spec = load_config(tmp_path / "cfg.yaml")
    assert spec.data.path == (tmp_path / "sub" / "images.npz").resolve()


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().out


def test_cli_process_exit_status_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("search: {n_trials: 0}")
    proc = subprocess.run(
        [sys.executable, "-m", "nas._cli", "search", str(path)], check=False, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "search.n_trials" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


def test_help_describes_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["search", "--help"], ["spaces", "--help"], ["profile", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--run-dir" in out and "search.n_trials=8" in out and "resumes" in out


def test_run_dir_that_is_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").write_text("")
    assert main(["search", str(QUICKSTART), "--run-dir", str(tmp_path / "taken")]) == 2
    assert "not a directory" in capsys.readouterr().out


def test_resuming_with_another_experiment_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nas import RunDir, RunDirError

    run = RunDir(tmp_path / "run")
    run.prepare(load_config(QUICKSTART), ["nas"])
    run.prepare(load_config(QUICKSTART, ["search.n_trials=80"]), ["nas"])  # a longer search is fine
    with pytest.raises(RunDirError, match="search.sampler"):
        run.prepare(load_config(QUICKSTART, ["search.sampler=tpe"]), ["nas"])


def test_a_config_written_before_samplers_took_options_loads_the_same() -> None:
    old = load_config(QUICKSTART, ["search.sampler=tpe", "search.multivariate=true",
                                   "search.population_size=16"])
    new = load_config(QUICKSTART, ["search.sampler={name: tpe, multivariate: true}"])
    assert old.search.sampler == new.search.sampler
    with pytest.raises(ConfigError, match="search.multivariate: only applies to sampler 'tpe'"):
        load_config(QUICKSTART, ["search.multivariate=true"])


@pytest.mark.parametrize(("override", "message"), [
    ("search.sampler=cmaes", "search.sampler.name: must be one of .*'model_based'"),
    ("search.sampler={name: tpe, population_size: 8}", r"search.sampler.population_size: unknown option"),
    ("search.sampler={name: model_based, n_startup_trials: 0}", r"search.sampler.n_startup_trials: .*greater than or equal to 1"),
    ("search.sampler={name: random, seed: 3}", r"search.sampler: sampler 'random' takes no options"),
])
def test_sampler_options_are_validated_with_their_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(QUICKSTART, [override])
