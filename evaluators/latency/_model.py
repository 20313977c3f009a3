"""A latency model of one search space on one hardware profile: measured blocks, fitted sum.

In the way nn-Meter predicts a model kernel by kernel (Zhang et al., MobiSys 2021), a subnet
is cut into the chain of blocks it runs (the stem, every block of every stage, the head),
each distinct block (its structure and input shape) is timed once, alone, with the profile's
own backend and kept in the latency cache under the profile's fingerprint, and the
prediction is a fitted correction of their sum: ``a * sum + b * blocks + c`` (per-call
overhead counted once per standalone block, layout changes and fusions across block edges
are what the sum misses). The correction is fitted on whole subnets measured by the meter.

A prediction ranks candidates; it is never recorded as a trial's or an artifact's latency.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from evaluators._io import atomic_write_text
from evaluators._structure import structure_key
from evaluators.latency._meter import LatencyMeter, part_protocol

if TYPE_CHECKING:
    from evaluators.latency._cache import LatencyCache
    from search_spaces import Arch, SearchSpace

__all__ = [
    "BlockLatencyTable", "LatencyModel", "LatencyModelError", "chain_blocks", "model_path",
]

logger = logging.getLogger(__name__)

# a block is one of hundreds: fewer timed samples than a model's measurement
_BLOCK_REPEATS = 30
_FORMAT = "hwnas.latency_model"
_VERSION = 1


class LatencyModelError(ValueError):
    """A latency model cannot be built for, or does not fit, what it was given."""


def chain_blocks(subnet: nn.Module) -> list[nn.Module]:
    """Returns ``subnet`` as the chain of blocks it runs, in order: containers of blocks
    (``nn.Sequential`` whose children all have children, such as stages) are opened, and
    consecutive plain layers (a stem's conv, norm and activation; a head) form one block.

    A search space whose subnets are not such a chain declares its own blocks by giving its
    subnets a ``latency_blocks()`` method returning the list.
    """
    declared = getattr(subnet, "latency_blocks", None)
    if callable(declared):
        return list(declared())
    blocks: list[nn.Module] = []
    layers: list[nn.Module] = []

    def flush() -> None:
        if layers:
            blocks.append(layers[0] if len(layers) == 1 else nn.Sequential(*layers))
            layers.clear()

    def walk(module: nn.Module) -> None:
        for child in module.children():
            grandchildren = list(child.children())
            if type(child) is nn.Sequential and grandchildren and all(
                    list(g.children()) for g in grandchildren):
                flush()
                walk(child)
            elif grandchildren:
                flush()
                blocks.append(child)
            else:
                layers.append(child)

    walk(subnet)
    flush()
    return blocks


def _check_chain(subnet: nn.Module, blocks: Sequence[nn.Module], shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = subnet.eval()(x)
        chained = nn.Sequential(*blocks).eval()(x)
    if whole.shape != chained.shape or not torch.allclose(whole, chained, atol=1e-4, rtol=1e-3):
        raise LatencyModelError(
            f"{type(subnet).__name__} does not run as the chain of its blocks "
            f"({len(blocks)} found): give its subnets a latency_blocks() method")


class BlockLatencyTable:
    """Median latency of single blocks on a profile, each distinct block timed once.

    Args:
        meter: The profile's meter; its cache keeps the entries (a file-backed cache shares
            them across runs), with fewer repeats than a whole model's measurement.
    """

    def __init__(self, meter: LatencyMeter) -> None:
        protocol = part_protocol(meter.profile, _BLOCK_REPEATS)
        self.meter = LatencyMeter(protocol, cache=meter.cache, lock=meter.lock)
        self._known: dict[str, float] = {}

    @property
    def measured(self) -> int:
        """Returns how many blocks were timed (not found in the cache) so far."""
        return self.meter.misses

    def __len__(self) -> int:
        return len(self._known)

    def block_ms(self, block: nn.Module, input_shape: tuple[int, ...]) -> float:
        """Returns the median latency of ``block`` alone at ``input_shape`` (batch first)."""
        key = f"block:{structure_key(block)}"
        memo = f"{key}@{input_shape}"
        if memo not in self._known:
            latency = self.meter.measure(block.eval(), input_shape, key=key)
            self._known[memo] = latency.median_ms
        return self._known[memo]

    def features(self, subnet: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, int]:
        """Returns the sum of ``subnet``'s block latencies and its number of blocks."""
        shape = (self.meter.profile.batch_size, *input_shape[1:])
        blocks = chain_blocks(subnet)
        total = 0.0
        x = torch.zeros(shape)
        with torch.no_grad():
            for block in blocks:
                total += self.block_ms(block, tuple(x.shape))
                x = block.eval()(x)
        return total, len(blocks)


@dataclass(frozen=True)
class LatencyModel:
    """Predicts a subnet's latency on one profile from its blocks' measured latencies.

    Attributes:
        space: The search space it was built for.
        profile: The profile's name; ``fingerprint`` is what it was measured under.
        fingerprint: The profile fingerprint of the whole-model measurements.
        input_shape: The input the subnets run on (batch first).
        coefficients: ``(a, b, c)`` of ``a * sum_ms + b * blocks + c``.
        fitted_on: Arch keys of the subnets the correction was fitted on (keep them out
            of any evaluation of the model).
        blocks: Distinct blocks in the table when it was built.
        build_seconds: Wall time the build took.
    """

    space: str
    profile: str
    fingerprint: str
    input_shape: tuple[int, ...]
    coefficients: tuple[float, float, float]
    fitted_on: tuple[str, ...]
    blocks: int
    build_seconds: float

    @classmethod
    def build(
        cls,
        space: SearchSpace,
        meter: LatencyMeter,
        input_shape: tuple[int, ...],
        *,
        num_classes: int = 10,
        fit_archs: int = 24,
        seed: int = 0,
        progress: Any = None,
    ) -> tuple[LatencyModel, BlockLatencyTable]:
        """Measures the blocks of ``fit_archs`` subnets (the smallest, the largest and
        random ones) and the subnets whole, and fits the correction.

        Returns:
            The model and its block table (which later predictions fill further).

        Raises:
            LatencyModelError: the space's subnets are not a chain of blocks, or
                ``fit_archs < 3``.
        """
        if fit_archs < 3:
            raise LatencyModelError(f"fit_archs: need at least 3 subnets, got {fit_archs}")
        start = time.perf_counter()
        supernet = space.build_supernet(num_classes=num_classes, in_channels=input_shape[1])
        table = BlockLatencyTable(meter)
        rng = random.Random(seed)
        archs: dict[str, Arch] = {}
        for arch in [space.min_arch(), space.max_arch()]:
            archs[arch.key()] = arch
        for _ in range(100 * fit_archs):
            if len(archs) >= fit_archs:
                break
            arch = space.sample(rng)
            archs.setdefault(arch.key(), arch)
        rows, targets = [], []
        shape = meter.input_shape(input_shape)
        for i, (key, arch) in enumerate(archs.items()):
            subnet = supernet.extract(arch).eval()
            if i == 0:
                _check_chain(subnet, chain_blocks(subnet), shape)
            rows.append(table.features(subnet, shape))
            targets.append(meter.measure(subnet, shape, key=key).median_ms)
            if progress is not None:
                progress(i + 1, len(archs))
        coefficients = _fit(np.array(rows, dtype=float), np.array(targets, dtype=float))
        model = cls(
            space=space.name, profile=meter.profile.name, fingerprint=meter.profile.fingerprint(),
            input_shape=tuple(shape), coefficients=coefficients, fitted_on=tuple(archs),
            blocks=len(table), build_seconds=time.perf_counter() - start,
        )
        return model, table

    def predict(self, subnet: nn.Module, table: BlockLatencyTable) -> float:
        """Returns the predicted median latency of ``subnet`` in milliseconds; a block the
        table lacks is measured now (once).

        Raises:
            LatencyModelError: ``table`` measures on another profile.
        """
        if table.meter.profile.name != self.profile:
            raise LatencyModelError(f"the block table measures on profile "
                                    f"{table.meter.profile.name!r}, the model on {self.profile!r}")
        total, count = table.features(subnet, self.input_shape)
        a, b, c = self.coefficients
        return max(0.0, a * total + b * count + c)

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON-ready form."""
        return {"format": _FORMAT, "version": _VERSION, **dataclasses.asdict(self)}

    def save(self, path: Path) -> None:
        """Writes the model as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> LatencyModel:
        """Reads a model written by :meth:`save`.

        Raises:
            LatencyModelError: the file is not a latency model this code reads.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.get("format") != _FORMAT or data.get("version") != _VERSION:
                raise LatencyModelError(f"{path}: not a latency model (version {_VERSION})")
            return cls(
                space=str(data["space"]), profile=str(data["profile"]),
                fingerprint=str(data["fingerprint"]),
                input_shape=tuple(int(d) for d in data["input_shape"]),
                coefficients=tuple(float(c) for c in data["coefficients"]),  # type: ignore[arg-type]
                fitted_on=tuple(str(k) for k in data["fitted_on"]), blocks=int(data["blocks"]),
                build_seconds=float(data["build_seconds"]),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            if isinstance(err, LatencyModelError):
                raise
            raise LatencyModelError(f"{path}: cannot read the latency model ({err})") from err


def _fit(features: np.ndarray, measured: np.ndarray) -> tuple[float, float, float]:
    """Returns ``(a, b, c)`` of ``measured ~ a * sum + b * blocks + c`` fitted in relative
    error (each subnet weighs alike, small or large) with a Huber loss: a subnet whose
    measurement a disturbance slipped past the meter's checks pulls the fit less than it
    would in least squares.

    Raises:
        LatencyModelError: fewer than three subnets.
    """
    from sklearn.linear_model import HuberRegressor

    if len(measured) < 3:
        raise LatencyModelError(f"need at least 3 measured subnets to fit, got {len(measured)}")
    scale = 1.0 / np.maximum(measured, 1e-9)
    design = np.column_stack([features[:, 0], features[:, 1], np.ones(len(measured))])
    regression = HuberRegressor(fit_intercept=False, alpha=0.0, max_iter=1000).fit(
        design * scale[:, None], np.ones(len(measured)))
    a, b, c = (float(v) for v in regression.coef_)
    return a, b, c


def model_path(cache: LatencyCache | None, space: str, fingerprint: str,
               input_shape: Sequence[int]) -> Path | None:
    """Returns where a latency model for (space, profile fingerprint, input shape) is kept:
    beside a file-backed latency cache, or ``None`` for an in-memory one."""
    if cache is None or cache.path is None:
        return None
    shape = "x".join(str(int(d)) for d in input_shape)
    return Path(cache.path).with_name(f"latency_model-{space}-{fingerprint}-{shape}.json")
