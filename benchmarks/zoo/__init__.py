"""A zoo of broken models: networks a user could write that fail to train for a gradient-flow reason.

Each ``Entry`` is a model builder (``build()``, drawing from torch's global RNG: seed it first), the task it is
trained on (``tasks``), the optimizer its failure is about, and one line on what is wrong with it. Families:

  collapse     the forward signal shrinks to nothing: tiny init (fixed small std, a gain below 1, a scaled-down
               default), so every layer's output is near-constant and the gradient at the input side is tiny
  vanishing    deep sigmoid / tanh MLPs and CNNs at PyTorch's or Xavier init (depth 10-60): the backward signal
               decays layer by layer
  exploding    ReLU-family stacks without normalization at a large gain: the forward signal and the loss blow up
  saturation   tanh / sigmoid with weights ×3-×10: units pinned at ±1 (or 0/1), derivatives near zero
  dead         ReLU with a large negative bias or a negative-mean init: most units never fire
  time         vanilla ``nn.RNN`` over sequences of 30-40 steps (tanh and relu, one and two layers): the gradient
               through time decays (or explodes)
  shared       one block called n times in a Python loop (weights shared across depth)
  mixed        narrow many-layer CNNs, module trees (ModuleList encoders, hand-written forward) with the same faults

``optimizer`` is "adam" (the trial's default) for most entries; entries marked "sgd" fail with plain SGD (lr 0.1) but
train under Adam, and the harness trains them with SGD. Whether an entry really fails untreated is measured by the
harness (``benchmarks/repair.py``), not assumed here: an entry whose untreated run reaches the trained bar on some
seed is reported and left out of the rates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from . import models as m
from .tasks import Task, digits, hold_first


@dataclass(frozen=True)
class Entry:
    name: str
    family: str
    build: Callable[[], nn.Module]
    task: Task
    what: str  # what is broken, in a few words
    optimizer: str = "adam"


FLAT, IMG1, IMG3 = digits("flat"), digits("1x8x8"), digits("3x8x8")


def _e(name: str, family: str, task: Task, what: str, build: Callable[[], nn.Module], opt: str = "adam") -> Entry:
    return Entry(name, family, build, task, what, opt)


ZOO: tuple[Entry, ...] = (
    # -- forward collapse: tiny init ------------------------------------------------------------------------------
    _e(
        "relu_mlp_d8_std001",
        "collapse",
        FLAT,
        "ReLU MLP, weights N(0, 0.01²)",
        lambda: m.mlp("relu", 8, 64, "normal:0.01"),
    ),
    _e(
        "tanh_mlp_d12_std002",
        "collapse",
        FLAT,
        "tanh MLP width 96, weights N(0, 0.02²)",
        lambda: m.mlp("tanh", 12, 96, "normal:0.02"),
    ),
    _e(
        "gelu_mlp_d10_x01",
        "collapse",
        FLAT,
        "GELU MLP width 48, default init × 0.1",
        lambda: m.mlp("gelu", 10, 48, "scale:0.1"),
    ),
    _e(
        "silu_mlp_d16_xavier03",
        "collapse",
        FLAT,
        "SiLU MLP, Xavier gain 0.3",
        lambda: m.mlp("silu", 16, 64, "xavier:0.3"),
    ),
    _e(
        "relu_cnn_d6_std001",
        "collapse",
        IMG1,
        "ReLU CNN 8 channels, weights N(0, 0.01²)",
        lambda: m.cnn("relu", 6, 8, "normal:0.01"),
    ),
    _e(
        "tree_sigmoid_d6_x02",
        "collapse",
        FLAT,
        "module-tree sigmoid net, default init × 0.2",
        lambda: m.tree("sigmoid", 6, 64, "scale:0.2"),
    ),
    # -- vanishing: deep sigmoid / tanh ---------------------------------------------------------------------------
    _e("sigmoid_mlp_d10", "vanishing", FLAT, "sigmoid MLP depth 10, default init", lambda: m.mlp("sigmoid", 10, 64)),
    _e(
        "sigmoid_mlp_d20_w128",
        "vanishing",
        FLAT,
        "sigmoid MLP depth 20 width 128, default init",
        lambda: m.mlp("sigmoid", 20, 128),
    ),
    _e(
        "sigmoid_mlp_d40_xavier",
        "vanishing",
        FLAT,
        "sigmoid MLP depth 40, Xavier gain 1",
        lambda: m.mlp("sigmoid", 40, 64, "xavier:1"),
    ),
    _e(
        "sigmoid_mlp_d15_w32_orth",
        "vanishing",
        FLAT,
        "sigmoid MLP depth 15 width 32, orthogonal gain 1",
        lambda: m.mlp("sigmoid", 15, 32, "orthogonal:1"),
    ),
    _e("tanh_mlp_d30", "vanishing", FLAT, "tanh MLP depth 30, default init", lambda: m.mlp("tanh", 30, 64)),
    _e(
        "tanh_mlp_d60_w32", "vanishing", FLAT, "tanh MLP depth 60 width 32, default init", lambda: m.mlp("tanh", 60, 32)
    ),
    _e(
        "tanh_mlp_d40_xavier1",
        "vanishing",
        FLAT,
        "tanh MLP depth 40, Xavier gain 1",
        lambda: m.mlp("tanh", 40, 64, "xavier:1"),
    ),
    _e(
        "tanh_mlp_d20_dropout",
        "vanishing",
        FLAT,
        "tanh MLP depth 20 with dropout 0.1, default init",
        lambda: m.mlp("tanh", 20, 64, dropout=0.1),
    ),
    _e("sigmoid_cnn_d10", "vanishing", IMG1, "sigmoid CNN depth 10, 8 channels", lambda: m.cnn("sigmoid", 10, 8)),
    _e("tanh_cnn_d20", "vanishing", IMG1, "tanh CNN depth 20, 8 channels, default init", lambda: m.cnn("tanh", 20, 8)),
    _e(
        "sigmoid_cnn_d12_3ch_xavier",
        "vanishing",
        IMG3,
        "sigmoid CNN depth 12 on 3x8x8, Xavier gain 1",
        lambda: m.cnn("sigmoid", 12, 12, "xavier:1", in_channels=3),
    ),
    # -- exploding: large gain, no normalization ------------------------------------------------------------------
    _e(
        "relu_mlp_d20_kaiming2",
        "exploding",
        FLAT,
        "ReLU MLP depth 20, Kaiming × 2",
        lambda: m.mlp("relu", 20, 64, "kaiming:2"),
    ),
    _e(
        "relu_mlp_d10_std1",
        "exploding",
        FLAT,
        "ReLU MLP depth 10, weights N(0, 1)",
        lambda: m.mlp("relu", 10, 64, "normal:1"),
    ),
    _e(
        "leaky_mlp_d15_orth3",
        "exploding",
        FLAT,
        "LeakyReLU MLP depth 15, orthogonal gain 3",
        lambda: m.mlp("leaky_relu", 15, 64, "orthogonal:3"),
    ),
    _e(
        "relu_cnn_d8_kaiming3",
        "exploding",
        IMG1,
        "ReLU CNN depth 8, Kaiming × 3",
        lambda: m.cnn("relu", 8, 8, "kaiming:3"),
    ),
    _e(
        "elu_mlp_d12_x4",
        "exploding",
        FLAT,
        "ELU MLP depth 12 width 96, default init × 4",
        lambda: m.mlp("elu", 12, 96, "scale:4"),
    ),
    _e(
        "tree_relu_d8_std05",
        "exploding",
        FLAT,
        "module-tree ReLU net, weights N(0, 0.5²)",
        lambda: m.tree("relu", 8, 64, "normal:0.5"),
    ),
    # -- saturation by large weights ------------------------------------------------------------------------------
    _e(
        "tanh_mlp_d6_x5",
        "saturation",
        FLAT,
        "tanh MLP depth 6, default init × 5",
        lambda: m.mlp("tanh", 6, 64, "scale:5"),
    ),
    _e(
        "sigmoid_mlp_d4_x8",
        "saturation",
        FLAT,
        "sigmoid MLP depth 4, default init × 8",
        lambda: m.mlp("sigmoid", 4, 64, "scale:8"),
    ),
    _e(
        "tanh_mlp_d10_xavier3",
        "saturation",
        FLAT,
        "tanh MLP depth 10, Xavier gain 3 × 5/3",
        lambda: m.mlp("tanh", 10, 64, "xavier:5"),
    ),
    _e(
        "tanh_cnn_d6_x6",
        "saturation",
        IMG1,
        "tanh CNN depth 6, default init × 6",
        lambda: m.cnn("tanh", 6, 8, "scale:6"),
    ),
    _e(
        "sigmoid_mlp_d3_w256_x10",
        "saturation",
        FLAT,
        "wide shallow sigmoid MLP, default init × 10",
        lambda: m.mlp("sigmoid", 3, 256, "scale:10"),
    ),
    _e(
        "tree_tanh_d5_x4",
        "saturation",
        FLAT,
        "module-tree tanh net, default init × 4",
        lambda: m.tree("tanh", 5, 64, "scale:4"),
    ),
    _e(
        "sgd_tanh_mlp_d6_x5",
        "saturation",
        FLAT,
        "tanh MLP depth 6, default init × 5, plain SGD",
        lambda: m.mlp("tanh", 6, 64, "scale:5"),
        "sgd",
    ),
    _e(
        "sgd_sigmoid_mlp_d4_x8",
        "saturation",
        FLAT,
        "sigmoid MLP depth 4, default init × 8, plain SGD",
        lambda: m.mlp("sigmoid", 4, 64, "scale:8"),
        "sgd",
    ),
    _e(
        "sigmoid_mlp_d8_x6",
        "saturation",
        FLAT,
        "sigmoid MLP depth 8, default init × 6",
        lambda: m.mlp("sigmoid", 8, 64, "scale:6"),
    ),
    # -- dead units -----------------------------------------------------------------------------------------------
    _e("relu_mlp_d6_bias-3", "dead", FLAT, "ReLU MLP depth 6, biases −3", lambda: m.mlp("relu", 6, 64, bias=-3.0)),
    _e(
        "relu_mlp_d4_w128_bias-1",
        "dead",
        FLAT,
        "ReLU MLP depth 4 width 128, biases −1",
        lambda: m.mlp("relu", 4, 128, bias=-1.0),
    ),
    _e("relu_cnn_d6_bias-2", "dead", IMG1, "ReLU CNN depth 6, biases −2", lambda: m.cnn("relu", 6, 8, bias=-2.0)),
    _e(
        "relu_mlp_d8_negmean",
        "dead",
        FLAT,
        "ReLU MLP depth 8, weights N(−0.05, 0.05²)",
        lambda: m.mlp("relu", 8, 64, "negnormal:0.05,0.05"),
    ),
    _e(
        "tree_relu_d6_bias-2", "dead", FLAT, "module-tree ReLU net, biases −2", lambda: m.tree("relu", 6, 64, bias=-2.0)
    ),
    # -- through time: vanilla nn.RNN ------------------------------------------------------------------------------
    _e("rnn_tanh_T30_h64", "time", hold_first(30), "nn.RNN tanh, hidden 64, 30 steps", lambda: m.recurrent(64)),
    _e(
        "rnn_tanh_T40_h32",
        "time",
        hold_first(40, hidden=32),
        "nn.RNN tanh, hidden 32, 40 steps",
        lambda: m.recurrent(32),
    ),
    _e(
        "rnn_relu_T30_h64",
        "time",
        hold_first(30),
        "nn.RNN relu, hidden 64, 30 steps",
        lambda: m.recurrent(64, nonlinearity="relu"),
    ),
    _e(
        "rnn_tanh_2layer_T30_h48",
        "time",
        hold_first(30, hidden=48),
        "2-layer nn.RNN tanh, hidden 48",
        lambda: m.recurrent(48, layers=2),
    ),
    _e(
        "rnn_tanh_onehot_T30_h64",
        "time",
        hold_first(30, onehot=True),
        "nn.RNN tanh on one-hot floats",
        lambda: m.recurrent(64, onehot=True),
    ),
    _e(
        "rnn_tanh_T30_hh3",
        "time",
        hold_first(30),
        "nn.RNN tanh, recurrent weights × 3",
        lambda: m.recurrent(64, hh_scale=3.0),
    ),
    # -- across depth with a shared module ------------------------------------------------------------------------
    _e(
        "shared_tanh_loop20",
        "shared",
        FLAT,
        "one Linear+tanh block called 20 times",
        lambda: m.shared_mlp("tanh", 20, 64),
    ),
    _e(
        "shared_sigmoid_loop8",
        "shared",
        FLAT,
        "one Linear+sigmoid block called 8 times",
        lambda: m.shared_mlp("sigmoid", 8, 64),
    ),
    _e(
        "shared_conv_tanh_loop12",
        "shared",
        IMG1,
        "one Conv+tanh block called 12 times",
        lambda: m.shared_cnn("tanh", 12, 8),
    ),
    _e(
        "shared_relu_loop15_kaiming2",
        "shared",
        FLAT,
        "one Linear+ReLU block called 15 times, Kaiming × 2",
        lambda: m.shared_mlp("relu", 15, 64, "kaiming:2"),
    ),
    # -- mixed ---------------------------------------------------------------------------------------------------
    _e("narrow_cnn_tanh_d16_c4", "mixed", IMG1, "16 narrow (4-channel) tanh conv layers", lambda: m.cnn("tanh", 16, 4)),
    _e(
        "narrow_cnn_sigmoid_d10_c4_pool",
        "mixed",
        IMG1,
        "10 narrow sigmoid conv layers with pooling",
        lambda: m.cnn("sigmoid", 10, 4, pool_every=4),
    ),
    _e(
        "tower_sigmoid_3x3",
        "mixed",
        IMG3,
        "module-tree CNN tower, 3 stages × 3 sigmoid convs",
        lambda: m.conv_tower("sigmoid", (8, 16, 32), 3, in_channels=3),
    ),
    _e(
        "tower_relu_std001",
        "mixed",
        IMG1,
        "module-tree CNN tower, ReLU, weights N(0, 0.01²)",
        lambda: m.conv_tower("relu", (8, 16), 3, "normal:0.01"),
    ),
    _e(
        "tree_tanh_d24_dropout",
        "mixed",
        FLAT,
        "module-tree tanh net depth 24 with dropout",
        lambda: m.tree("tanh", 24, 64, dropout=0.1),
    ),
    # -- SGD-specific: train under Adam, fail under plain SGD -----------------------------------------------------
    _e(
        "sgd_tanh_mlp_d30_xavier",
        "vanishing",
        FLAT,
        "tanh MLP depth 30, Xavier tanh gain (issue 12's regime)",
        lambda: m.mlp("tanh", 30, 64, "xavier:1.6667"),
        "sgd",
    ),
    _e(
        "sgd_relu_mlp_d20_default",
        "collapse",
        FLAT,
        "ReLU MLP depth 20, PyTorch's default init",
        lambda: m.mlp("relu", 20, 64),
        "sgd",
    ),
    _e(
        "sgd_sigmoid_mlp_d6",
        "vanishing",
        FLAT,
        "sigmoid MLP depth 6, default init",
        lambda: m.mlp("sigmoid", 6, 64),
        "sgd",
    ),
    _e("sgd_tanh_cnn_d10", "vanishing", IMG1, "tanh CNN depth 10, default init", lambda: m.cnn("tanh", 10, 8), "sgd"),
)

BY_NAME: dict[str, Entry] = {e.name: e for e in ZOO}
assert len(BY_NAME) == len(ZOO), "duplicate zoo names"

__all__ = ["BY_NAME", "ZOO", "Entry", "Task"]
