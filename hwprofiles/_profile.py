"""Hardware profiles: what to measure latency on, and how.

A profile is data. It names the device, the inference backend, the numeric precision,
the batch size and the measurement protocol (threads, warm-up, repeats), plus the Ray
resources a measurement needs so a cluster can schedule it where the hardware is.
Evaluators take a profile as input; this module never measures anything itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hwprofiles._yaml import UserYamlError, parse_user_yaml, read_user_yaml, short_repr

__all__ = ["HardwareProfile", "ProfileError", "list_profiles", "load_profile"]

# Bumped whenever the meaning of a fingerprinted field changes, so that cached
# measurements taken under the old meaning stop matching.
_FINGERPRINT_VERSION = 4

# Fields that change what a latency measurement returns. Name, description and the
# Ray resources only decide where and under which label a measurement runs.
_MEASUREMENT_FIELDS = (
    "device", "backend", "precision", "batch_size", "threads", "warmup", "repeats",
    "min_sample_ms", "max_cv", "max_attempts", "windows",
)

_PACKAGE = "hwprofiles"
_SUFFIXES = (".yaml", ".yml")
# an unknown key that looks like this is named in the message (a typo of a field)
_FIELD_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


class ProfileError(ValueError):
    """A hardware profile that cannot be found, parsed or validated."""


class HardwareProfile(BaseModel):
    """Where and how latency is measured.

    Args:
        name: Short identifier, e.g. ``"cpu"``; defaults to the YAML file's stem.
        description: Free text shown in reports.
        device: ``"cpu"`` or ``"cuda"``.
        backend: A registered latency backend (``evaluators.latency.list_backends()``):
            ``"torch"``, ``"onnxruntime"``, ``"openvino"`` (CPU) or ``"tensorrt"`` (CUDA).
            Which devices and precisions a backend measures is its own to say
            (``evaluators.latency.check_profile``).
        precision: ``"fp32"``, ``"fp16"`` (CUDA only) or ``"int8"``.
        batch_size: Batch dimension used for every measurement.
        threads: Intra-op CPU threads, or ``None`` for the backend's default.
        warmup: Untimed runs before the timed ones.
        repeats: Timed samples; statistics are computed over these.
        min_sample_ms: A sample averages back-to-back runs until it lasts this long (0: one
            run per sample). Sub-millisecond models timed call by call measure mostly
            timer and scheduler jitter.
        windows: The repeats are timed in this many groups, ``window_pause_ms`` apart, and
            the latency is the median of the quietest group: on a shared machine another
            tenant's burst (invisible from inside a VM) only ever slows a group down, so
            the quietest one repeats from measurement to measurement. 1: one group.
        window_pause_ms: Idle time between two groups.
        max_cv: A measurement noisier than this (coefficient of variation) is taken again,
            up to ``max_attempts`` times, and the least noisy one kept; ``None`` accepts any.
        max_attempts: Measurements at most per model when ``max_cv`` is exceeded or the
            device is busy; a model still not measured reliably after them gets a latency
            flagged unreliable (never cached, kept off the front, measured again later).
        max_load: The most work of other processes, in cores' worth, that may contend with
            a CPU measurement on its cores (beyond cores it leaves idle) before it counts as
            taken on a busy device; ``None`` does not check.
        pin_cores: CPU cores the measuring thread is bound to while it times (threads the
            backend starts inherit it); ``None`` leaves placement to the OS.
        resources: Ray resources one measurement needs, e.g. ``{"CPU": 1, "GPU": 1}``.
        channel_multiple: The channel counts this device's kernels prefer: pruning keeps every
            width a multiple of it (odd widths such as 63 or 45 can run slower than the
            wider multiple of 8 on CPU runtimes).

    Example:
        >>> profile = HardwareProfile(name="laptop", device="cpu", backend="onnxruntime")
        >>> profile.precision, profile.batch_size
        ('fp32', 1)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    device: Literal["cpu", "cuda"]
    backend: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$", max_length=64)
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    batch_size: int = Field(default=1, gt=0)
    threads: int | None = Field(default=None, gt=0)
    warmup: int = Field(default=20, ge=0)
    repeats: int = Field(default=100, ge=5)
    min_sample_ms: float = Field(default=0.0, ge=0, le=1000)
    windows: int = Field(default=1, ge=1, le=100)
    window_pause_ms: float = Field(default=0.0, ge=0, le=10_000)
    max_cv: float | None = Field(default=None, gt=0)
    max_attempts: int = Field(default=1, ge=1, le=10)
    max_load: float | None = Field(default=0.25, ge=0)
    pin_cores: list[int] | None = Field(default=None, min_length=1, max_length=1024)
    resources: dict[str, float] = Field(default_factory=lambda: {"CPU": 1.0})
    channel_multiple: int = Field(default=8, ge=1, le=256)

    @field_validator("resources")
    @classmethod
    def _check_resources(cls, value: dict[str, float]) -> dict[str, float]:
        for key, amount in value.items():
            if not key:
                raise ValueError("resource names must be non-empty")
            if not math.isfinite(amount) or amount < 0:
                raise ValueError(f"resource {key!r} must be a finite amount >= 0, got {amount}")
        return value

    @field_validator("pin_cores")
    @classmethod
    def _check_cores(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            if any(c < 0 for c in value):
                raise ValueError(f"cores are numbered from 0, got {value}")
            if len(set(value)) != len(value):
                raise ValueError(f"each core once, got {value}")
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> HardwareProfile:
        if self.precision == "fp16" and self.device != "cuda":
            raise ValueError(
                "precision: 'fp16' needs device 'cuda'; "
                f"on {self.device!r} use 'fp32' (or 'int8' with a backend that supports it)"
            )
        return self

    def fingerprint(self) -> str:
        """Returns a stable hash of the fields that change a measurement's result.

        Two profiles with the same device, backend, precision, batch size, threads,
        warm-up and repeats share a fingerprint whatever their name, description or
        resources, so cached latencies carry over between them.

        Returns:
            16 hexadecimal characters, identical across processes and Python versions.
        """
        payload = {field: getattr(self, field) for field in _MEASUREMENT_FIELDS}
        payload["version"] = _FINGERPRINT_VERSION
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def list_profiles() -> list[str]:
    """Returns the names of the profiles shipped with the package, sorted.

    Returns:
        Names accepted by :func:`load_profile`, e.g. ``["cpu", "cpu-torch", "h200"]``.
    """
    names = [
        entry.name.rsplit(".", 1)[0]
        for entry in resources.files(_PACKAGE).iterdir()
        if entry.is_file() and entry.name.endswith(_SUFFIXES)
    ]
    return sorted(names)


def load_profile(name_or_path: str | os.PathLike[str]) -> HardwareProfile:
    """Loads a shipped profile by name, or a profile from a YAML file.

    Args:
        name_or_path: A shipped profile name (see :func:`list_profiles`), or the path
            of a YAML file holding one mapping of profile fields.

    Returns:
        The validated profile.

    Raises:
        ProfileError: The name is unknown, the file is missing, not UTF-8 or not valid
            YAML, uses a YAML alias, is no profile, or a key is unknown, missing or has a
            value that is not allowed. The message names the file and the key and gives
            the allowed values, never the file's text.

    Example:
        >>> load_profile("cpu").backend
        'onnxruntime'
    """
    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        try:
            data = read_user_yaml(path, "hardware profile")
        except UserYamlError as err:
            raise ProfileError(str(err)) from None
        return _validate(data, source=str(path), default_name=path.stem)

    name = str(name_or_path)
    available = list_profiles()
    if name not in available:
        raise ProfileError(
            f"Unknown hardware profile {name!r}. Available profiles: {', '.join(available)}; "
            "or pass the path of a YAML file."
        )
    entry = resources.files(_PACKAGE).joinpath(f"{name}.yaml")
    source = f"hwprofiles/{name}.yaml"
    try:
        data = parse_user_yaml(entry.read_text(encoding="utf-8"), source)
    except UserYamlError as err:
        raise ProfileError(str(err)) from None
    return _validate(data, source=source, default_name=name)


def _looks_like_path(name_or_path: str | os.PathLike[str]) -> bool:
    if not isinstance(name_or_path, str):
        return True
    return (
        name_or_path.endswith(_SUFFIXES)
        or os.sep in name_or_path
        or (os.altsep is not None and os.altsep in name_or_path)
    )


def _validate(data: Any, *, source: str, default_name: str) -> HardwareProfile:
    """Returns the profile of the parsed YAML ``data`` read from ``source``.

    Raises:
        ProfileError: ``data`` is not a profile; the message names keys and values only
            where ``data`` looks like a profile, so a file given by mistake is not echoed.
    """
    fields = ", ".join(HardwareProfile.model_fields)
    expected = f"it must be a YAML mapping of fields ({fields}) with at least device and backend"
    if data is None:
        raise ProfileError(f"{source}: is empty; {expected}.")
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: is not a hardware profile: {expected}, got a "
                           f"{type(data).__name__}.")
    if not set(HardwareProfile.model_fields) & {k for k in data if isinstance(k, str)}:
        raise ProfileError(f"{source}: is not a hardware profile: {expected}; it has none "
                           "of these keys.")
    data.setdefault("name", default_name)
    try:
        return HardwareProfile.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        unknown = [e for e in errors if e["type"] == "extra_forbidden"]
        problems = [_describe(e) for e in errors if e["type"] != "extra_forbidden"]
        if unknown:
            problems.append(_describe_unknown([str(e["loc"][0]) for e in unknown]))
        raise ProfileError(f"{source}: invalid hardware profile: {'; '.join(problems)}.") from None


def _describe_unknown(keys: list[str]) -> str:
    """Returns the message of unknown keys: named when they look like field names (a typo),
    only counted otherwise (lines of a file that is no profile)."""
    named = [k for k in keys if _FIELD_LIKE.fullmatch(k)]
    parts = []
    if named:
        more = f" and {len(named) - 10} more" if len(named) > 10 else ""
        parts.append(f"{', '.join(named[:10])}{more}: unknown key{'s' if len(named) > 1 else ''}")
    if len(keys) > len(named):
        parts.append(f"{len(keys) - len(named)} unknown key(s) that are not field names")
    return f"{'; '.join(parts)} (allowed keys: {', '.join(HardwareProfile.model_fields)})"


def _describe(error: Any) -> str:
    """Turns one pydantic error into ``key: rule, got value``."""
    key = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    ctx = error.get("ctx", {})
    got = short_repr(error.get("input"))
    if kind == "literal_error":
        return f"{key}: must be one of {ctx['expected'].replace(' or ', ', ')}, got {got}"
    if kind == "missing":
        allowed = _allowed_values(key)
        return f"{key}: required key is missing" + (f" (one of {allowed})" if allowed else "")
    if kind in ("greater_than", "greater_than_equal"):
        op = ">" if kind == "greater_than" else ">="
        bound = ctx.get("gt", ctx.get("ge"))
        return f"{key}: must be {op} {bound}, got {got}"
    if kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
        return f"{key}: {message}" if key else message
    return f"{key}: {error['msg'].lower()}, got {got}"


def _allowed_values(key: str) -> str:
    """Returns the allowed values of a ``Literal`` field as ``'a', 'b'``, or ``""``."""
    field = HardwareProfile.model_fields.get(key)
    if field is None or get_origin(field.annotation) is not Literal:
        return ""
    return ", ".join(repr(value) for value in get_args(field.annotation))
