"""The GPU checks in one short run: the noise floor of a CUDA profile, the latency model's
accuracy on it, and the energy of three subnets.

    python benchmarks/gpu_check.py [--profile h200] [--archs 40] [--json out.json]

On a machine without CUDA it says that the checks were skipped and exits 0. It needs torch,
pydantic, rich, scikit-learn and scipy (no Ray, Optuna or ModelOpt); energy needs pynvml
(``nvidia-ml-py``) and is reported as unavailable without it.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from evaluators._energy import EnergyUnavailable, measure_energy_mj
from evaluators.latency import DeviceLock, LatencyCache, LatencyMeter, LatencyModel
from hwprofiles import load_profile
from search_spaces import SearchSpace, get_search_space

SPACE = "mobilenet_elastic"
SHAPE = (1, 3, 32, 32)


def noise_floor(meter: LatencyMeter, model: torch.nn.Module, runs: int) -> dict[str, float]:
    """Returns the within-measurement CV (median) and the run-to-run CV of ``runs`` medians."""
    results = [meter.measure(model, SHAPE) for _ in range(runs)]
    medians = [r.median_ms for r in results]
    return {"median_ms": statistics.median(medians),
            "within_cv": statistics.median(r.cv for r in results),
            "run_to_run_cv": statistics.pstdev(medians) / statistics.fmean(medians),
            "unreliable": sum(not r.reliable for r in results)}


def model_accuracy(space: SearchSpace, meter: LatencyMeter, archs: int) -> dict[str, float]:
    """Builds the latency model on ``meter``'s profile and scores it on ``archs`` held-out
    random subnets: share within ±10% and ±5%, Spearman rho, build seconds."""
    from scipy.stats import spearmanr

    model, table = LatencyModel.build(space, meter, SHAPE, num_classes=10)
    supernet = space.build_supernet(num_classes=10, in_channels=SHAPE[1])
    rng, seen, pairs = random.Random(2024), set(model.fitted_on), []
    while len(pairs) < archs:
        arch = space.sample(rng)
        if arch.key() in seen:
            continue
        seen.add(arch.key())
        subnet = supernet.extract(arch).eval()
        pairs.append((model.predict(subnet, table), meter.measure(subnet, SHAPE).median_ms))
    errors = [abs(p - m) / m for p, m in pairs]
    return {"within_10": sum(e <= 0.10 for e in errors) / len(errors),
            "within_5": sum(e <= 0.05 for e in errors) / len(errors),
            "spearman": float(spearmanr([p for p, _ in pairs], [m for _, m in pairs]).statistic),
            "build_s": model.build_seconds, "archs": len(pairs)}


def energies(space: SearchSpace, meter: LatencyMeter) -> dict[str, float | str]:
    """Returns the energy per inference (mJ) of the smallest, a random and the largest subnet,
    or why the device cannot say."""
    supernet = space.build_supernet(num_classes=10, in_channels=SHAPE[1])
    picks = {"smallest": space.min_arch(), "random": space.sample(random.Random(0)),
             "largest": space.max_arch()}
    out: dict[str, float | str] = {}
    for name, arch in picks.items():
        try:
            out[name] = measure_energy_mj(meter, supernet.extract(arch).eval(), SHAPE)
        except EnergyUnavailable as err:
            return {"unavailable": str(err)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="h200", help="a CUDA profile (default h200)")
    parser.add_argument("--archs", type=int, default=40, help="held-out subnets (default 40)")
    parser.add_argument("--runs", type=int, default=5, help="noise-floor runs (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device here: GPU checks skipped (noise floor, latency model, energy)")
        return 0
    profile = load_profile(args.profile)
    space = get_search_space(SPACE)
    assert isinstance(space, SearchSpace)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        meter = LatencyMeter(profile, cache=LatencyCache(Path(tmp) / "latency.db"),
                             lock=DeviceLock(profile.device, lock_dir=Path(tmp)))
        largest = space.build_supernet(num_classes=10, in_channels=SHAPE[1]).extract(
            space.max_arch()).eval()
        figures = {"device": torch.cuda.get_device_name(0), "profile": profile.name,
                   "noise": noise_floor(meter, largest, args.runs),
                   "latency_model": model_accuracy(space, meter, args.archs),
                   "energy_mj": energies(space, meter)}
    figures["seconds"] = time.perf_counter() - started
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
