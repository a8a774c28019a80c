"""Settings: dataclasses with defaults, YAML read with ``safe_load``, unknown keys rejected by name.

Precedence is CLI option > config file > these defaults. ``configs/default.yaml`` repeats every default with the
reason for its value; a test keeps the two in step. No torch import here (the CLI's ``--help`` path loads it).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeConfig:
    batches: int = 4
    batch_size: int = 16
    seed: int = 0
    device: str = "auto"
    mode: str = "train"
    seq_len: int = 32
    image_size: int = 32

    def __post_init__(self) -> None:
        _require(self.batches >= 1, "probe.batches", self.batches, "must be at least 1")
        _require(self.batch_size >= 1, "probe.batch_size", self.batch_size, "must be at least 1")
        # torch.Generator.manual_seed takes 64 bits; beyond that it failed as an internal OverflowError.
        _require(-(2**63) <= self.seed < 2**63, "probe.seed", self.seed, "must fit in 64 bits (|seed| < 2**63)")
        _require(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "probe.device",
            self.device,
            "must be cpu, cuda, cuda:N or auto",
        )
        _require(self.mode in ("train", "eval"), "probe.mode", self.mode, "must be train or eval")
        _require(self.seq_len >= 1, "probe.seq_len", self.seq_len, "must be at least 1")
        _require(self.image_size >= 1, "probe.image_size", self.image_size, "must be at least 1")


@dataclass(frozen=True)
class DiagnoseConfig:
    reference_layers: int = 3
    vanishing_warning: float = 1e-2
    vanishing_error: float = 1e-3
    exploding_warning: float = 1e2
    exploding_error: float = 1e3
    collapse_ratio: float = 1e-2
    saturation_derivative: float = 0.05
    saturated_units: float = 0.5
    dead_units: float = 0.5
    underflow_margin: float = 1.0
    large_weight_gain: float = 3.0

    def __post_init__(self) -> None:
        _require(self.reference_layers >= 1, "diagnose.reference_layers", self.reference_layers, "must be >= 1")
        _require(
            0 < self.vanishing_error <= self.vanishing_warning < 1,
            "diagnose.vanishing_error",
            self.vanishing_error,
            "needs 0 < vanishing_error <= vanishing_warning < 1",
        )
        _require(
            1 < self.exploding_warning <= self.exploding_error,
            "diagnose.exploding_warning",
            self.exploding_warning,
            "needs 1 < exploding_warning <= exploding_error",
        )
        _require(0 < self.collapse_ratio < 1, "diagnose.collapse_ratio", self.collapse_ratio, "must be in (0, 1)")
        for name in ("saturation_derivative", "saturated_units", "dead_units"):
            value = getattr(self, name)
            _require(0 < value < 1, f"diagnose.{name}", value, "must be in (0, 1)")
        _require(self.underflow_margin > 0, "diagnose.underflow_margin", self.underflow_margin, "must be > 0")
        _require(self.large_weight_gain > 0, "diagnose.large_weight_gain", self.large_weight_gain, "must be > 0")


@dataclass(frozen=True)
class SuggestConfig:
    pseudo_norm_min_ratio: float = 0.1
    rescale_max_gain: float = 100.0
    regularize_lambda: float = 1e-2

    def __post_init__(self) -> None:
        _require(
            0 < self.pseudo_norm_min_ratio < 1,
            "suggest.pseudo_norm_min_ratio",
            self.pseudo_norm_min_ratio,
            "must be in (0, 1)",
        )
        _require(self.rescale_max_gain >= 1, "suggest.rescale_max_gain", self.rescale_max_gain, "must be >= 1")
        _require(self.regularize_lambda > 0, "suggest.regularize_lambda", self.regularize_lambda, "must be > 0")


@dataclass(frozen=True)
class PolicyConfig:
    """``gradscope check``: which findings fail, per rule and per layer glob, and the baseline regression factor.

    Severities are ``error``, ``warning``, ``info`` or ``ignore`` (YAML's bare ``off``/``false`` read as ignore).
    ``layers`` maps a glob over qualified layer names to ``{rule or "*": severity, baseline_factor: x}``; the last
    matching glob wins per key. The names are checked against ``gradscope.policy`` (imported late: no cycle).
    """

    fail_on: str = "error"
    fail_statuses: tuple[str, ...] = ()
    severity: Mapping[str, Any] = field(default_factory=dict)
    layers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    baseline_factor: float = 10.0

    def __post_init__(self) -> None:
        from .policy import validate_policy

        validate_policy(self)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    diagnose: DiagnoseConfig = field(default_factory=DiagnoseConfig)
    suggest: SuggestConfig = field(default_factory=SuggestConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """Apply dotted overrides such as ``{"probe.batches": 8}``; ``None`` values are left out (option not given)."""
        nested: dict[str, dict[str, Any]] = {}
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, _, key = dotted.partition(".")
            nested.setdefault(section, {})[key] = value
        return merge(self, nested, source="option")


def _require(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} {why}")


def merge(base: Config, data: Mapping[str, Any], *, source: str) -> Config:
    """A new Config with ``data`` (nested sections) laid over ``base``; unknown keys and wrong types are named."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    changes: dict[str, Any] = {}
    known = {f.name: f for f in dataclasses.fields(base)}
    for section, values in data.items():
        if section not in known:
            raise ConfigError(f"{source}: unknown section {section!r} (known: {', '.join(known)})")
        current = getattr(base, section)
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: section {section!r} must be a mapping, got {type(values).__name__}")
        changes[section] = _merge_section(current, values, f"{source}: {section}")
    try:
        return dataclasses.replace(base, **changes)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _merge_section(current: Any, values: Mapping[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(current)}
    hints = typing.get_type_hints(type(current))
    updates: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(fields)})")
        updates[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return dataclasses.replace(current, **updates)
    except ConfigError:
        raise
    except TypeError as exc:  # pragma: no cover - _coerce checks types first
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin in (Mapping, dict) or hint is Mapping:
        if isinstance(value, Mapping):
            return dict(value)
    elif origin is tuple:  # a YAML list of strings, e.g. policy.fail_statuses
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{where} must be a list of strings, got {value!r}")
    elif origin in (typing.Union, types.UnionType):
        return value
    expected = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{where} must be {expected}, got {value!r}")


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then dotted CLI overrides."""
    config = Config()
    if path is not None:
        try:
            config = merge(config, read_yaml(path), source=str(path))
        except ConfigError as exc:  # a value check deep in a section does not know the file: name it here
            if str(path) not in str(exc):
                raise ConfigError(f"{path}: {exc}") from None
            raise
    if overrides:
        config = config.with_overrides(overrides)
    return config


def read_yaml(path: str | Path) -> Any:
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config file ({exc})") from None
    try:
        data = yaml.safe_load(text)  # safe_load: a Python tag is an error, never executed
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}") from None
    return {} if data is None else data
