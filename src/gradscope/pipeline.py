"""One library entry per command: a target and settings in, a result object out.

``scan_target`` (``gradscope scan``, with ``--fix``), ``check_target`` (``check``, ``baseline``), ``trial_target``
(``trial``) and ``timeline_of`` (``report``). Each loads the model the same way (``prepare``: target, keyword
arguments, weights, device) and builds its probe batches with the same call (``build_probe``). Nothing here prints;
progress goes to an optional callback. The CLI only parses options into a ``TargetSpec`` and a ``Config``, calls one
of these, renders, and decides the exit code.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import MAX_PROBE_BYTES, Config, merge
from .errors import ConfigError, ProbeError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from .ci.policy import CheckResult
    from .loading import LoadedModel, ModelFileHooks
    from .probes import ProbeBatches
    from .results import Report
    from .trial import TrialReport
    from .watching import Timeline

Progress = Callable[[str], None]
TrainingProgress = Callable[[str, int, int], None]  # (remedy, steps done over all runs, total steps)
PROBE_KEYS = ("batches", "batch_size", "seed")  # what `check` takes from a baseline unless told otherwise


@dataclass(frozen=True)
class TargetSpec:
    """What to load and how to feed it: the options every model-loading command shares."""

    target: str
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)  # laid over the config's model.kwargs
    weights: Path | None = None  # a state dict to load first (weights_only)
    probe_file: Path | None = None  # a .py file with example_inputs / probe_batches / loss_fn / dataset
    input_shapes: tuple[tuple[int, ...], ...] | None = None  # full shapes, batch dimension included
    input_dtype: str | None = None


@dataclass(frozen=True)
class Prepared:
    """A loaded model on its device, the model file's hooks, and the probe batches."""

    model: nn.Module
    hooks: ModelFileHooks
    batches: list[Any]


def _quiet(_: str) -> None:
    return None


# -- loading and probing ---------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


def prepare(spec: TargetSpec, config: Config, progress: Progress = _quiet, *, probe: bool = True) -> Prepared:
    """Load ``spec.target`` (built under the probe's seed, so two runs build the same weights), load its weights,
    check it, move it to the probe's device and build the probe batches (``probe=False``: none).

    Paths the user gave (``--weights``, ``--probe``) are resolved against the working directory before the model
    file runs (it may ``os.chdir``); the grad mode is put back after the import (a file may turn autograd off)."""

    from .checkpoint import load_weights
    from .scanner import check_model

    device = resolve_device(config.probe.device)
    weights = _absolute(spec.weights)
    progress(f"loading {spec.target}")
    loaded = _load(spec, config, config.probe.seed)
    if weights is not None:
        progress(f"loading weights from {spec.weights}")
        load_weights(loaded.module, weights, name=str(spec.weights))
    # Before .to(): a meta-device model fails there with torch's internal error instead of the scan's advice.
    check_model(loaded.module)
    model = loaded.module.to(device)
    batches: list[Any] = []
    if probe:
        progress("building probe batches")
        batches = build_probe(model, loaded.hooks, config, spec)
    return Prepared(model, loaded.hooks, batches)


def _load(spec: TargetSpec, config: Config, seed: int) -> LoadedModel:
    """The model file loaded and its model built under ``seed`` (torch, random, numpy), with the caller's grad mode
    put back after the import (a file may turn autograd off)."""
    import torch

    from .loading import load
    from .torchutil import seeded

    kwargs = {**config.model.kwargs, **spec.model_kwargs}
    probe_file = _absolute(spec.probe_file)
    with seeded(seed), torch.set_grad_enabled(torch.is_grad_enabled()):
        return load(
            spec.target,
            model_kwargs=kwargs or None,
            probe_file=str(probe_file) if probe_file is not None else None,
            kwargs_label=_kwargs_label(spec, config),
        )


def build_model(spec: TargetSpec, config: Config, seed: int) -> nn.Module:
    """The model again, as ``prepare`` builds it, under another seed (a trial's later seeds)."""
    from .checkpoint import load_weights

    module = _load(spec, config, seed).module
    weights = _absolute(spec.weights)
    if weights is not None:
        load_weights(module, weights, name=str(spec.weights))
    return module


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else Path(os.path.abspath(path))


def _kwargs_label(spec: TargetSpec, config: Config) -> str:
    """Where the model's keyword arguments came from, for a message about one it does not take."""
    from_file = config.source_of("model.kwargs") if config.model.kwargs else None
    labels = [
        *(["--model-kwargs"] if spec.model_kwargs else []),
        *([f"model.kwargs in {from_file}"] if from_file else []),
    ]
    return " / ".join(labels) or "--model-kwargs"


def build_probe(
    model: nn.Module, hooks: ModelFileHooks, config: Config, spec: TargetSpec | None = None, *, n: int | None = None
) -> list[Any]:
    """The probe batches for ``model`` under ``config.probe`` (``n`` of them; default ``probe.batches``): the
    model file's ``probe_batches``/``example_inputs``, else ``--input-shape``, else inferred (``probes``).
    Synthetic batches are sized before any is allocated: more than ``MAX_PROBE_BYTES`` in all is a ``ProbeError``
    naming the values and where they came from."""
    from .probes import build_batches
    from .torchutil import device_of, seeded

    p = config.probe
    count = p.batches if n is None else n
    shapes = spec.input_shapes if spec is not None else None

    def within_budget(batch_bytes: int) -> None:
        if batch_bytes * count <= MAX_PROBE_BYTES:
            return
        size = (
            f"--input-shape {' '.join(','.join(map(str, s)) for s in shapes)}"
            if shapes
            else config.origin("probe.batch_size")
        )
        raise ProbeError(
            f"the probe batches would take {_mib(batch_bytes * count)} ({count} × {_mib(batch_bytes)}), more than "
            f"the {_mib(MAX_PROBE_BYTES)} limit: lower {size} or {config.origin('probe.batches')}"
        )

    def build(image_size: int) -> ProbeBatches:
        with seeded(p.seed):  # example_inputs() / probe_batches() may draw from the global RNGs
            return build_batches(
                model,
                hooks,
                n=count,
                batch_size=p.batch_size,
                seed=p.seed,
                device=device_of(model),
                input_shapes=shapes,
                input_dtype=spec.input_dtype if spec is not None else None,
                seq_len=p.seq_len,
                image_size=image_size,
                budget=within_budget,
            )

    batches = build(p.image_size)
    inferred = hooks.probe_batches is None and hooks.example_inputs is None and not shapes
    return _fitting_images(model, batches, build, p.image_size, p.seed) if inferred else batches


# Sizes tried, in order, when inferred square images of probe.image_size do not go through the model (a classifier
# whose Linear expects one size): MNIST, the common small sizes, ImageNet's and Inception's.
IMAGE_SIZES = (28, 64, 224, 96, 128, 256, 299)


def _fitting_images(
    model: nn.Module, batches: ProbeBatches, build: Callable[[int], ProbeBatches], size: int, seed: int
) -> ProbeBatches:
    """``batches`` when they are not inferred square images or the model takes them; else the batches of the first
    size in ``IMAGE_SIZES`` the model takes, with a note in ``assumed``. Each try is a forward of two samples under
    ``no_grad`` with the model put back as it was (``scanner.preserved``); when no size fits, the scan reports the
    first failure as usual."""
    import torch

    from .probes import ProbeBatches

    first = batches[0]
    if not isinstance(first, torch.Tensor) or first.dim() != 4 or first.shape[-2:] != (size, size):
        return batches
    failure = _forward_failure(model, first, seed)
    if failure is None:
        return batches
    for other in IMAGE_SIZES:
        if other == size:
            continue
        candidate = build(other)
        if _forward_failure(model, candidate[0], seed) is None:
            note = f"{other}×{other} images: {size}×{size} did not go through the model ({failure})"
            return ProbeBatches(list(candidate), batch_dim=candidate.batch_dim, assumed=(*candidate.assumed, note))
    return batches


def _forward_failure(model: nn.Module, batch: torch.Tensor, seed: int) -> str | None:
    """Why a forward of two samples of ``batch`` fails (None when it runs), leaving the model and the RNGs as
    they were."""
    import torch

    from .probes import call_model
    from .scanner import preserved
    from .torchutil import seeded
    from .util import first_line

    try:
        with preserved(model), seeded(seed), torch.no_grad():
            call_model(model, batch[:2])
    except Exception as exc:  # the user's forward, any failure: the size is what is being tried
        return first_line(exc)
    return None


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n:,} bytes"


@contextlib.contextmanager
def user_code_output() -> Iterator[None]:
    """The frame around the model file's code (import, factory, forward, hooks, ``dataset()``):

    - file descriptor 1 is the process's stderr (``os.dup2``) and ``sys.stdout`` is ``sys.stderr``, so whatever
      it prints — ``print``, ``sys.__stdout__``, ``os.write(1, ...)``, ``os.system``, a C library — goes to stderr
      and stdout carries the report only (``--format json`` stays one JSON document);
    - the warnings it raises are held back: shown afterwards when the block succeeds, dropped when it fails, so a
      failure stays the one line of the error contract (``--debug`` shows the traceback);
    - the working directory is put back afterwards: a model file that ``os.chdir``s does not move ``--output``.

    Everything is restored on the way out, on error too."""
    cwd = _cwd()
    with warnings.catch_warnings(record=True) as caught:
        try:
            with _stdout_to_stderr():
                yield
        finally:
            if cwd is not None and _cwd() != cwd:
                with contextlib.suppress(OSError):
                    os.chdir(cwd)
    for w in caught:  # reached only when the block succeeded
        warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the directory was removed under us
        return None


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    _flush(sys.stdout, sys.__stdout__)
    saved: int | None = None
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no fd 1 or 2 to redirect (a closed stream): the Python-level redirect still applies
        if saved is not None:
            os.close(saved)
            saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _flush(sys.stdout, sys.__stdout__)  # what the user's code left in Python's buffers belongs on stderr
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _flush(*streams: Any) -> None:
    for stream in streams:
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.flush()


# -- scan ------------------------------------------------------------------------------------------------------


def scan_target(spec: TargetSpec, config: Config, *, fix: bool = False, progress: Progress = _quiet) -> Report:
    """``gradscope scan``: load, probe, scan; with ``fix``, also apply the lead suggestions and scan again."""
    prepared = prepare(spec, config, progress)
    report = scan_prepared(prepared, spec, config, progress)
    if fix:
        progress("applying the suggestions and re-scanning")
        report = verify_fix(
            prepared.model, prepared.batches, report, loss_fn=prepared.hooks.loss_fn, config=config, target=spec.target
        )
    return report


def scan_prepared(prepared: Prepared, spec: TargetSpec, config: Config, progress: Progress) -> Report:
    """The scan of a prepared model over its probe batches, reporting each batch to ``progress``."""
    from .scanner import scan

    return scan(
        prepared.model,
        prepared.batches,
        loss_fn=prepared.hooks.loss_fn,
        config=config,
        target=spec.target,
        progress=lambda i, n: progress(f"probing batch {i}/{n}"),
    )


def verify_fix(
    model: nn.Module,
    batches: Sequence[Any],
    report: Report,
    *,
    loss_fn: Callable[[Any, Any], Any] | None = None,
    config: Config | None = None,
    target: str | None = None,
) -> Report:
    """``report`` with its ``fix``: the lead suggestion for each finding applied to a copy of ``model`` in memory,
    and the copy scanned again over the same batches. The model itself is not changed."""
    from .remedies.apply import Options, apply, pick
    from .remedies.code import code_change
    from .remedies.pseudonorm import DEFAULT_PSEUDO_NORM_ARGS
    from .results import Fix
    from .scanner import scan

    chosen = pick(report.suggestions)
    treated = {rule for s in chosen for rule in s.rules}
    why = "needs a change to the model's code; it cannot be applied in memory"
    skipped = tuple((s, why) for s in report.suggestions if s not in chosen and not set(s.rules) <= treated)
    if not chosen:
        return replace(report, fix=Fix((), report, skipped, ""))
    config = config or Config()
    try:
        patched = apply(model, chosen, Options(seed=config.probe.seed))
    except ProbeError as exc:  # the model cannot be copied (or patched): the scan stands, the fix says why not
        reason = f"not applied: {exc}"
        return replace(report, fix=Fix((), report, (*((s, reason) for s in chosen), *skipped), ""))
    after = scan(patched.model, batches, loss_fn=loss_fn, config=config, target=target)
    code = code_change(model, patched.applied, DEFAULT_PSEUDO_NORM_ARGS)
    return replace(report, fix=Fix(tuple(patched.applied), after, (*patched.skipped, *skipped), code))


# -- check -----------------------------------------------------------------------------------------------------


def probe_like(config: Config, baseline: Report, label: str, keep: Collection[str] = ()) -> Config:
    """``config`` probing like ``baseline`` did (its batches, batch size and seed), so the numbers compare; the
    keys in ``keep`` (``"batches"``, …: given on the command line) stay as they are; so does the optimizer the
    verdict assumes (``diagnose.optimizer``: the baseline's unless ``"optimizer"`` is kept). A bad value is blamed
    on the baseline file."""
    values = {key: getattr(baseline.probe, key) for key in PROBE_KEYS if key not in keep}
    sections: dict[str, dict[str, Any]] = {"probe": {k: v for k, v in values.items() if v is not None}}
    if "optimizer" not in keep:  # the verdict assumed this optimizer: judge the new scan the same way
        sections["diagnose"] = {"optimizer": baseline.probe.optimizer}
    source = label if label.startswith("baseline") else f"baseline {label}"
    try:
        return merge(config, sections, source=source)
    except ConfigError as exc:  # a hand-edited baseline: blame the file, never an option the user did not type
        raise ConfigError(f"{exc}; regenerate it with `gradscope baseline TARGET -o {label}`") from None


def check_target(
    spec: TargetSpec,
    config: Config,
    *,
    baseline: Report | None = None,
    baseline_label: str | None = None,
    fail_on: str | None = None,
    factor: float | None = None,
    keep_probe: Collection[str] = (),
    progress: Progress = _quiet,
) -> CheckResult:
    """``gradscope check``: scan under the policy, probing like ``baseline`` (unless ``keep_probe`` says a key was
    given explicitly), and compare with it."""
    from .ci.policy import judge

    label = baseline_label or "baseline"
    if baseline is not None:
        config = probe_like(config, baseline, label, keep_probe)
    report = scan_target(spec, config, progress=progress)
    return judge(
        report,
        config.policy,
        baseline=baseline,
        baseline_label=label,
        current_label=spec.target,
        fail_on=fail_on,
        factor=factor,
    )


# -- trial -----------------------------------------------------------------------------------------------------


def trial_target(
    spec: TargetSpec,
    config: Config,
    *,
    remedies: Sequence[str],
    steps: int | None = None,
    optimizer: str | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seeds: int | None = None,
    progress: Progress = _quiet,
    training_progress: TrainingProgress | None = None,
) -> TrialReport:
    """``gradscope trial``: scan (seeded by ``probe.seed``), pick the candidates, train each arm once per seed, from
    that seed's build of the model file (the same weights for every seed with ``--weights``)."""
    from .trial import UNTREATED, Plan, Task, dataset_from, plan, run_trial, untrained

    # The advice is for the optimizer the trial trains with (what a backward-only fix is worth depends on it).
    config = config.with_overrides({"diagnose.optimizer": optimizer or config.trial.optimizer})
    prepared = prepare(spec, config, progress, probe=False)
    progress("reading dataset()")
    data = dataset_from(prepared.hooks)
    report = None
    example = None
    if tuple(remedies) != (UNTREATED,) or data is None:
        progress("building probe batches")
        prepared = replace(prepared, batches=build_probe(prepared.model, prepared.hooks, config, spec))
        example = prepared.batches[0]
    if tuple(remedies) != (UNTREATED,):
        report = scan_prepared(prepared, spec, config, progress)
    chosen = plan(prepared.model, report, remedies, config)

    def train(chosen: Plan) -> TrialReport:
        return run_trial(
            prepared.model,
            candidates=chosen.selected,
            data=data,
            config=config,
            steps=steps,
            optimizer=optimizer,
            lr=lr,
            seed=config.probe.seed,
            seeds=seeds,
            build=lambda seed: build_model(spec, config, seed),
            batch_size=batch_size,
            example=example,
            progress=training_progress,
            target=spec.target,
            note=chosen.note,
            not_trained=chosen.not_trained,
        )

    result = train(chosen)
    if result.data.task is Task.CLASSIFICATION:
        best = max((a.accuracy.mean for a in result.arms if a.accuracy is not None), default=None)
        again = untrained(chosen, best, config)
        if again is not None:
            progress("no arm trained: training every candidate")
            result = train(again)
    return result


# -- report (watch logs) ---------------------------------------------------------------------------------------


def timeline_of(log: str | os.PathLike[str], *, window: int | None = None, config: Config | None = None) -> Timeline:
    """``gradscope report``: a watch log read back, in one streaming pass, into a timeline and the report of its
    last ``window`` steps."""
    from .watching import read_timeline

    return read_timeline(log, window=window, config=config)


__all__ = [
    "Prepared",
    "TargetSpec",
    "build_probe",
    "check_target",
    "prepare",
    "probe_like",
    "resolve_device",
    "scan_target",
    "timeline_of",
    "trial_target",
    "user_code_output",
    "verify_fix",
]
