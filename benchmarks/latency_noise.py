"""How noisy is measured latency? Repeats full meter runs and reports the spread.

For a few reference CNNs (a MobileNetV2-style network at several widths) and each CPU
hardware profile, runs the latency meter ``--runs`` times and prints, per model:
the median of the per-run medians and p90s, the typical within-run CV (spread of the
timed repeats inside one measurement) and the run-to-run CV of the median (how much a
search objective moves when the same architecture is measured again), and the seconds the
meter spent. ``--windows`` and ``--min-sample-ms`` time the same models under several
protocols, run by run interleaved, so that their figures compare side by side.

With ``--run RUN_DIR`` the models are instead the subnets a finished search evaluated (its
first ``--archs`` distinct trial archs, on the run's own profile and input), so the figures
are those of that search's latency objective, with the share of measurements the meter
flagged unreliable.

Usage:
    python benchmarks/latency_noise.py
    python benchmarks/latency_noise.py --profiles cpu --widths 0.5 1.0 --runs 10 --json out.json
    python benchmarks/latency_noise.py --run runs/quickstart --archs 12 --runs 5
    python benchmarks/latency_noise.py --run runs/quickstart --min-sample-ms 2 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from evaluators import count_macs, count_params
from evaluators.latency import DeviceLock, LatencyMeter
from hwprofiles import HardwareProfile, list_profiles, load_profile

# MobileNetV2 inverted-residual stages (Sandler et al., 2018, Table 2), trimmed after the
# 160-channel stage: (expansion t, output channels c, repeats n, first stride s).
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 2, 1),
           (6, 160, 1, 2))
_STEM = 32
_HEAD = 320


def _width(channels: int, multiplier: float) -> int:
    return max(8, int(channels * multiplier + 4) // 8 * 8)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class TinyMobileNet(nn.Module):
    def __init__(self, width: float, num_classes: int = 10) -> None:
        super().__init__()
        cin = _width(_STEM, width)
        layers: list[nn.Module] = [
            nn.Conv2d(3, cin, 3, 2, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6()]
        for expansion, channels, repeats, stride in _STAGES:
            cout = _width(channels, width)
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        head = _width(_HEAD, width)
        layers += [nn.Conv2d(cin, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C, H/32, W/32)
        return self.classifier(x.mean((2, 3)))


@dataclass
class Row:
    profile: str
    model: str
    mmacs: float
    params_m: float
    runs: int
    repeats: int
    median_ms: float
    p90_ms: float
    within_run_cv: float
    run_to_run_cv: float
    seconds: float
    unreliable: int = 0


def _cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.fmean(values)


def measure(profiles: list[HardwareProfile], name: str, model: nn.Module,
            shape: tuple[int, ...], runs: int, lock: DeviceLock) -> list[Row]:
    """Returns one row per profile for ``model``, measured ``runs`` times with each profile in
    turn (run by run, the profiles interleaved), so that the rows compare side by side."""
    meters = [LatencyMeter(p, lock=lock) for p in profiles]
    results: list[list] = [[] for _ in profiles]
    seconds = [0.0 for _ in profiles]
    for _ in range(runs):
        for i, meter in enumerate(meters):
            started = time.monotonic()
            results[i].append(meter.measure(model, shape))
            seconds[i] += time.monotonic() - started
    rows = []
    for profile, got, spent in zip(profiles, results, seconds, strict=True):
        medians = [r.median_ms for r in got]
        rows.append(Row(
            profile=_label(profile, len(profiles) > 1), model=name,
            mmacs=count_macs(model, shape) / 1e6, params_m=count_params(model) / 1e6,
            runs=runs, repeats=profile.repeats,
            median_ms=statistics.median(medians),
            p90_ms=statistics.median(r.p90_ms for r in got),
            within_run_cv=statistics.median(r.cv for r in got),
            run_to_run_cv=_cv(medians) if runs > 1 else 0.0,
            seconds=spent, unreliable=sum(not r.reliable for r in got),
        ))
    return rows


def _label(profile: HardwareProfile, variants: bool) -> str:
    if not variants:
        return profile.name
    return f"{profile.name} (windows {profile.windows}, {profile.min_sample_ms:g} ms samples)"


def _variants(profile: HardwareProfile, windows: list[int] | None,
              min_sample_ms: list[float] | None) -> list[HardwareProfile]:
    """Returns ``profile`` once per requested window count and sample length (every pairing;
    the profile's own value where a list is not given): itself when neither is asked."""
    return [HardwareProfile(**{**profile.model_dump(), "windows": w, "min_sample_ms": ms})
            for w in windows or [profile.windows]
            for ms in min_sample_ms or [profile.min_sample_ms]]


def run_models(run_dir: str, archs: int) -> tuple[HardwareProfile, dict[str, nn.Module],
                                                   tuple[int, ...]]:
    """Returns a finished run's profile, its first ``archs`` distinct trial subnets (from the
    trained supernet) and its input shape."""
    import pandas as pd

    from nas import RunDir
    from nas._stage import RunContext
    from search_spaces import Arch

    run = RunDir(Path(run_dir))
    ctx = RunContext(spec=run.load_spec(), run=run)
    supernet = ctx.space.build_supernet(num_classes=ctx.data.num_classes,
                                        in_channels=ctx.data.input_shape[1])
    supernet.load_state_dict(run.load_state_dict(run.supernet))
    trials = pd.read_parquet(run.trials)
    trials = trials[trials["state"] == "COMPLETE"].drop_duplicates("arch").head(archs)
    models = {f"trial_{int(t.number)}": supernet.extract(Arch.from_json(t.arch)).eval()
              for t in trials.itertuples()}
    return ctx.profile, models, tuple(ctx.data.input_shape)


def print_table(rows: list[Row]) -> None:
    headers = ["profile", "model", "MMACs", "params (M)", "median ms", "p90 ms",
               "within-run CV", "run-to-run CV", "runs x repeats", "unreliable", "seconds"]
    cells = [[r.profile, r.model, f"{r.mmacs:.1f}", f"{r.params_m:.2f}", f"{r.median_ms:.3f}",
              f"{r.p90_ms:.3f}", f"{r.within_run_cv:.3f}", f"{r.run_to_run_cv:.3f}",
              f"{r.runs} x {r.repeats}", str(r.unreliable), f"{r.seconds:.1f}"]
             for r in rows]
    for label in dict.fromkeys(r.profile for r in rows):  # a median row per profile
        group = [r for r in rows if r.profile == label]
        if len(group) > 1:
            cells.append([label, "median", "", "", "", "",
                          f"{statistics.median(r.within_run_cv for r in group):.3f}",
                          f"{statistics.median(r.run_to_run_cv for r in group):.3f}", "",
                          str(sum(r.unreliable for r in group)),
                          f"{sum(r.seconds for r in group):.1f}"])
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for row in cells:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        return
    table = Table(title="Latency noise")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i < 2 else "right", no_wrap=True)
    for row in cells:
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # piped to a file: don't squeeze the table to 80 columns
        console = Console(width=200)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    cpu_profiles = [n for n in list_profiles() if load_profile(n).device == "cpu"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=cpu_profiles,
                        help=f"profile names or YAML paths (default: {' '.join(cpu_profiles)})")
    parser.add_argument("--widths", nargs="+", type=float, default=[0.5, 1.0],
                        help="width multipliers of the reference MobileNet (default: 0.5 1.0)")
    parser.add_argument("--resolution", type=int, default=128, help="input side (default 128)")
    parser.add_argument("--runs", type=int, default=5, help="meter runs per model (default 5)")
    parser.add_argument("--repeats", type=int, help="override the profiles' repeats")
    parser.add_argument("--warmup", type=int, help="override the profiles' warm-up")
    parser.add_argument("--windows", nargs="+", type=int,
                        help="compare these window counts side by side (runs interleaved), "
                             "e.g. --windows 1 5; default: the profiles' own")
    parser.add_argument("--min-sample-ms", nargs="+", type=float,
                        help="compare these sample lengths side by side (runs interleaved), "
                             "e.g. --min-sample-ms 2 10; default: the profiles' own")
    parser.add_argument("--lock-dir", help="device lock directory (default: the system one)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--run", help="measure a finished run's own trial subnets instead")
    parser.add_argument("--archs", type=int, default=12,
                        help="with --run: distinct trial archs to measure (default 12)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    if args.run:
        profile, subnets, run_shape = run_models(args.run, args.archs)
        lock = DeviceLock(profile.device, lock_dir=args.lock_dir)
        rows = []
        for name, model in subnets.items():
            variants = _variants(profile, args.windows, args.min_sample_ms)
            rows.extend(measure(variants, name, model, run_shape, args.runs, lock))
            print(f"  {profile.name} {name}: done", file=sys.stderr)
        rows.sort(key=lambda r: r.profile)
        print(f"run {args.run}: input {run_shape}, profile {profile.name}")
        print_table(rows)
        _write_json(args.json, rows)
        return 0
    shape = (1, 3, args.resolution, args.resolution)
    models = {f"mobilenet-x{w:g}": TinyMobileNet(w).eval() for w in args.widths}
    rows = []
    for spec in args.profiles:
        profile = load_profile(spec)
        overrides = {k: v for k, v in (("repeats", args.repeats), ("warmup", args.warmup))
                     if v is not None}
        profile = HardwareProfile(**{**profile.model_dump(), **overrides})
        lock = DeviceLock(profile.device, lock_dir=args.lock_dir)
        for name, model in models.items():
            variants = _variants(profile, args.windows, args.min_sample_ms)
            rows.extend(measure(variants, name, model, shape, args.runs, lock))
            print(f"  {profile.name} {name}: done", file=sys.stderr)
    print(f"input {shape}, torch {torch.__version__}, {torch.get_num_threads()} host threads")
    print_table(rows)
    _write_json(args.json, rows)
    return 0


def _write_json(path: str | None, rows: list[Row]) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump([asdict(r) for r in rows], f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
