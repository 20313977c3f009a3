"""Does the supernet rank subnets as training them alone would? Kendall tau and Spearman rho, measured.

A search trusts the supernet's inherited accuracy to order subnets. This benchmark trains
``--subnets`` subnets spread over the space stand-alone (from scratch, each with the same
epochs and recipe), scores the same subnets with weights inherited from the supernet (BN
recalibrated, as the search does), and reports the rank agreement of the two with a
bootstrap 95% interval over the subnets.

Stand-alone subnets are trained for twice the supernet's epochs by default: the reference
is the order the subnets reach when trained, not how fast they start, and a sandwich step
trains several subnets that share their weights. ``--spacing log-macs`` spreads the subnets
evenly in log MACs from the smallest arch to the largest, instead of at quantiles of random
archs' MACs, which crowd the middle.

The data: on the quickstart's digits every subnet reaches 0.98-1.0 and the order is noise,
so by default the data are the synthetic shapes of ``make_shapes64.py`` (written once into
the output folder) at the config's image size. ``--data glyphs`` takes the glyphs of
``make_glyphs.py`` (at that size too), which tell subnets apart better; ``--data config``
takes the config's own data.

Several supernet recipes can be compared in one run on the same stand-alone subnets::

    python benchmarks/supernet_ranking.py configs/quickstart.yaml \\
        --recipe config --recipe long:epochs=60,random_subnets=4,recalibration_batches=32

A recipe is ``name`` or ``name:key=value,...`` over the config's ``supernet:`` keys plus
``recalibration_batches`` and ``finetune_epochs`` (``search.recalibration_batches`` and
``search.finetune_epochs``: how a trial scores a subnet, which the benchmark does the same
way); ``config`` is the config as it is. Recipes that differ only in how they score share
one trained supernet. The first recipe's learning rate, weight decay and label smoothing
also train the stand-alone subnets. ``--set`` changes the config as ``nas search`` does,
e.g. a larger ``data.val_fraction`` for a less noisy validation accuracy.

What it reports beside each recipe's tau and rho:
- with two or more stand-alone seeds, the seeds' agreement with each other, and the noise
  ceiling: the tau that a ranking with no error of its own would be expected to show
  against the seeds' mean (the means, their spread shrunk by the noise they still carry,
  taken as the truth, and 2,000 references drawn around it with that noise). Below it the
  supernet errs; at it, only more seeds can show more;
- the share of the subnet pairs the reference tells apart (their means more than 1.96
  standard errors apart, the seeds' variance pooled) that the supernet orders the same
  way: on closer pairs the reference's own order is a coin toss;
- with three seeds or more, how one stand-alone run ranks the mean of the others (each
  seed held out in turn), beside how the supernet ranks the same means: whether the
  supernet ranks as well as training every subnet alone once more would.

Supernets and stand-alone scores are kept in ``--out`` and reused by a later run with the
same settings (more ``--standalone-seeds`` train only the new seeds; a search-space option
that changes only the supernet, such as ``mobilenet_elastic``'s ``kernel_transform``,
trains a new supernet beside the same stand-alone scores). ``--workers`` trains
that many stand-alone runs side by side, one process each, torch's threads shared among
them.

Measured (``supernet_ranking.md`` beside this script has every recipe, the commands and
what the misses are): with 16 subnets, no recipe reaches tau 0.8. On 20,000 glyphs (10,000
to train, four 10-epoch stand-alone seeds, noise ceiling 0.89) the best recipes rank at 0.64
[0.30, 0.91]: uniform single paths (``sampling=uniform,random_subnets=4``), or the sandwich
with four fine-tuning epochs per subnet. On 60,000 glyphs (50,000 to train, four 2-epoch
seeds, ceiling 0.905, one more stand-alone run 0.82) uniform supernets rank at 0.70-0.73
with 3 to 12 epochs, and at 0.75 [0.45, 0.95] with 6 epochs and one fine-tuning epoch per
subnet (0.72 with 12 and one); kernel transformation matrices did not raise tau.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from evaluators import (
    DataSplits,
    accuracy,
    atomic_write,
    atomic_write_text,
    count_macs,
    cross_entropy_step,
    inherited_subnet,
    load_dataset,
    train,
    train_supernet,
)
from nas._config import ConfigError, RunSpec, SupernetConfig, load_config
from search_spaces import Arch, SearchSpace, Supernet, get_search_space

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_glyphs import written as glyphs_written
from make_shapes64 import written as shapes_written
from ranking_agreement import (
    agreement,
    held_out,
    noise_ceiling,
    reference_agreement,
    resolved_pairs,
)

# the search: keys of its ``search:`` section that change what a trial scores
SEARCH_KEYS = ("recalibration_batches", "finetune_epochs")
RECIPE_KEYS = (*SupernetConfig.model_fields, *SEARCH_KEYS)


@dataclass(frozen=True)
class Recipe:
    """A supernet recipe: the config's ``supernet:`` section, and how a trial scores a subnet
    of it (BN recalibration batches, fine-tuning epochs)."""

    name: str
    supernet: SupernetConfig
    recalibration_batches: int
    finetune_epochs: int

    def scoring(self) -> dict[str, int]:
        """Returns the ``search:`` settings of scoring a subnet, by key."""
        return {"recalibration_batches": self.recalibration_batches,
                "finetune_epochs": self.finetune_epochs}

    def digest(self, data_key: str, space_key: str, seed: int) -> str:
        """Returns a short hash of everything the trained supernet depends on."""
        text = json.dumps([self.supernet.model_dump(), data_key, space_key, seed], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def start_worker(threads: int, parent: int) -> None:
    """Sets a stand-alone worker's torch threads and makes it exit once ``parent`` (the
    benchmark) is gone: killed, the benchmark leaves no worker training on beside the next
    run. Returns at once; the watch runs in a daemon thread."""
    torch.set_num_threads(threads)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def parse_recipe(text: str, spec: RunSpec) -> Recipe:
    """Returns the recipe ``name`` or ``name:key=value,...`` over the config's.

    Raises:
        SystemExit: an unknown key or a value the config does not accept.
    """
    name, _, rest = text.partition(":")
    values: dict[str, Any] = spec.supernet.model_dump()
    scoring: dict[str, Any] = {key: getattr(spec.search, key) for key in SEARCH_KEYS}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in RECIPE_KEYS:
            raise SystemExit(f"--recipe {text!r}: {item!r} is not key=value with a key in {list(RECIPE_KEYS)}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:  # a bare word: a string value, such as sampling=uniform
            parsed = value
        (scoring if key in SEARCH_KEYS else values)[key] = parsed
    try:
        checked = spec.search.model_validate({**spec.search.model_dump(), **scoring})
        return Recipe(name or "config", SupernetConfig(**values), checked.recalibration_batches,
                      checked.finetune_epochs)
    except ValueError as exc:
        raise SystemExit(f"--recipe {text!r}: {exc}") from exc


def spread_archs(space: SearchSpace, data: DataSplits, n: int, seed: int,
                 spacing: str = "quantiles") -> list[Arch]:
    """Returns ``n`` distinct archs spread over the space: the smallest and the largest, and
    between them archs of a few hundred random ones picked by MACs (MACs only spread the
    choice here; nothing is ranked by them).

    ``spacing`` ``quantiles`` takes the random archs at even quantiles of their MACs, which
    crowds the middle of the range (random archs are mostly middling); ``log-macs`` takes
    the random arch nearest each of ``n - 2`` MACs evenly spaced in log between the
    smallest and the largest arch's, so that small, middling and large subnets are all there.
    """
    rng = random.Random(seed)
    supernet = space.build_supernet(num_classes=data.num_classes, in_channels=data.input_shape[1])
    pool = {a.key(): a for a in [space.sample(rng) for _ in range(max(200, 20 * n))]}
    extremes = [space.min_arch(), space.max_arch()]
    for arch in extremes:
        pool.pop(arch.key(), None)
    macs = sorted(((count_macs(supernet.extract(a), data.input_shape), k) for k, a in pool.items()))
    if spacing == "quantiles":
        picks = np.linspace(0, len(macs) - 1, max(0, n - 2)).round().astype(int)
        return extremes + [pool[macs[i][1]] for i in dict.fromkeys(picks.tolist())]
    low, high = (count_macs(supernet.extract(a), data.input_shape) for a in extremes)
    log_macs = np.log([m for m, _ in macs])
    free = np.ones(len(macs), dtype=bool)
    chosen = []
    for goal in np.linspace(np.log(low), np.log(high), n)[1:-1]:
        i = int(np.argmin(np.where(free, np.abs(log_macs - goal), np.inf)))
        free[i] = False
        chosen.append(pool[macs[i][1]])
    return extremes + chosen


def train_standalone(space: SearchSpace, arch: Arch, data: DataSplits, recipe: SupernetConfig,
                     *, epochs: int, batch_size: int, seed: int) -> float:
    """Returns the validation accuracy of ``arch`` trained from scratch with ``recipe``'s
    learning rate, weight decay and label smoothing for ``epochs``."""
    torch.manual_seed(seed)
    model = space.build_supernet(num_classes=data.num_classes, in_channels=data.input_shape[1]).extract(arch)
    train(
        model,
        lambda epoch: data.loader("train", batch_size, shuffle=True, seed=seed + epoch),
        cross_entropy_step(recipe.label_smoothing),
        epochs=epochs,
        steps_per_epoch=-(-int(data.y_train.numel()) // batch_size),
        optim=recipe.optim(),
    )
    return accuracy(model, data.loader("val", 512))


def inherited_accuracy(supernet: Supernet, arch: Arch, data: DataSplits, recipe: Recipe, *,
                       batch_size: int, seed: int) -> float:
    """Returns the validation accuracy of ``arch`` with the supernet's weights, fine-tuned
    and BatchNorm recalibrated as ``recipe`` says: what a trial of the search scores."""
    subnet = inherited_subnet(supernet, arch, data, batch_size=batch_size,
                              recalibration_batches=recipe.recalibration_batches,
                              finetune_epochs=recipe.finetune_epochs, seed=seed)
    return accuracy(subnet, data.loader("val", 512))


def load_data(args: argparse.Namespace, spec: RunSpec, out: Path) -> tuple[DataSplits, str]:
    """Returns the data splits and a key naming them (for the caches)."""
    d = spec.data
    image_size = args.image_size or d.image_size
    if args.data == "config":
        data = load_dataset(d.dataset, path=d.path, image_size=image_size, val_fraction=d.val_fraction,
                            test_fraction=d.test_fraction, seed=spec.experiment.seed)
        return data, f"{d.dataset}:{d.path}:{image_size}"
    if args.data == "glyphs":  # drawn at the image size itself, so no resize blurs a stroke
        n, path = args.glyphs_n, glyphs_written(out / f"glyphs-{args.glyphs_n}-{image_size}.npz",
                                                args.glyphs_n, size=image_size)
    else:
        n, path = args.shapes_n, shapes_written(out / f"shapes-{args.shapes_n}.npz", args.shapes_n)
    data = load_dataset("npz", path=path, image_size=image_size, val_fraction=d.val_fraction,
                        test_fraction=d.test_fraction, seed=spec.experiment.seed)
    return data, f"{args.data}:{n}:{image_size}:{d.val_fraction}:{d.test_fraction}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("config", type=Path, help="a run config (search space, data, supernet recipe)")
    parser.add_argument("--subnets", type=int, default=16, help="subnets trained stand-alone (default 16)")
    parser.add_argument("--spacing", choices=("quantiles", "log-macs"), default="quantiles",
                        help="how the subnets are spread: even quantiles of random archs' MACs "
                             "(default), or MACs evenly spaced in log from the smallest arch "
                             "to the largest")
    parser.add_argument("--recipe", action="append", default=None,
                        help="a supernet recipe, name[:key=value,...]; repeat to compare (default: config)")
    parser.add_argument("--standalone-epochs", type=int, default=None,
                        help="epochs of each stand-alone subnet (default: twice the first "
                             "recipe's supernet epochs)")
    parser.add_argument("--standalone-seeds", type=int, default=2,
                        help="stand-alone runs per subnet, averaged; with 2 or more the runs' "
                             "agreement is reported as the reference's own noise (default 2)")
    parser.add_argument("--workers", type=int, default=1,
                        help="stand-alone runs trained side by side, each in its own process "
                             "with an equal share of torch's threads (default 1)")
    parser.add_argument("--data", choices=("shapes", "glyphs", "config"), default="shapes",
                        help="synthetic shapes (default) or glyphs written here, or the "
                             "config's data")
    parser.add_argument("--shapes-n", type=int, default=4000, help="images of the shapes set (default 4000)")
    parser.add_argument("--glyphs-n", type=int, default=20000,
                        help="images of the glyphs set, 40 classes (default 20000)")
    parser.add_argument("--image-size", type=int, default=None, help="resize images (default: the config's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config key as nas search does, e.g. "
                             "--set 'search_space.expand_ratios=[1,3,6]'")
    parser.add_argument("--out", type=Path, default=None,
                        help="where supernets, scores and results go (default runs/supernet-ranking/NAME)")
    args = parser.parse_args(argv)
    if args.subnets < 4:
        parser.error("--subnets: at least 4 for a rank correlation")
    if args.standalone_seeds < 1:
        parser.error("--standalone-seeds: at least 1")
    if args.workers < 1:
        parser.error("--workers: at least 1")
    console = Console()
    try:
        spec = load_config(args.config, args.overrides)
    except ConfigError as exc:
        parser.error(str(exc))
    out = args.out or Path("runs") / "supernet-ranking" / spec.experiment.name
    out.mkdir(parents=True, exist_ok=True)
    seed = spec.experiment.seed
    space = get_search_space(spec.search_space.name, **spec.search_space.options())
    assert isinstance(space, SearchSpace)
    data, data_key = load_data(args, spec, out)
    space_key = json.dumps([spec.search_space.name, spec.search_space.options()], sort_keys=True, default=str)
    # a subnet trained alone is the same whatever the supernet-only options say
    subnet_options = {k: v for k, v in spec.search_space.options().items()
                      if k not in space.supernet_only_options}
    subnet_key = json.dumps([spec.search_space.name, subnet_options], sort_keys=True, default=str)
    recipes = [parse_recipe(r, spec) for r in (args.recipe or ["config"])]
    batch_size = spec.data.batch_size
    archs = spread_archs(space, data, args.subnets, seed, args.spacing)
    console.print(f"data {data_key}: {data.summary()}")

    # stand-alone: the same recipe for every subnet (the first recipe's optimiser settings),
    # trained once per seed; the reference is the mean over seeds
    epochs = args.standalone_epochs or 2 * recipes[0].supernet.epochs
    base = recipes[0].supernet
    seeds = [seed + i for i in range(args.standalone_seeds)]
    runs: dict[int, dict[str, float]] = {}
    paths: dict[int, Path] = {}
    for run_seed in seeds:
        alone_key = hashlib.sha256(json.dumps(
            [data_key, subnet_key, run_seed, epochs, base.lr, base.weight_decay,
             base.label_smoothing]
        ).encode()).hexdigest()[:12]
        paths[run_seed] = out / f"standalone-{alone_key}.json"
        runs[run_seed] = (json.loads(paths[run_seed].read_text())
                          if paths[run_seed].exists() else {})
    todo = [(s, a) for s in seeds for a in archs if a.key() not in runs[s]]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        workers = min(args.workers, len(todo)) or 1
        task = progress.add_task(
            f"stand-alone, {epochs} epochs x {len(seeds)} seeds"
            + (f", {workers} processes" if workers > 1 else ""),
            total=len(archs) * len(seeds), completed=len(archs) * len(seeds) - len(todo))

        def keep(run_seed: int, arch: Arch, score: float) -> None:
            runs[run_seed][arch.key()] = score
            atomic_write_text(paths[run_seed], json.dumps(runs[run_seed], indent=1))
            progress.advance(task)

        if workers == 1:
            for run_seed, arch in todo:
                keep(run_seed, arch, train_standalone(space, arch, data, base, epochs=epochs,
                                                      batch_size=batch_size, seed=run_seed))
        else:
            # torch's threads split among the processes; each run seeds itself, so its score
            # does not depend on which process trains it
            threads = max(1, torch.get_num_threads() // workers)
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=start_worker, initargs=(threads, os.getpid()))
            try:
                jobs: dict[Future[float], tuple[int, Arch]] = {
                    pool.submit(train_standalone, space, arch, data, base, epochs=epochs,
                                batch_size=batch_size, seed=run_seed): (run_seed, arch)
                    for run_seed, arch in todo
                }
                for job in as_completed(jobs):
                    keep(*jobs[job], job.result())
            finally:
                # on an error or Ctrl-C the queued runs are dropped, not trained to the end
                pool.shutdown(wait=True, cancel_futures=True)
    per_seed = np.array([[runs[s][a.key()] for a in archs] for s in seeds])
    standalone = per_seed.mean(axis=0)
    reference = reference_agreement(per_seed, seed)
    ceiling = noise_ceiling(per_seed, seed)
    if reference is not None:
        for pair in reference["pairs"]:
            a, b = (seeds[i] for i in pair["seeds"])
            console.print(
                f"stand-alone seed {a} against seed {b}: Kendall tau {pair['kendall_tau']:.3f} "
                f"[{pair['kendall_tau_low']:.2f}, {pair['kendall_tau_high']:.2f}], "
                f"Spearman rho {pair['spearman_rho']:.3f}"
            )
        console.print(
            f"one stand-alone run against another (the most a supernet can show against one run): "
            f"mean Kendall tau {reference['kendall_tau_mean']:.3f}, mean Spearman rho "
            f"{reference['spearman_rho_mean']:.3f}; spread of a subnet over seeds "
            f"{per_seed.std(axis=0, ddof=1).mean():.3f} (mean sd)"
        )
        if (halves := reference["halves"]) is not None:
            console.print(
                f"the mean of {halves['seeds_per_half']} stand-alone runs against the mean of "
                f"{halves['seeds_per_half']} others: Kendall tau {halves['kendall_tau_mean']:.3f}, "
                f"Spearman rho {halves['spearman_rho_mean']:.3f} (mean over {halves['splits']} "
                f"splits)"
            )
    if ceiling is not None:
        console.print(
            "noise ceiling, the most a supernet can show against this reference: "
            + ("undefined, the seeds' spread being all noise" if np.isnan(ceiling["kendall_tau"])
               else f"Kendall tau {ceiling['kendall_tau']:.3f} [{ceiling['kendall_tau_low']:.2f}, "
                    f"{ceiling['kendall_tau_high']:.2f}], Spearman rho "
                    f"{ceiling['spearman_rho']:.3f} (a ranking with no error of its own against "
                    f"the mean of {len(seeds)} runs)")
        )
    bar = held_out(per_seed)
    if bar is not None:
        console.print(
            f"one stand-alone run against the mean of the other {len(seeds) - 1} (each seed held "
            f"out in turn; what training every subnet alone once more would show): Kendall tau "
            f"{bar['kendall_tau']:.3f}, Spearman rho {bar['spearman_rho']:.3f}; a supernet against "
            f"the same means: the table's 'tau, seed held out'"
        )

    results = []
    for recipe in recipes:
        digest = recipe.digest(data_key, space_key, seed)
        weights = out / f"supernet-{digest}.pt"
        start = time.perf_counter()
        if weights.exists():
            supernet = space.build_supernet(num_classes=data.num_classes, in_channels=data.input_shape[1])
            supernet.load_state_dict(torch.load(weights, weights_only=True))
            supernet.eval()
            train_seconds = float(json.loads((out / f"supernet-{digest}.json").read_text())["seconds"])
        else:
            config = recipe.supernet
            with Progress(*columns, console=console) as progress:
                task = progress.add_task(f"supernet {recipe.name}", total=config.epochs)

                def advance(epoch: int, loss: float, task: TaskID = task) -> None:
                    progress.update(task, completed=epoch + 1)

                supernet, _ = train_supernet(
                    space, data, epochs=config.epochs, batch_size=batch_size,
                    optim=config.optim(), sandwich=config.sandwich(),
                    seed=seed, zero_init_residual=config.zero_init_residual, callbacks=[advance],
                )
            train_seconds = time.perf_counter() - start
            atomic_write(weights, partial(torch.save, supernet.state_dict()))
            atomic_write_text(out / f"supernet-{digest}.json",
                              json.dumps({"recipe": recipe.name, "seconds": train_seconds,
                                          "supernet": recipe.supernet.model_dump()}, indent=1))
        inherited = np.array([
            inherited_accuracy(supernet, a, data, recipe, batch_size=batch_size, seed=seed)
            for a in archs
        ])
        results.append({
            "recipe": recipe.name,
            "settings": {**recipe.supernet.model_dump(), **recipe.scoring()},
            "supernet_seconds": train_seconds, **agreement(inherited, standalone, seed),
            "resolved_pairs": resolved_pairs(inherited, per_seed),
            "held_out": held_out(per_seed, inherited),
            "subnets": [{"arch": a.to_dict(), "standalone": float(s),
                         "standalone_runs": by_seed.tolist(), "inherited": float(i)}
                        for a, s, by_seed, i in zip(archs, standalone, per_seed.T, inherited,
                                              strict=True)],
        })

    config_recipe = parse_recipe("config", spec)
    table = Table(title=f"supernet ranking: {len(archs)} subnets of {spec.search_space.name}, {data_key}, "
                        f"stand-alone {epochs} epochs (accuracy {standalone.min():.3f}-{standalone.max():.3f})")
    for column in ("recipe", "settings", "supernet s", "Kendall tau [95% CI]", "Spearman rho [95% CI]",
                   "resolved pairs alike", "tau, seed held out", "inherited acc"):
        table.add_column(column)
    for r in results:
        changed = {k: v for k, v in r["settings"].items()
                   if v != {**spec.supernet.model_dump(), **config_recipe.scoring()}[k]}
        inherited = [s["inherited"] for s in r["subnets"]]
        table.add_row(
            r["recipe"], ", ".join(f"{k}={v}" for k, v in changed.items()) or "as config",
            f"{r['supernet_seconds']:.0f}",
            f"{r['kendall_tau']:.3f} [{r['kendall_tau_low']:.2f}, {r['kendall_tau_high']:.2f}] p={r['kendall_tau_p']:.1e}",
            f"{r['spearman_rho']:.3f} [{r['spearman_rho_low']:.2f}, {r['spearman_rho_high']:.2f}]",
            "-" if (pairs := r["resolved_pairs"]) is None
            else f"{pairs['alike']:.2f} of {pairs['resolved']}/{pairs['pairs']}",
            "-" if r["held_out"] is None else f"{r['held_out']['kendall_tau']:.3f}",
            f"{min(inherited):.3f}-{max(inherited):.3f}",
        )
    console.print(table)
    chance = 1.0 / data.num_classes
    if standalone.max() < 1.5 * chance:
        more_data = {"shapes": " (--shapes-n)", "glyphs": " (--glyphs-n)"}.get(args.data, "")
        console.print(f"[yellow]the stand-alone subnets are near chance ({standalone.max():.3f} "
                      f"at best, chance {chance:.3f}): their order is noise; train longer "
                      f"(--standalone-epochs) or on more data{more_data}[/yellow]")
    for r in results:
        if np.isnan(r["kendall_tau"]):
            console.print(f"[yellow]recipe {r['recipe']}: tau and rho are undefined, the "
                          f"inherited or the stand-alone accuracies being all equal[/yellow]")
    atomic_write_text(out / "ranking.json", json.dumps(
        {"standalone_seeds": seeds, "standalone_epochs": epochs, "reference_agreement": reference,
         "noise_ceiling": ceiling, "held_out": bar, "recipes": results}, indent=1))
    console.print(f"per-subnet scores: {out / 'ranking.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
