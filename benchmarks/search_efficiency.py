"""Search efficiency: hypervolume after N trials per sampler, as a fraction of the true front's.

Two problems whose every architecture is known, so the true Pareto front is exact:

(a) ``mobilenet``: a small configuration of ``mobilenet_elastic`` (two stages, 400 archs).
    A supernet is trained, then every arch is evaluated with it (BN recalibration,
    validation accuracy, latency measured on the cpu profile); the samplers then search
    that table. The data are the synthetic shapes of ``make_shapes64.py`` at 16x16 (by
    default 12,000 images, half of them for validation), where subnets differ by several
    points and an arch's accuracy is read on 6,000 images. ``--mobilenet-data digits``
    gives the older problem: on digits' 359 validation images the true front spans about
    15 images, four times one arch's binomial standard error (3.7 images), so which archs
    form it is largely chance, which no surrogate can learn.
(b) ``nb201``: NAS-Bench-201 x HW-NAS-Bench (a test accuracy column vs a device's
    latency), read from the CSV whose path you give. Its space is a ``CellSpace``, which
    declares each cell's structure (live edges per op, depth) for a surrogate to learn
    from; ``--no-cell-features`` makes it a plain table of six choices.

Both go through the product's search driver (Ray Tune trials, Optuna study, the sampler
as ``search.sampler`` builds it, never proposing an arch twice) with a
``TabularEvaluator``, whose latency column is the cheap objective a sampler may look at
for any candidate (the model-based sampler does; Optuna's ignore it). Objectives are
scaled to the true front's ideal-nadir box and the reference point is 1.1 in every
scaled objective. The last columns are the median time the sampler took to propose a
trial and the median wall time per trial.

Several N (``--trials 25,50,100,200``) come from one search of the largest N per seed:
no sampler is told N, so a search's first N trials are what a search of N trials
proposes (exactly so with ``--max-concurrent 1``).

    python benchmarks/search_efficiency.py --nb201 path/to/nb201_hw.csv --trials 25,50,100 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from evaluators import (
    DataSplits,
    OptimConfig,
    SandwichConfig,
    SupernetEvaluator,
    TabularEvaluator,
    atomic_write_text,
    load_dataset,
    train_supernet,
)
from hwprofiles import load_profile
from nas import Objectives, StudyAdapter, cheap_objectives, make_sampler, open_study
from nas._config import RayConfig
from nas._driver import run_search
from nas._ray_backend import ray_session
from pareto import hypervolume, normalized, pareto_mask
from search_spaces import CellSpace, ChoiceSpace, TableSpace, get_search_space

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_shapes64 import written as shapes_written  # noqa: E402

OBJECTIVES = Objectives({"accuracy": "max", "latency_ms": "min"}, {})
DIRECTIONS = ["max", "min"]
SMALL_MOBILENET = {
    "stage_channels": [16, 32], "stage_strides": [2, 2], "use_se": [False, True],
    "activations": ["relu", "hardswish"], "depths": [1, 2], "kernel_sizes": [3, 5],
    "expand_ratios": [2, 4], "head_channels": 64,
}
SAMPLERS = {  # Optuna's defaults, as plain Optuna would run them, and the toolkit's own
    "random": {"name": "random"},
    "nsga2": {"name": "nsga2", "population_size": 50},
    "tpe": {"name": "tpe"},
    "tpe-multivariate": {"name": "tpe", "multivariate": True},
    "gp": {"name": "gp"},
    "model_based": {"name": "model_based"},
}


class TimedAdapter(StudyAdapter):
    """Records how long each proposal took (the sampler's time, on the driver)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ask_seconds: list[float] = []

    def ask(self):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        proposal = super().ask()
        self.ask_seconds.append(time.perf_counter() - start)
        return proposal


class Problem:
    """A space, a table evaluator over all of it, and its true front's scaling."""

    def __init__(self, name: str, space: ChoiceSpace, table: TabularEvaluator) -> None:
        self.name, self.space, self.table = name, space, table
        values = np.array([[m["accuracy"], m["latency_ms"]] for m in (table(a) for a in table.archs())])
        front = values[pareto_mask(values, DIRECTIONS)]
        self.ideal = [front[:, 0].max(), front[:, 1].min()]
        self.nadir = [front[:, 0].min(), front[:, 1].max()]
        self.front_size = f"{len(front)} ({len(np.unique(front, axis=0))} distinct)"
        self.true_hv = self.hv(front)

    def hv(self, values: np.ndarray) -> float:
        scaled = normalized(values, DIRECTIONS, self.ideal, self.nadir)
        # scaled values are losses; hypervolume of losses against (1.1, 1.1)
        return hypervolume(scaled, ["min", "min"], [1.1, 1.1])


def nb201_problem(csv: Path, device: str, accuracy: str = "cifar10",
                  features: bool = True) -> Problem:
    """Returns the NB201 problem; the space declares its cells' structure unless
    ``features`` is False (then it is a plain table of six choices)."""
    frame = pd.read_csv(csv)
    ops = [f"op_{i}" for i in range(6)]
    column = f"{accuracy}_test_acc"
    table = TabularEvaluator.from_frame(frame, ops, {"accuracy": column, "latency_ms": f"{device}_latency"})
    # the published check: 1 - acc/100 and latency / max latency against (1, 1)
    values = frame[[column, f"{device}_latency"]].to_numpy(dtype=float)
    front = values[pareto_mask(values, DIRECTIONS)]
    losses = np.column_stack([1 - front[:, 0] / 100, front[:, 1] / values[:, 1].max()])
    print(f"nb201 {device} {accuracy}: published-normalisation hypervolume of the exact front "
          f"{hypervolume(losses, ['min', 'min'], [1.0, 1.0]):.6f} ({len(front)} archs)")
    cells = CellSpace.nas_bench_201()
    space = cells if features else TableSpace("nb201", cells.choices())
    return Problem(f"nb201-{device}-{accuracy}", space, table)


def mobilenet_data(name: str, shapes_n: int, cache_dir: Path) -> DataSplits:
    """Returns the mobilenet problem's splits: ``digits`` (359 validation images) or
    ``shapes`` (``shapes_n`` images at 16x16, half for validation; the npz is written
    once into ``cache_dir``)."""
    if name == "digits":
        return load_dataset("digits", path=None, image_size=16, val_fraction=0.2,
                            test_fraction=0.2, seed=0)
    path = shapes_written(cache_dir / f"shapes-{shapes_n}.npz", shapes_n)
    return load_dataset("npz", path=path, image_size=16, val_fraction=0.5,
                        test_fraction=0.1, seed=0)


def mobilenet_problem(cache: Path, epochs: int, data_name: str, shapes_n: int) -> Problem:
    """Returns the mobilenet-400 problem, its table read from ``cache`` or built there
    (a supernet trained on ``data_name``, then all 400 archs evaluated with it); the
    settings it was built with are kept beside it (``*.settings.json``).

    Raises:
        SystemExit: ``cache`` exists but was built with other settings, or records none.
    """
    space = get_search_space("mobilenet_elastic", **SMALL_MOBILENET)
    settings = {"data": data_name, "supernet_epochs": epochs, "space": SMALL_MOBILENET,
                **({"shapes_n": shapes_n} if data_name == "shapes" else {})}
    recorded = cache.with_name(f"{cache.stem}.settings.json")
    if cache.exists():
        kept = json.loads(recorded.read_text()) if recorded.exists() else None
        if kept != json.loads(json.dumps(settings)):
            raise SystemExit(
                f"--mobilenet-cache {cache}: built with {kept or 'unrecorded settings'}, not "
                f"{settings}; delete it or name another file to build the table again")
        frame = pd.read_csv(cache)
    else:
        data = mobilenet_data(data_name, shapes_n, cache.parent)
        print(f"mobilenet: {data_name}, {len(data.y_train)} training and {len(data.y_val)} "
              "validation images", flush=True)
        start = time.perf_counter()
        supernet, result = train_supernet(
            space, data, epochs=epochs, batch_size=128, optim=OptimConfig(),
            sandwich=SandwichConfig(), seed=0,
        )
        print(f"mobilenet: supernet trained in {time.perf_counter() - start:.0f} s "
              f"(largest {result.max_accuracy:.3f}, smallest {result.min_accuracy:.3f})")
        evaluator = SupernetEvaluator(
            space_name="mobilenet_elastic", space_options=SMALL_MOBILENET,
            state_dict=supernet.state_dict(), data=data, profile=load_profile("cpu"),
            latency_cache=None, lock_dir=None,
        )
        rows = []
        archs = list(space.enumerate())
        start = time.perf_counter()
        for i, arch in enumerate(archs):
            rows.append({**arch.to_dict(), **evaluator(arch)})
            if (i + 1) % 50 == 0:
                print(f"  evaluated {i + 1}/{len(archs)} archs ({time.perf_counter() - start:.0f} s)")
        frame = pd.DataFrame(rows)
        atomic_write_text(cache, frame.to_csv(index=False))
        atomic_write_text(recorded, json.dumps(settings, indent=1))
    table = TabularEvaluator.from_frame(frame, list(space.choices()), {"accuracy": "accuracy", "latency_ms": "latency_ms"})
    return Problem(f"mobilenet-400-{data_name}", space, table)


def run_once(problem: Problem, sampler: dict, seed: int, checkpoints: list[int], workdir: Path,
             concurrent: int) -> list[tuple[float, float, float]]:
    """Runs one search of ``max(checkpoints)`` trials and returns, per checkpoint N, the
    hypervolume fraction of its first N trials (by trial number), the median seconds the
    sampler took per proposal over them and their wall seconds per trial (first start to
    N-th finish, over N)."""
    options = dict(sampler)
    name = options.pop("name")
    path = workdir / f"{problem.name}-{name}-{seed}-{time.time_ns()}.db"
    study = open_study(
        f"sqlite:///{path}", "bench", OBJECTIVES,
        make_sampler(name, seed=seed, objectives=OBJECTIVES, space=problem.space,
                     known=cheap_objectives(problem.table, problem.space, OBJECTIVES),
                     max_concurrent=concurrent, **options),
    )
    adapter = TimedAdapter(study, problem.space, OBJECTIVES)
    run_search(
        adapter, problem.table, n_trials=max(checkpoints), max_concurrent=concurrent,
        resources={"CPU": 1}, tune_dir=workdir / "tune", name=f"{problem.name}-{seed}-{time.time_ns()}",
    )
    trials = sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)),
                    key=lambda t: t.number)
    results = []
    for n in checkpoints:
        first = trials[:n]
        wall = max(t.datetime_complete for t in first) - first[0].datetime_start
        fraction = problem.hv(np.array([t.values for t in first])) / problem.true_hv
        results.append((fraction, statistics.median(adapter.ask_seconds[:n]),
                        wall.total_seconds() / len(first)))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nb201", type=Path, help="path of nb201_hw.csv (problem b)")
    parser.add_argument("--device", default="fpga", choices=["raspi4", "pixel3", "eyeriss", "fpga"])
    parser.add_argument("--accuracy", default="cifar10", choices=["cifar10", "cifar100", "imagenet16"],
                        help="nb201's test-accuracy column")
    parser.add_argument("--problems", default="mobilenet,nb201")
    parser.add_argument("--no-cell-features", action="store_true",
                        help="nb201 as a plain table: the space declares no structure (live "
                             "edges, depth) for a surrogate to learn from")
    parser.add_argument("--trials", default="100", help="N for nb201, comma-separated (25,50,100,200)")
    parser.add_argument("--mobilenet-trials", type=int, default=40, help="N for mobilenet (of 400)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--max-concurrent", type=int, default=1)
    parser.add_argument("--mobilenet-data", choices=("shapes", "digits"), default="shapes",
                        help="data the mobilenet problem's supernet trains and is scored on "
                             "(default shapes, 6,000 validation images; on digits' 359 the "
                             "true front is ordered by sampling noise)")
    parser.add_argument("--shapes-n", type=int, default=12000,
                        help="images of the shapes set (default 12000, half for validation)")
    parser.add_argument("--mobilenet-cache", type=Path,
                        help="the mobilenet table, built once "
                             "(default runs/bench_mobilenet400-DATA.csv)")
    parser.add_argument("--supernet-epochs", type=int, default=15)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    problems: list[tuple[Problem, list[int]]] = []
    for name in args.problems.split(","):
        if name == "mobilenet":
            default = Path(f"runs/bench_mobilenet400-{args.mobilenet_data}.csv")
            cache = args.mobilenet_cache or default
            cache.parent.mkdir(parents=True, exist_ok=True)
            problems.append((mobilenet_problem(cache, args.supernet_epochs, args.mobilenet_data,
                                               args.shapes_n), [args.mobilenet_trials]))
        elif name == "nb201":
            if args.nb201 is None:
                parser.error("--nb201 PATH is needed for the nb201 problem")
            nb201 = nb201_problem(args.nb201, args.device, args.accuracy,
                                  features=not args.no_cell_features)
            problems.append((nb201, sorted(int(n) for n in args.trials.split(","))))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ray_session(RayConfig(dashboard=False)):
        for problem, checkpoints in problems:
            for label in args.samplers.split(","):
                per_seed = [run_once(problem, SAMPLERS[label], seed, checkpoints, Path(tmp),
                                     args.max_concurrent) for seed in range(args.seeds)]
                for i, trials in enumerate(checkpoints):
                    fractions = [runs[i][0] for runs in per_seed]
                    rows.append((problem.name, problem.front_size, trials, label, fractions,
                                 statistics.median(runs[i][1] for runs in per_seed),
                                 statistics.median(runs[i][2] for runs in per_seed)))
                    print(f"  {problem.name} N={trials} {label}: {statistics.fmean(fractions):.3f}",
                          flush=True)
    print()
    print("| problem | true front archs | N | sampler | hypervolume fraction (mean ± sd over seeds) "
          "| per seed | s per proposal | s per trial |")
    print("|---|---|---|---|---|---|---|---|")
    for name, front, trials, label, fractions, ask, seconds in rows:
        sd = statistics.stdev(fractions) if len(fractions) > 1 else 0.0
        print(f"| {name} | {front} | {trials} | {label} | {statistics.fmean(fractions):.3f} ± {sd:.3f} | "
              f"{' '.join(f'{f:.3f}' for f in fractions)} | {ask:.2f} | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
