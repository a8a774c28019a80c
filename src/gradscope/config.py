"""Settings: dataclasses with defaults, YAML read with ``safe_load``, unknown keys rejected by name.

Precedence is CLI option > config file > these defaults. ``configs/default.yaml`` repeats every default with the
reason for its value; a test keeps the two in step. No torch import here (the CLI's ``--help`` path loads it).
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .vocab import FailOn, Optimizer, Rule, Severity, Status

# The policy's words beyond the severities: ``ignore`` drops a check, ``"*"`` in a layer entry means every rule.
IGNORE = "ignore"
ALL_RULES = "*"

# Limits on what an option, a config file or a baseline can ask for (README, "Command line: limits"). They are far
# above any useful probe and far below what exhausts a machine: a typo or a hostile file is one line, not a hang.
MAX_BATCHES = 1_000  # probe.batches
MAX_BATCH_SIZE = 65_536  # probe.batch_size
MAX_SEQ_LEN = 65_536  # probe.seq_len
MAX_IMAGE_SIZE = 4_096  # probe.image_size
MAX_PROBE_BYTES = 2**30  # all synthetic probe batches together (an estimate made before any is allocated)
MAX_NESTING = 64  # levels of nesting in a config file, --model-kwargs or model.kwargs

# The command-line option that sets each config key: errors name what the user typed.
OPTION_KEYS = {
    "probe.batches": "--batches",
    "probe.batch_size": "--batch-size",
    "probe.seed": "--seed",
    "probe.device": "--device",
    "diagnose.optimizer": "--optimizer",
}
OPTION_SOURCE = "option"  # the ``source`` of values given on the command line (``Config.with_overrides``)


@dataclass(frozen=True)
class ModelConfig:
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_nesting(self.kwargs, "model.kwargs")


@dataclass(frozen=True)
class ProbeConfig:
    batches: int = 4
    batch_size: int = 16
    seed: int = 0
    device: str = "auto"
    mode: str = "train"
    seq_len: int = 32
    image_size: int = 32
    threads: int = 1

    def __post_init__(self) -> None:
        _require(self.batches >= 1, "probe.batches", self.batches, "must be at least 1")
        _require(self.batches <= MAX_BATCHES, "probe.batches", self.batches, f"must be at most {MAX_BATCHES:,}")
        _require(self.batch_size >= 1, "probe.batch_size", self.batch_size, "must be at least 1")
        _require(
            self.batch_size <= MAX_BATCH_SIZE,
            "probe.batch_size",
            self.batch_size,
            f"must be at most {MAX_BATCH_SIZE:,}",
        )
        # torch.Generator.manual_seed takes 64 bits; beyond that it failed as an internal OverflowError.
        _require(-(2**63) <= self.seed < 2**63, "probe.seed", self.seed, "must fit in 64 bits (|seed| < 2**63)")
        _require(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "probe.device",
            self.device,
            "must be cpu, cuda, cuda:N or auto",
        )
        _require(self.mode in ("train", "eval"), "probe.mode", self.mode, "must be train or eval")
        _require(1 <= self.seq_len <= MAX_SEQ_LEN, "probe.seq_len", self.seq_len, f"must be in 1..{MAX_SEQ_LEN:,}")
        _require(
            1 <= self.image_size <= MAX_IMAGE_SIZE,
            "probe.image_size",
            self.image_size,
            f"must be in 1..{MAX_IMAGE_SIZE:,}",
        )
        _require(self.threads >= 0, "probe.threads", self.threads, "must be >= 0 (0: torch's own setting)")


@dataclass(frozen=True)
class DiagnoseConfig:
    optimizer: str = "adam"
    reference_layers: int = 3
    vanishing_warning: float = 1e-2
    vanishing_error: float = 1e-2
    exploding_warning: float = 10.0
    exploding_error: float = 70.0
    collapse_ratio: float = 1e-2
    collapse_warning: float = 0.35
    saturating_depth: int = 25
    saturation_derivative: float = 0.05
    saturated_units: float = 0.5
    dead_units: float = 0.5
    dead_units_error: float = 0.999
    underflow_margin: float = 1.0
    large_weight_gain: float = 3.0
    adam_vanishing_error: float = 1e-6
    adam_collapse_error: float = 5e-7
    time_warning: float = 1e-2
    time_error: float = 1e-3
    gate_closed: float = 1e-2
    gate_alive: float = 1e-3

    def __post_init__(self) -> None:
        _finite(self, "diagnose")
        _require(
            self.optimizer in {o.value for o in Optimizer}, "diagnose.optimizer", self.optimizer, "must be sgd or adam"
        )
        _require(
            0 < self.adam_vanishing_error <= self.vanishing_error,
            "diagnose.adam_vanishing_error",
            self.adam_vanishing_error,
            "needs 0 < adam_vanishing_error <= vanishing_error",
        )
        _require(
            0 < self.adam_collapse_error <= self.collapse_ratio,
            "diagnose.adam_collapse_error",
            self.adam_collapse_error,
            "needs 0 < adam_collapse_error <= collapse_ratio",
        )
        _require(
            0 < self.time_error <= self.time_warning < 1,
            "diagnose.time_error",
            self.time_error,
            "needs 0 < time_error <= time_warning < 1",
        )
        _require(0 < self.gate_closed < 1, "diagnose.gate_closed", self.gate_closed, "must be in (0, 1)")
        _require(0 < self.gate_alive < 1, "diagnose.gate_alive", self.gate_alive, "must be in (0, 1)")
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
        _require(
            self.collapse_ratio <= self.collapse_warning < 1,
            "diagnose.collapse_warning",
            self.collapse_warning,
            "needs collapse_ratio <= collapse_warning < 1",
        )
        _require(self.saturating_depth >= 1, "diagnose.saturating_depth", self.saturating_depth, "must be >= 1")
        for name in ("saturation_derivative", "saturated_units", "dead_units"):
            value = getattr(self, name)
            _require(0 < value < 1, f"diagnose.{name}", value, "must be in (0, 1)")
        _require(
            self.dead_units <= self.dead_units_error <= 1,
            "diagnose.dead_units_error",
            self.dead_units_error,
            "needs dead_units <= dead_units_error <= 1",
        )
        _require(self.underflow_margin > 0, "diagnose.underflow_margin", self.underflow_margin, "must be > 0")
        _require(self.large_weight_gain > 0, "diagnose.large_weight_gain", self.large_weight_gain, "must be > 0")


@dataclass(frozen=True)
class SuggestConfig:
    pseudo_norm_min_ratio: float = 0.1
    rescale_max_gain: float = 100.0
    regularize_lambda: float = 1e-2
    residual_min_depth: int = 10
    same_init_tolerance: float = 0.25
    clip_max_norm: float = 1.0
    leaky_relu_slope: float = 0.01

    def __post_init__(self) -> None:
        _finite(self, "suggest")
        _require(
            0 < self.pseudo_norm_min_ratio < 1,
            "suggest.pseudo_norm_min_ratio",
            self.pseudo_norm_min_ratio,
            "must be in (0, 1)",
        )
        _require(self.rescale_max_gain >= 1, "suggest.rescale_max_gain", self.rescale_max_gain, "must be >= 1")
        _require(self.regularize_lambda > 0, "suggest.regularize_lambda", self.regularize_lambda, "must be > 0")
        _require(self.residual_min_depth >= 2, "suggest.residual_min_depth", self.residual_min_depth, "must be >= 2")
        _require(
            0 < self.same_init_tolerance < 1,
            "suggest.same_init_tolerance",
            self.same_init_tolerance,
            "must be in (0, 1)",
        )
        _require(self.clip_max_norm > 0, "suggest.clip_max_norm", self.clip_max_norm, "must be > 0")
        _require(0 < self.leaky_relu_slope < 1, "suggest.leaky_relu_slope", self.leaky_relu_slope, "must be in (0, 1)")


@dataclass(frozen=True)
class TrialConfig:
    """``gradscope trial``: the training budget and what counts as "helps" (README, "Proving a fix")."""

    steps: int = 300
    seeds: int = 3
    batch_size: int = 64
    optimizer: str = "adam"
    sgd_lr: float = 0.1
    adam_lr: float = 1e-3
    test_fraction: float = 0.2
    synthetic_samples: int = 1024
    helps_accuracy: float = 0.05
    helps_loss_ratio: float = 0.10
    trained_accuracy: float = 0.90

    def __post_init__(self) -> None:
        _finite(self, "trial")
        _require(self.steps >= 1, "trial.steps", self.steps, "must be at least 1")
        _require(self.seeds >= 1, "trial.seeds", self.seeds, "must be at least 1")
        _require(self.batch_size >= 1, "trial.batch_size", self.batch_size, "must be at least 1")
        _require(
            self.optimizer in {o.value for o in Optimizer}, "trial.optimizer", self.optimizer, "must be sgd or adam"
        )
        _require(self.sgd_lr > 0, "trial.sgd_lr", self.sgd_lr, "must be > 0")
        _require(self.adam_lr > 0, "trial.adam_lr", self.adam_lr, "must be > 0")
        _require(0 < self.test_fraction < 1, "trial.test_fraction", self.test_fraction, "must be in (0, 1)")
        _require(self.synthetic_samples >= 10, "trial.synthetic_samples", self.synthetic_samples, "must be >= 10")
        _require(0 < self.helps_accuracy < 1, "trial.helps_accuracy", self.helps_accuracy, "must be in (0, 1)")
        _require(0 < self.helps_loss_ratio < 1, "trial.helps_loss_ratio", self.helps_loss_ratio, "must be in (0, 1)")
        _require(0 < self.trained_accuracy <= 1, "trial.trained_accuracy", self.trained_accuracy, "must be in (0, 1]")

    def lr(self, optimizer: str) -> float:
        return self.sgd_lr if optimizer == Optimizer.SGD else self.adam_lr


@dataclass(frozen=True)
class PolicyConfig:
    """``gradscope check``: which findings fail, per rule and per layer glob, and the baseline regression factor.

    Severities are ``error``, ``warning``, ``info`` or ``ignore`` (YAML's bare ``off``/``false`` read as ignore).
    ``layers`` maps a glob over qualified layer names to ``{rule or "*": severity, baseline_factor: x}``; the last
    matching glob wins per key. Every name is checked here, so a typo fails before any model code runs.
    """

    fail_on: str = "error"
    fail_statuses: tuple[str, ...] = ()
    severity: Mapping[str, Any] = field(default_factory=dict)
    layers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    baseline_factor: float = 10.0

    def __post_init__(self) -> None:
        _require(
            self.fail_on in {f.value for f in FailOn},
            "policy.fail_on",
            self.fail_on,
            f"must be one of {', '.join(FailOn)}",
        )
        statuses = [s.value for s in Status]
        for status in self.fail_statuses:
            if status not in statuses:
                raise ConfigError(
                    f"policy.fail_statuses: unknown status {_shown(status)} (known: {', '.join(statuses)})"
                )
        if not isinstance(self.severity, Mapping):
            raise ConfigError(f"policy.severity must be a mapping of rule: severity, got {_shown(self.severity)}")
        for rule, value in self.severity.items():
            _check_rule(rule, f"policy.severity.{rule}")
            _check_severity(value, f"policy.severity.{rule}")
        check_factor(self.baseline_factor, "policy.baseline_factor")
        if not isinstance(self.layers, Mapping):
            raise ConfigError(f"policy.layers must be a mapping of glob: overrides, got {_shown(self.layers)}")
        for glob, entry in self.layers.items():
            where = f"policy.layers[{_shown(glob)}]"
            if not isinstance(glob, str) or not glob:
                raise ConfigError(f"{where}: a layer glob must be a non-empty string")
            if not isinstance(entry, Mapping):
                raise ConfigError(
                    f"{where} must be a mapping such as {{vanishing_gradient: warning}} or {{'*': ignore}}, "
                    f"got {_shown(entry)}"
                )
            for key, value in entry.items():
                if key == "baseline_factor":
                    check_factor(value, f"{where}.baseline_factor")
                    continue
                if key != ALL_RULES:
                    _check_rule(key, f"{where}.{key}")
                _check_severity(value, f"{where}.{key}")


def _check_rule(rule: Any, where: str) -> None:
    if rule not in [r.value for r in Rule]:
        raise ConfigError(f"{where}: unknown rule {_shown(rule)} (known: {', '.join(Rule)})")


def _check_severity(value: Any, where: str) -> None:
    if value is False or value in (*(s.value for s in Severity), IGNORE):
        return
    raise ConfigError(f"{where}={_shown(value)} must be error, warning, info or ignore")


def check_factor(value: Any, where: str) -> None:
    """A regression factor: a finite number > 1 (``--factor`` and ``policy.baseline_factor``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 1
    if not ok:
        shown = (
            f"{where} {value:g}" if where.startswith("--") and isinstance(value, float) else f"{where}={_shown(value)}"
        )
        raise ConfigError(f"{shown} must be a number > 1 (e.g. 10: a tenfold move is a regression)")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    diagnose: DiagnoseConfig = field(default_factory=DiagnoseConfig)
    suggest: SuggestConfig = field(default_factory=SuggestConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """Apply dotted overrides such as ``{"probe.batches": 8}``; ``None`` values are left out (option not given)."""
        nested: dict[str, dict[str, Any]] = {}
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, _, key = dotted.partition(".")
            nested.setdefault(section, {})[key] = value
        return merge(self, nested, source=OPTION_SOURCE)

    def source_of(self, key: str) -> str | None:
        """Who set the dotted ``key`` last: ``"option"``, a config file, a baseline (the ``source`` given to
        ``merge``), or None for the default. Not a setting: it is kept beside the fields, outside equality."""
        sources: Mapping[str, str] = getattr(self, "_sources", {})
        return sources.get(key)

    def origin(self, key: str) -> str:
        """``key`` and its value as the user wrote them, for messages: ``--batch-size 100000`` for an option,
        ``probe.batch_size=100000 in c.yaml`` for a config file, ``probe.batch_size=16 (default)``."""
        section, _, name = key.partition(".")
        value = getattr(getattr(self, section), name)
        source = self.source_of(key)
        if source == OPTION_SOURCE and key in OPTION_KEYS:
            return f"{OPTION_KEYS[key]} {value}"
        return f"{key}={value!r} " + (f"in {source}" if source else "(default)")


def _require(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={_shown(value)} {why}")


def _finite(section: Any, name: str) -> None:
    """NaN compares false with everything: check it first, so the message names the key that holds it."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}.{f.name}={value!r} must be a finite number")


def merge(base: Config, data: Mapping[str, Any], *, source: str) -> Config:
    """A new Config with ``data`` (nested sections) laid over ``base``; unknown keys, wrong types and bad values
    are named, each message starting with ``source`` (a file, ``option``, a baseline). The new Config remembers
    which keys ``source`` set (``Config.source_of``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    changes: dict[str, Any] = {}
    sources = dict(getattr(base, "_sources", {}))
    known = {f.name: f for f in dataclasses.fields(base)}
    for section, values in data.items():
        if section not in known:
            raise ConfigError(f"{source}: unknown section {_shown(section)} (known: {', '.join(known)})")
        current = getattr(base, section)
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: section {section!r} must be a mapping, got {type(values).__name__}")
        changes[section] = _merge_section(current, values, source, section)
        sources.update({f"{section}.{key}": source for key in values})
    merged = dataclasses.replace(base, **changes)
    object.__setattr__(merged, "_sources", sources)
    return merged


def _merge_section(current: Any, values: Mapping[str, Any], source: str, section: str) -> Any:
    where = f"{source}: {section}"
    fields = {f.name: f for f in dataclasses.fields(current)}
    hints = typing.get_type_hints(type(current))
    updates: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {_shown(key)} (known: {', '.join(fields)})")
        updates[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return dataclasses.replace(current, **updates)
    except ConfigError as exc:  # a value check (__post_init__) names the key; say where the value came from
        raise ConfigError(f"{source}: {exc}") from None
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
        raise ConfigError(f"{where} must be a list of strings, got {_shown(value)}")
    elif origin in (typing.Union, types.UnionType):
        return value
    expected = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{where} must be {expected}, got {_shown(value)}")


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
    """The YAML document at ``path``, read safely: no Python tags (``safe_load`` rules), no aliases (``*name``:
    a few hundred bytes of aliases expand to billions of elements), at most ``MAX_NESTING`` levels deep."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config file ({exc})") from None
    try:
        data = yaml.load(text, Loader=_bounded_loader())  # noqa: S506 - a SafeLoader subclass: tags are refused
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}") from None
    return {} if data is None else data


def _bounded_loader() -> type:
    """``yaml.SafeLoader`` that refuses aliases and nesting beyond ``MAX_NESTING`` while composing, before any
    value is built (the composer recurses per level: 3,000 levels were a RecursionError)."""
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"aliases (*{event.anchor}) are not allowed in a gradscope config; write the value out",
                    event.start_mark,
                )
            self._depth += 1
            try:
                if self._depth > MAX_NESTING:
                    event = self.peek_event()  # type: ignore[no-untyped-call]
                    raise yaml.composer.ComposerError(
                        None, None, f"nested more than {MAX_NESTING} levels deep", event.start_mark
                    )
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    return BoundedLoader


def check_nesting(value: Any, where: str) -> None:
    """Raise ``ConfigError`` when ``value`` (a JSON/YAML-like tree) nests deeper than ``MAX_NESTING`` levels."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth >= MAX_NESTING:
            raise ConfigError(f"{where} is nested more than {MAX_NESTING} levels deep")
        stack.extend((child, depth + 1) for child in children)


def _shown(value: Any) -> str:
    """A value in a message: its repr, cut short (a list of a million strings is not a message)."""
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_REPR = reprlib.Repr()
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3
