"""``nas profile``: a profile's settings, the measured latency of a reference model, and
whether the device is quiet enough now to measure on."""

from __future__ import annotations

import os
import random
import statistics
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evaluators.latency import (
    BackendUnavailable,
    LatencyCache,
    LatencyMeter,
    LatencyModel,
    busy_device_warning,
    model_path,
)
from hwprofiles import load_profile
from nas._cli import REFERENCE_SPACE_NAME
from search_spaces import get_search_space

REFERENCE_SPACE = REFERENCE_SPACE_NAME
# the repeatability a profile without max_cv is held to
DEFAULT_FIT_CV = 0.1


def show_profile(name: str, image_size: int, channels: int, runs: int, console: Console) -> int:
    """Prints the profile, whether the device is quiet now, and ``runs`` independent latency
    measurements of the default space's largest subnet with the noise floor they show (CV
    within a measurement and of the medians between them) and whether this device is fit to
    measure on; returns the exit status (1 if the backend is unavailable).

    Raises:
        ProfileError: the profile cannot be loaded.
    """
    profile = load_profile(name)
    table = Table(title=f"hardware profile {escape(profile.name)}", show_header=False)
    for key, value in profile.model_dump().items():
        table.add_row(key, escape(str(value)))
    console.print(table)
    problems: list[str] = []
    if profile.device == "cpu":
        busy = busy_device_warning(profile.pin_cores, threads=profile.threads or 1,
                                   max_load=profile.max_load, seconds=1.0)
        if busy:
            problems.append(busy)
    space = get_search_space(REFERENCE_SPACE)
    model = space.build_supernet(num_classes=10, in_channels=channels).extract(space.max_arch())
    shape = (profile.batch_size, channels, image_size, image_size)
    meter = LatencyMeter(profile)
    results = []
    try:
        for _ in range(runs):
            results.append(meter.measure(model, shape))
    except BackendUnavailable as exc:
        console.print(f"[yellow]{escape(str(exc))}[/]")
        return 1
    out = Table(title=f"reference: {REFERENCE_SPACE} largest subnet, input {shape}")
    for column in ("run", "median ms", "p90 ms", "CV", "repeats", "reliable"):
        out.add_column(column, justify="right")
    for i, lat in enumerate(results, 1):
        out.add_row(str(i), f"{lat.median_ms:.4f}", f"{lat.p90_ms:.4f}", f"{lat.cv:.3f}",
                    str(lat.n), "yes" if lat.reliable else "[yellow]no[/]")
    console.print(out)
    medians = [lat.median_ms for lat in results]
    spread = statistics.pstdev(medians) / statistics.fmean(medians) if len(medians) > 1 else 0.0
    within = statistics.median(lat.cv for lat in results)
    console.print(
        f"noise floor: within-measurement CV {within:.3f} (median), run-to-run CV of the "
        f"median {spread:.3f}; median of medians {statistics.median(medians):.4f} ms"
    )
    bound = profile.max_cv if profile.max_cv is not None else DEFAULT_FIT_CV
    problems += [f"run {i}: {lat.unreliable_reason}" for i, lat in enumerate(results, 1)
                 if not lat.reliable]
    if spread > bound / 2:
        problems.append(f"the medians of repeated measurements differ by CV {spread:.3f}, more "
                        f"than half the profile's max_cv ({bound:g}): differences of that size "
                        "between models would be noise")
    if problems:
        console.print("[yellow]not fit to measure on now:[/]")
        for problem in problems:
            console.print(f"  - {escape(problem)}")
    else:
        console.print("[green]fit to measure on[/]: quiet cores and repeatable medians")
    return 0


# subnets, none of them fitted on, that check a new latency model
CHECK_ARCHS = 12


def default_cache_dir() -> Path:
    """Returns the per-user cache folder: ``$XDG_CACHE_HOME/hwnas`` or ``~/.cache/hwnas``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hwnas"


def build_latency_model(name: str, space_name: str, image_size: int, channels: int,
                        fit_archs: int, cache_dir: Path | None, console: Console) -> int:
    """Builds the latency model of ``space_name`` on profile ``name`` (block table in the
    cache's latency database, model JSON beside it), checks it on subnets it was not fitted
    on, and prints both; returns the exit status (1 if the backend is unavailable).

    Raises:
        ProfileError: the profile cannot be loaded.
        SearchSpaceError: the space is unknown.
        LatencyModelError: the space's subnets are not a chain of blocks.
    """
    from scipy.stats import spearmanr

    profile = load_profile(name)
    space = get_search_space(space_name)
    folder = cache_dir if cache_dir is not None else default_cache_dir()
    cache = LatencyCache(folder / "latency_cache.db")
    shape = (profile.batch_size, channels, image_size, image_size)
    try:
        meter = LatencyMeter(profile, cache=cache)
    except BackendUnavailable as exc:
        console.print(f"[yellow]{escape(str(exc))}[/]")
        return 1
    with console.status(f"building the latency model of {escape(space_name)} on "
                        f"{escape(profile.name)}") as s:
        model, table = LatencyModel.build(
            space, meter, shape, fit_archs=fit_archs,
            progress=lambda i, n: s.update(f"measuring blocks and subnets: {i}/{n}"))
    path = model_path(cache, space.name, profile.fingerprint(), shape)
    assert path is not None
    model.save(path)
    a, b, c = model.coefficients
    console.print(f"latency model of {escape(space.name)} on {escape(profile.name)}, "
                  f"input {list(shape)}: "
                  f"{model.blocks} distinct blocks, fitted on {len(model.fitted_on)} subnets in "
                  f"{model.build_seconds:.0f} s; predicted ms = {a:.3f} x block sum "
                  f"{b:+.4f} x blocks {c:+.4f}")
    console.print(f"model: {escape(str(path))}")
    rng = random.Random(12345)
    supernet = space.build_supernet(num_classes=10, in_channels=channels)
    checked: list[str] = []
    errors: list[tuple[float, float]] = []
    while len(checked) < CHECK_ARCHS:
        arch = space.sample(rng)
        if arch.key() in model.fitted_on or arch.key() in checked:
            continue
        subnet = supernet.extract(arch).eval()
        measured = meter.measure(subnet, shape, key=arch.key()).median_ms
        errors.append((model.predict(subnet, table), measured))
        checked.append(arch.key())
    within = sum(abs(p - m) <= 0.1 * m for p, m in errors) / len(errors)
    rho = float(spearmanr([p for p, _ in errors], [m for _, m in errors]).statistic)
    console.print(f"check on {len(errors)} subnets it was not fitted on: {within:.0%} within "
                  f"±10% of the measured latency, Spearman rho {rho:.3f}")
    return 0
