"""Wall time and peak memory of a ``nas search`` run, every process of it together.

Ray's processes (GCS, raylet, dashboard, workers) are descendants of the driver, so the
process tree of ``nas search`` is the whole run. Memory is the sum of the tree's
proportional set sizes (PSS: shared pages split between the processes that share them),
sampled every 0.25 s; RSS summed over-counts shared libraries and is printed beside it.

    python benchmarks/quickstart_resources.py configs/quickstart.yaml --run-dir /tmp/qs
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import psutil


def tree_memory(root: psutil.Process) -> tuple[int, int, list[tuple[str, int]]]:
    """Returns (sum of PSS, sum of RSS, [(name, PSS)]) over ``root`` and its descendants."""
    pss = rss = 0
    parts: list[tuple[str, int]] = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
            name = " ".join(proc.cmdline()[:3])[-60:] or proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        pss += getattr(info, "pss", info.rss)
        rss += info.rss
        parts.append((name, getattr(info, "pss", info.rss)))
    return pss, rss, parts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--interval", type=float, default=0.25)
    args = parser.parse_args()
    command = [sys.executable, "-m", "nas._cli", "search", str(args.config), "--run-dir", str(args.run_dir)]
    for item in args.overrides:
        command += ["--set", item]
    start = time.perf_counter()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    peak_pss = peak_rss = peak_procs = 0
    at_peak: list[tuple[str, int]] = []
    while child.poll() is None:
        try:
            pss, rss, parts = tree_memory(root)
        except psutil.NoSuchProcess:
            break
        if pss > peak_pss:
            peak_pss, at_peak = pss, parts
        peak_rss, peak_procs = max(peak_rss, rss), max(peak_procs, len(parts))
        time.sleep(args.interval)
    wall = time.perf_counter() - start
    gib = 2**30
    print()
    print("| command | exit | wall time | peak memory (PSS sum) | peak RSS sum | processes |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {' '.join(command[1:])} | {child.returncode} | {wall:.0f} s | {peak_pss / gib:.2f} GiB "
        f"| {peak_rss / gib:.2f} GiB | {peak_procs} |"
    )
    print()
    print("| process at peak | PSS MiB |")
    print("|---|---|")
    for name, pss in sorted(at_peak, key=lambda item: -item[1])[:12]:
        print(f"| {name} | {pss / 2**20:.0f} |")
    return int(child.returncode or 0)


if __name__ == "__main__":
    sys.exit(main())
