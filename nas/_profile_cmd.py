"""``nas profile``: a profile's settings and the measured latency of a reference model."""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.table import Table

from evaluators.latency import BackendUnavailable, LatencyMeter
from hwprofiles import load_profile
from search_spaces import get_search_space

REFERENCE_SPACE = "mobilenet_elastic"


def show_profile(name: str, image_size: int, channels: int, runs: int, console: Console) -> int:
    """Prints the profile and ``runs`` independent latency measurements of the default
    space's largest subnet; returns the exit status (1 if the backend is unavailable).

    Raises:
        ProfileError: the profile cannot be loaded.
    """
    profile = load_profile(name)
    table = Table(title=f"hardware profile {profile.name}", show_header=False)
    for key, value in profile.model_dump().items():
        table.add_row(key, str(value))
    console.print(table)
    space = get_search_space(REFERENCE_SPACE)
    model = space.build_supernet(num_classes=10, in_channels=channels).extract(space.max_arch())
    shape = (profile.batch_size, channels, image_size, image_size)
    meter = LatencyMeter(profile)
    results = []
    try:
        for _ in range(runs):
            results.append(meter.measure(model, shape))
    except BackendUnavailable as exc:
        console.print(f"[yellow]{exc}[/]")
        return 1
    out = Table(title=f"reference: {REFERENCE_SPACE} largest subnet, input {shape}")
    for column in ("run", "median ms", "p90 ms", "CV", "repeats"):
        out.add_column(column, justify="right")
    for i, lat in enumerate(results, 1):
        out.add_row(str(i), f"{lat.median_ms:.4f}", f"{lat.p90_ms:.4f}", f"{lat.cv:.3f}", str(lat.n))
    console.print(out)
    medians = [lat.median_ms for lat in results]
    spread = statistics.pstdev(medians) / statistics.fmean(medians) if len(medians) > 1 else 0.0
    console.print(
        f"median of medians {statistics.median(medians):.4f} ms; within-run CV "
        f"{statistics.median(lat.cv for lat in results):.3f} (median); run-to-run CV of the "
        f"median {spread:.3f}"
    )
    return 0
