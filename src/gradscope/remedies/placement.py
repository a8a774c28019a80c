"""Where a remedy goes, computed from measured numbers (no torch import: works on a Report's layers).

Pseudo-norm insertion ("every few layers so that the amplitudes stay above one", Bu et al., made precise; the
"one" is the gradient scale of the healthy, output side of the network — measured, since no constant scale works
under SGD: benchmarks/pseudonorm_choices.py):
walk the layers from the output back toward the input, following the measured backward signal (the RMS of the
gradient with respect to each layer's output). A pseudo-norm after a layer restores the gradient arriving there to
the scale of the last restoration point. Insert one after the first layer whose signal has fallen below
``min_ratio`` × the signal at the last restoration point; that layer becomes the new one. The predicted signal
between two insertions therefore never falls below ``min_ratio`` of its restored value.

Rescale gains: a layer whose gradient is ``r`` times the reference gets the reparameterisation W = g·W_raw with
g = √(1/r), capped; under SGD the update of W scales with g², so the layer trains at the reference's pace.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..results import LayerStats


@dataclass(frozen=True)
class Placement:
    after: tuple[str, ...]  # module names, in forward order, after whose output to insert
    predicted_min_ratio: float  # the lowest predicted signal between insertions, relative to its restored value
    untreated_ratio: float  # first / last measured signal without any insertion
    reference_layer: str  # the last hidden layer: the gradient scale the pseudo-norms restore
    reference_signal: float  # its measured signal RMS (for the probe's loss and batch size)


def pseudo_norm_points(layers: Sequence[LayerStats], min_ratio: float) -> Placement | None:
    chain = [
        layer
        for layer in layers
        if layer.signal_rms is not None and math.isfinite(layer.signal_rms.median) and layer.signal_rms.median > 0
    ]
    if len(chain) < 3:
        return None
    anchor = chain[-1].signal_rms.median  # type: ignore[union-attr]
    inserted: list[str] = []
    lowest = 1.0
    for layer in reversed(chain[:-1]):
        value = layer.signal_rms.median  # type: ignore[union-attr]
        ratio = value / anchor
        if ratio < min_ratio:
            inserted.append(layer.name)
            anchor = value
        else:
            lowest = min(lowest, ratio)
    untreated = chain[0].signal_rms.median / chain[-1].signal_rms.median  # type: ignore[union-attr]
    # Restore to the last hidden layer's scale, not the logits' (a few times larger): a larger step than the
    # healthy part of the network takes makes SGD fail (benchmarks/pseudonorm_choices.py).
    hidden = chain[-2]
    return Placement(tuple(reversed(inserted)), lowest, untreated, hidden.name, hidden.signal_rms.median)  # type: ignore[union-attr]


def pseudo_norm_every(layers: Sequence[LayerStats], every: int, among: Sequence[str]) -> Placement | None:
    """A fixed placement, where the measured one finds nothing to restore (``trial --remedy all``): after every
    ``every``-th of the layers ``among`` (forward order; the activations, say), never after the last hidden layer,
    restoring the gradient to that layer's measured scale as the measured placement does."""
    chain = [
        layer
        for layer in layers
        if layer.signal_rms is not None and math.isfinite(layer.signal_rms.median) and layer.signal_rms.median > 0
    ]
    if len(chain) < 3:
        return None
    hidden = chain[-2]
    names = [name for name in among if name != hidden.name and any(layer.name == name for layer in chain[:-2])]
    after = tuple(names[every - 1 :: every])
    if not after:
        return None
    untreated = chain[0].signal_rms.median / chain[-1].signal_rms.median  # type: ignore[union-attr]
    return Placement(after, math.nan, untreated, hidden.name, hidden.signal_rms.median)  # type: ignore[union-attr]


def rescale_gains(layers: Sequence[LayerStats], reference: float, below: float, max_gain: float) -> dict[str, float]:
    gains: dict[str, float] = {}
    for layer in layers:
        if layer.grad_rms is None or not layer.trainable:
            continue
        grad = layer.grad_rms.median
        if not (math.isfinite(grad) and grad > 0):
            continue
        ratio = grad / reference
        if ratio < below:
            gains[layer.name] = round(min(math.sqrt(1.0 / ratio), max_gain), 3)
    return gains
