"""The words gradscope's contracts are made of, each defined once: statuses, severities, rules, remedies, fail-on
levels, output formats and optimizers. Everything that names one of these imports it from here.

StrEnums, so each member *is* its JSON/CLI string (``Rule.SATURATION == "saturation"``). No torch here.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """What a layer's numbers say. One per layer; the most serious one wins (see ``STATUS_PRIORITY``)."""

    OK = "ok"
    VANISHING = "vanishing"
    EXPLODING = "exploding"
    NONFINITE = "nonfinite"
    FROZEN = "frozen"  # every own parameter has requires_grad=False
    DISCONNECTED = "disconnected"  # no gradient reached the layer at all
    ZERO = "zero"  # a gradient reached the layer and it is exactly zero
    GATED = "gated"  # behind a gate closed at init by design (LayerScale, zero-init head, ...): opens when training
    SATURATED = "saturated"
    DEAD = "dead"
    UNDERFLOW = "underflow"  # below the smallest normal number of the gradient's dtype


# Earlier wins when several apply: a non-finite layer is reported as such even if it also looks saturated.
STATUS_PRIORITY: tuple[Status, ...] = (
    Status.NONFINITE,
    Status.FROZEN,
    Status.DISCONNECTED,
    Status.GATED,
    Status.ZERO,
    Status.UNDERFLOW,
    Status.EXPLODING,
    Status.VANISHING,
    Status.SATURATED,
    Status.DEAD,
    Status.OK,
)


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}[self]


class Rule(StrEnum):
    """Finding rules: what ``diagnose`` reports, plus the one a baseline comparison adds."""

    VANISHING_GRADIENT = "vanishing_gradient"
    EXPLODING_GRADIENT = "exploding_gradient"
    FORWARD_COLLAPSE = "forward_collapse"
    FORWARD_EXPLOSION = "forward_explosion"
    NONFINITE = "nonfinite"
    SATURATION = "saturation"
    DEAD_UNITS = "dead_units"
    UNDERFLOW = "underflow"
    FROZEN = "frozen"
    DISCONNECTED = "disconnected"
    ZERO_GRADIENT = "zero_gradient"
    VANISHING_THROUGH_TIME = "vanishing_through_time"
    GATED_AT_INIT = "gated_at_init"
    DEEP_SATURATING_STACK = "deep_saturating_stack"
    BASELINE_REGRESSION = "baseline_regression"


DIAGNOSE_RULES: tuple[Rule, ...] = tuple(r for r in Rule if r is not Rule.BASELINE_REGRESSION)

# The rule that reports a layer status: ``policy.fail_statuses`` turns a layer's status into a failure of it.
STATUS_RULE: dict[Status, Rule] = {
    Status.VANISHING: Rule.VANISHING_GRADIENT,
    Status.EXPLODING: Rule.EXPLODING_GRADIENT,
    Status.NONFINITE: Rule.NONFINITE,
    Status.FROZEN: Rule.FROZEN,
    Status.DISCONNECTED: Rule.DISCONNECTED,
    Status.ZERO: Rule.ZERO_GRADIENT,
    Status.SATURATED: Rule.SATURATION,
    Status.DEAD: Rule.DEAD_UNITS,
    Status.UNDERFLOW: Rule.UNDERFLOW,
    Status.GATED: Rule.GATED_AT_INIT,
}


class Where(StrEnum):
    AFTER = "after"
    BEFORE = "before"
    REPLACE = "replace"
    MODEL = "model"


class Remedy(StrEnum):
    PSEUDO_NORM = "pseudo_norm"
    RESCALE = "rescale"
    REGULARIZE = "regularize"
    ACTIVATION = "activation"
    NORMALIZATION = "normalization"
    RESIDUAL = "residual"
    INIT = "init"
    CLIP = "clip"
    GATED_RECURRENT = "gated_recurrent"
    LOSS_SCALING = "loss_scaling"
    INSPECT = "inspect"

    @property
    def option(self) -> str:
        """The name on the command line (``gradscope trial --remedy pseudo-norm``)."""
        return self.value.replace("_", "-")


# Remedies that can be applied to a copy of the model in memory (``scan --fix``, ``trial``); the rest need a
# change to the model's code and are listed as such.
IN_MEMORY: frozenset[Remedy] = frozenset(
    {
        Remedy.PSEUDO_NORM,
        Remedy.RESCALE,
        Remedy.REGULARIZE,
        Remedy.ACTIVATION,
        Remedy.NORMALIZATION,
        Remedy.INIT,
        Remedy.CLIP,
        Remedy.RESIDUAL,
        Remedy.GATED_RECURRENT,
    }
)


class FailOn(StrEnum):
    """The lowest finding severity that fails a command (exit 1); ``never`` fails on nothing."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    NEVER = "never"

    def fails(self, severity: Severity | None) -> bool:
        if severity is None or self is FailOn.NEVER:
            return False
        return severity.rank >= Severity(self.value).rank


class Format(StrEnum):
    """Output formats. Not every command has every one (``gradscope trial`` has no markdown)."""

    TABLE = "table"
    JSON = "json"
    MARKDOWN = "markdown"
    HTML = "html"


class Optimizer(StrEnum):
    SGD = "sgd"
    ADAM = "adam"
