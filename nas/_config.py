"""The run configuration: one pydantic model per section, validated once at load.

Unknown keys are errors; every message names the dotted YAML key, the rule and the value.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from compress import list_importances
from evaluators import (
    DEFAULT_MAX_BYTES,
    OptimConfig,
    PluginError,
    SandwichConfig,
    import_plugins,
)
from evaluators._energy import energy_unavailable_reason
from evaluators._memory import memory_unavailable_reason
from evaluators.latency import check_profile
from hwprofiles import HardwareProfile, ProfileError, load_profile
from hwprofiles._yaml import ECHO_LIMIT, UserYamlError, parse_user_yaml, read_user_yaml, short_repr
from nas._errors import ConfigError
from nas._storage import check_storage_url
from nas.samplers import get_sampler_options, list_samplers
from search_spaces import get_search_space_options, list_search_spaces

#: Metrics a trial reports that may be objectives, with their natural direction.
OBJECTIVE_METRICS: dict[str, Literal["min", "max"]] = {
    "accuracy": "max", "latency_ms": "min", "params": "min", "macs": "min",
    "size_mb": "min", "peak_memory_mb": "min", "energy_mj": "min",
}
_DEFAULT_OBJECTIVES: dict[str, Literal["min", "max"]] = {"accuracy": "max", "latency_ms": "min"}
#: Metrics that may carry an upper-bound constraint.
CONSTRAINT_METRICS = ("latency_ms", "params", "macs", "size_mb", "peak_memory_mb", "energy_mj")
#: An unknown key named in a message looks like this; others may be a stray file's lines.
_KEY_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
#: The most problems one message lists.
_MAX_ERRORS = 10
#: Measured metrics a device may be unable to measure: checked against the profile at load.
DEVICE_METRICS = ("peak_memory_mb", "energy_mj")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExperimentConfig(_Section):
    """``experiment:`` what the run is called and how it is seeded."""

    name: str = Field(default="experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    seed: int = Field(default=0, ge=0)


class DataConfig(_Section):
    """``data:`` the data set and its splits.

    ``dataset`` is ``digits`` (bundled), ``npz`` (``path``: a file with arrays x, y and
    optionally classes) or ``imagefolder`` (``path``: a folder of class folders of images,
    optionally under train/, val/, test/). ``max_bytes`` bounds every array the data set
    needs in memory; it is checked before anything is allocated.
    """

    dataset: Literal["digits", "npz", "imagefolder"] = "digits"
    path: Path | None = None
    image_size: int | None = Field(default=16, ge=4, le=1024)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    batch_size: int = Field(default=128, ge=1)
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=2**20)  # 4 GiB

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        what = {"npz": "the .npz file to load", "imagefolder": "the folder of class folders"}
        if self.dataset in what and self.path is None:
            raise ValueError(
                f"path: required when dataset is {self.dataset!r} ({what[self.dataset]})"
            )
        if self.dataset == "digits" and self.path is not None:
            raise ValueError(
                "path: only used with dataset 'npz' or 'imagefolder'; remove it for 'digits'"
            )
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                "val_fraction + test_fraction must leave at least 10% for training, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        return self


def _check_options(options_model: type[BaseModel] | None, options: dict[str, Any], what: str) -> None:
    """Validates a registered entry's own options against its model.

    Raises:
        ValueError: naming the option's key, the rule and the value.
    """
    if options_model is None:
        if options:
            raise ValueError(f"{what} takes no options, got {sorted(options)}")
        return
    try:
        options_model.model_validate(options)
    except pydantic.ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in error["loc"]) or "(options)"
        got = ("" if error["type"] in ("missing", "value_error")
               else f", got {short_repr(error['input'])}")
        if error["type"] == "extra_forbidden":
            allowed = sorted(options_model.model_fields)
            raise ValueError(f"{key}: unknown option; allowed are ['name', *{allowed}]") from None
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ValueError(f"{key}: {message}{got}") from None


class SearchSpaceConfig(BaseModel):
    """``search_space:`` the registered space's name plus that space's own options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = "mobilenet_elastic"

    @model_validator(mode="after")
    def _check(self) -> SearchSpaceConfig:
        if self.name not in list_search_spaces():
            raise ValueError(f"name: must be one of {list_search_spaces()}, "
                             f"got {short_repr(self.name)}")
        _check_options(get_search_space_options(self.name), self.options(), f"space {self.name!r}")
        return self

    def options(self) -> dict[str, Any]:
        """Returns the space's own options (every key but ``name``)."""
        return dict(self.model_extra or {})


class SamplerConfig(BaseModel):
    """``search.sampler:`` a registered sampler's name (``nsga2``) or a mapping of its name
    and its own options (``{name: tpe, multivariate: true}``); the resolved config lists
    every option with its value."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = "nsga2"

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"name": data}
        if isinstance(data, dict) and data.get("name", "nsga2") in list_samplers():
            options_model = get_sampler_options(data.get("name", "nsga2"))
            options = {k: v for k, v in data.items() if k != "name"}
            if options_model is not None:
                try:  # make every default explicit, so the run is reproducible from its file
                    data = {"name": data.get("name", "nsga2"),
                            **options_model.model_validate(options).model_dump(mode="json")}
                except pydantic.ValidationError:
                    pass  # reported with its key by _check
        return data

    @model_validator(mode="after")
    def _check(self) -> SamplerConfig:
        if self.name not in list_samplers():
            raise ValueError(f"name: must be one of {list_samplers()}, "
                             f"got {short_repr(self.name)} "
                             "(a new sampler registers with nas.samplers.register_sampler and "
                             "is imported through plugins:)")
        _check_options(get_sampler_options(self.name), self.options(), f"sampler {self.name!r}")
        return self

    def options(self) -> dict[str, Any]:
        """Returns the sampler's own options (every key but ``name``)."""
        return dict(self.model_extra or {})


class SupernetConfig(_Section):
    """``supernet:`` weight-sharing training with the sandwich rule."""

    epochs: int = Field(default=30, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    random_subnets: int = Field(default=2, ge=0)
    distill_temperature: float = Field(default=1.0, gt=0)
    # share of the smaller subnets' loss distilled from the largest; the rest is the labels
    distill_weight: float = Field(default=1.0, ge=0, le=1)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    # progressive shrinking: over the first shrink_epochs epochs the smaller subnets come from
    # a part of the space that grows from the largest subnet to all of it (0: off)
    shrink_epochs: int = Field(default=0, ge=0)
    # start every residual block as its shortcut alone: the scale of the BatchNorm that ends
    # its branch starts at zero (Goyal et al., 2017; BigNAS)
    zero_init_residual: bool = False
    # "sandwich": each step the largest, the smallest and random_subnets drawn subnets, the
    # smaller ones distilled from the largest; "uniform": the random_subnets drawn subnets
    # alone, each on the labels (single-path one-shot: no subnet trained more than another)
    sampling: Literal["sandwich", "uniform"] = "sandwich"

    @model_validator(mode="after")
    def _uniform_draws_subnets(self) -> SupernetConfig:
        if self.sampling == "uniform" and self.random_subnets < 1:
            raise ValueError(
                "supernet.sampling 'uniform' trains only drawn subnets: supernet.random_subnets "
                f"must be at least 1, not {self.random_subnets}"
            )
        return self

    @model_validator(mode="after")
    def _shrink_within_epochs(self) -> SupernetConfig:
        if self.shrink_epochs >= self.epochs:
            raise ValueError(
                f"supernet.shrink_epochs ({self.shrink_epochs}) must be below supernet.epochs "
                f"({self.epochs}): the whole space has to be trained for at least one epoch"
            )
        return self

    def optim(self) -> OptimConfig:
        """Returns the optimiser settings of supernet training."""
        return OptimConfig(lr=self.lr, weight_decay=self.weight_decay)

    def sandwich(self) -> SandwichConfig:
        """Returns the sandwich-rule settings of supernet training."""
        return SandwichConfig(
            random_subnets=self.random_subnets, temperature=self.distill_temperature,
            distill_weight=self.distill_weight, label_smoothing=self.label_smoothing,
            shrink_epochs=self.shrink_epochs, sampling=self.sampling,
        )


class SearchConfig(_Section):
    """``search:`` the multi-objective search over subnets."""

    sampler: SamplerConfig = SamplerConfig()
    n_trials: int = Field(default=40, gt=0)
    max_concurrent: int = Field(default=2, ge=1)
    objectives: dict[str, Literal["min", "max"]] = Field(default_factory=lambda: dict(_DEFAULT_OBJECTIVES))
    constraints: dict[str, float] = Field(default_factory=dict)
    recalibration_batches: int = Field(default=8, ge=1)
    finetune_epochs: int = Field(default=0, ge=0)
    # where the study is kept (default: the run's study.db); see nas._storage.STORAGE_FORMS
    storage: str | None = None
    # a trial whose worker process or node died is run again this many times, then FAIL
    max_retries: int = Field(default=2, ge=0, le=10)
    # a trial whose latency the device could not measure reliably (busy, or CV above the
    # profile's max_cv) is measured again, at most this many times, after the other trials
    remeasure: int = Field(default=2, ge=0, le=10)
    # propose the next arch while trials run, for a slow sampler on a driver with cores of
    # its own; each proposal sees one more trial as running. Off by default: where the
    # driver shares the workers' cores, proposing ahead competes with them
    prefetch: bool = False

    @field_validator("storage")
    @classmethod
    def _storage(cls, url: str | None) -> str | None:
        return None if url is None else check_storage_url(url)

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        allowed = list(OBJECTIVE_METRICS)
        for name in self.objectives:
            if name not in OBJECTIVE_METRICS:
                raise ValueError(f"objectives.{name}: unknown objective; allowed are {allowed}")
        if not self.objectives:
            raise ValueError(f"objectives: give at least one of {allowed}")
        for name, bound in self.constraints.items():
            if name not in CONSTRAINT_METRICS:
                raise ValueError(
                    f"constraints.{name}: unknown constraint; allowed are {list(CONSTRAINT_METRICS)}"
                )
            if not bound > 0:
                raise ValueError(f"constraints.{name}: must be > 0, got {bound}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _sampler_options_of_old(cls, data: Any) -> Any:
        # configs written before samplers took their own options keep working:
        # search.multivariate (tpe) and search.population_size (nsga2) move into search.sampler
        if not isinstance(data, dict) or not ({"multivariate", "population_size"} & set(data)):
            return data
        data = dict(data)
        sampler = data.get("sampler", "nsga2")
        sampler = {"name": sampler} if isinstance(sampler, str) else dict(sampler or {})
        name = sampler.get("name", "nsga2")
        for key, owner, default in (("multivariate", "tpe", False), ("population_size", "nsga2", 16)):
            if key not in data:
                continue
            value = data.pop(key)
            if name == owner:
                sampler.setdefault(key, value)
            elif value != default:
                raise ValueError(f"{key}: only applies to sampler {owner!r}; give it as "
                                 f"search.sampler: {{name: {owner}, {key}: ...}}")
        data["sampler"] = sampler
        return data


class HardwareConfig(_Section):
    """``hardware:`` where latency is measured."""

    profile: str = "cpu"
    lock_dir: Path | None = None

    def load(self) -> HardwareProfile:
        """Returns the loaded hardware profile; raises ProfileError if it cannot be loaded."""
        return load_profile(self.profile)


class RayConfig(_Section):
    """``ray:`` the Ray cluster the trials run on."""

    address: str | None = None
    dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8265, ge=1024, le=65535)
    num_cpus: int | None = Field(default=None, ge=1)
    # the address every process of a local Ray listens on; 127.0.0.1: this machine only
    # (give the host's address to let other machines' `ray start --address` join it)
    node_ip_address: str = "127.0.0.1"
    object_store_memory_mb: int = Field(default=256, ge=80)


_PRUNE_TARGETS = ("speedup", "latency_ms", "macs_ratio")


class PruneConfig(_Section):
    """``compress.prune:`` structured pruning to one target: a measured ``speedup`` on the
    hardware profile (the default), a measured ``latency_ms``, or a ``macs_ratio``."""

    speedup: float | None = Field(default=1.5, gt=1)
    latency_ms: float | None = Field(default=None, gt=0)
    macs_ratio: float | None = Field(default=None, gt=1)
    importance: str = "magnitude"
    iterations: int = Field(default=3, ge=1, le=20)
    finetune_epochs: int = Field(default=3, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _default_target(cls, data: Any) -> Any:
        # naming another target replaces the default speed-up
        if isinstance(data, dict) and "speedup" not in data and any(
            data.get(k) is not None for k in ("latency_ms", "macs_ratio")
        ):
            data = {**data, "speedup": None}
        return data

    @model_validator(mode="after")
    def _check(self) -> PruneConfig:
        given = [k for k in _PRUNE_TARGETS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"{(given or ['speedup'])[-1]}: give exactly one pruning target of "
                f"{list(_PRUNE_TARGETS)} (set the others to null), got {given or 'none'}"
            )
        if self.importance not in list_importances():
            raise ValueError(
                f"importance: must be one of {list_importances()}, "
                f"got {short_repr(self.importance)} "
                "(a new criterion registers with compress.register_importance and is "
                "imported through plugins:)"
            )
        return self


class DistillSection(_Section):
    """``compress.distill:`` knowledge distillation into the pruned student."""

    epochs: int = Field(default=6, ge=0)
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.7, ge=0, le=1)
    feature_weight: float = Field(default=0.0, ge=0)
    teacher: Literal["supernet", "candidate"] = "supernet"


class CompressConfig(_Section):
    """``compress:`` what happens to the Pareto models after the search."""

    enabled: bool = True
    top_k: int = Field(default=3, ge=0)  # 0: every Pareto model
    select: Literal["spread", "accuracy", "latency"] = "spread"
    finetune_epochs: int = Field(default=4, ge=0)
    max_accuracy_drop: float = Field(default=1.0, ge=0, le=100)
    calibration_batches: int = Field(default=8, ge=1)
    calibrator: Literal["minmax", "entropy", "percentile"] = "minmax"
    lr: float = Field(default=1e-3, gt=0)
    prune: PruneConfig = PruneConfig()
    distill: DistillSection = DistillSection()


class RunSpec(_Section):
    """The whole run: every section, as a typed, frozen object."""

    # modules or .py files imported first: the user's own search spaces, pruning criteria
    # and latency backends register themselves there
    plugins: tuple[str, ...] = ()
    experiment: ExperimentConfig = ExperimentConfig()
    data: DataConfig = DataConfig()
    search_space: SearchSpaceConfig = SearchSpaceConfig()
    supernet: SupernetConfig = SupernetConfig()
    search: SearchConfig = SearchConfig()
    hardware: HardwareConfig = HardwareConfig()
    ray: RayConfig = RayConfig()
    compress: CompressConfig = CompressConfig()

    def to_yaml(self) -> str:
        """Returns the resolved configuration as YAML (every default made explicit)."""
        return str(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))


def load_config(path: Path, overrides: list[str] | None = None) -> RunSpec:
    """Returns the validated run spec of a YAML file with ``KEY=VALUE`` overrides applied.

    Relative ``data.path`` values are resolved against the config file's folder.

    Raises:
        ConfigError: unreadable file, bad YAML, unknown key, invalid value or override.
    """
    raw = apply_overrides(read_yaml_mapping(path, "config file"), overrides or [])
    plugins = raw.get("plugins")
    if isinstance(plugins, list):  # files are named relative to the config
        raw["plugins"] = [
            str((path.parent / p).expanduser().resolve()) if isinstance(p, str) and p.endswith(".py")
            and not Path(p).expanduser().is_absolute() else p for p in plugins
        ]
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        data_path = Path(data["path"]).expanduser()
        if not data_path.is_absolute():
            data["path"] = str((path.parent / data_path).resolve())
    return validate_config(raw, source=str(path))


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """Returns the mapping at the top level of the YAML file ``path`` (``what`` it is, e.g.
    ``"config file"``), read as untrusted: UTF-8, bounded in size, no aliases.

    Raises:
        ConfigError: the file cannot be read, is not UTF-8 or not YAML, is empty, uses a
            YAML alias, or its top level is not a mapping; the message names the file (and
            the line), never its content.
    """
    try:
        raw = read_user_yaml(path, what)
    except UserYamlError as exc:
        raise ConfigError(str(exc)) from None
    if raw is None:
        raise ConfigError(f"{path}: the {what} is empty; expected a mapping of sections "
                          "such as experiment:, search:, hardware:")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level of the {what} must be a mapping of sections, "
                          f"got a {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Returns a copy of ``raw`` with each ``dotted.key=VALUE`` set (VALUE parsed as YAML).

    Raises:
        ConfigError: an override without ``=`` or with an empty key, or whose value is not
            YAML or uses a YAML alias.
    """
    result = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value_text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {short_repr(item)}: expected KEY=VALUE, e.g. "
                              "search.n_trials=8")
        try:
            value = parse_user_yaml(value_text, f"--set {key.strip()[:ECHO_LIMIT]}")
        except UserYamlError as exc:
            raise ConfigError(str(exc)) from None
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {short_repr(item)}: {short_repr(part)} is not a section")
            node = child
        node[parts[-1]] = value
    return result


def validate_config(raw: dict[str, Any], source: str = "config") -> RunSpec:
    """Returns the run spec for an already-parsed mapping.

    Raises:
        ConfigError: naming the dotted key, the rule and the bad value, or a plugin that
            does not import.
    """
    plugins = raw.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError(f"{source}: plugins: must be a list of module names or .py paths, "
                          f"got {short_repr(plugins)}")
    try:
        import_plugins(plugins)
    except PluginError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        spec = RunSpec.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc)}") from None
    try:
        profile = spec.hardware.load()
        check_profile(profile)
    except ProfileError as exc:
        raise ConfigError(f"{source}: hardware.profile: {exc}") from None
    for key, names in (("objectives", spec.search.objectives), ("constraints",
                                                                 spec.search.constraints)):
        for name in names:
            reason = device_metric_unavailable(name, profile)
            if reason:
                raise ConfigError(f"{source}: search.{key}.{name}: cannot be measured on "
                                  f"profile {profile.name!r} here: {reason}")
    return spec


def device_metric_unavailable(name: str, profile: HardwareProfile) -> str | None:
    """Returns why the device of ``profile`` cannot measure metric ``name`` here, or
    ``None`` (also for metrics that need no device support)."""
    if name == "energy_mj":
        return energy_unavailable_reason(profile)
    if name == "peak_memory_mb":
        return memory_unavailable_reason(profile)
    return None


def format_validation_error(exc: pydantic.ValidationError) -> str:
    """Returns one line per error: ``dotted.key: rule, got value``."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = [str(p) for p in error["loc"]]
        message = error["msg"]
        # A model validator's ValueError starts with the field it is about: "path: ..."
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
            head, sep, rest = message.partition(": ")
            if sep and " " not in head:
                loc, message = loc + [head], rest
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            if not _KEY_LIKE.fullmatch(loc[-1]):  # a line of a file that is no config: not echoed
                where = ".".join(loc[:-1]) or "(top level)"
                lines.append(f"{where}: unknown keys that are not key names; allowed keys "
                             f"here are {allowed}")
            else:
                lines.append(f"{'.'.join(loc)}: unknown key; allowed keys here are {allowed}")
            continue
        got = ""
        if error["type"] not in ("value_error", "missing") and "input" in error:
            got = f", got {short_repr(error['input'])}"
        lines.append(f"{'.'.join(loc) or '(top level)'}: {message}{got}")
    lines = list(dict.fromkeys(lines))
    more = f"; and {len(lines) - _MAX_ERRORS} more" if len(lines) > _MAX_ERRORS else ""
    return "; ".join(lines[:_MAX_ERRORS]) + more


def _allowed_keys(loc: list[str]) -> list[str]:
    """Returns the field names the model at ``loc`` accepts."""
    model: type[BaseModel] | None = RunSpec
    for part in loc:
        field = model.model_fields.get(part) if model else None
        annotation = field.annotation if field else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    if model is None and len(loc) >= 1 and loc[0] == "search_space":
        return ["name", "(the space's own options)"]
    return sorted(model.model_fields) if model else []

