"""Model builders for the zoo: the kinds of networks a user writes, with the init, depth and width as parameters.

Every builder draws its weights from torch's global RNG, so the caller seeds it (the harness builds each model under
``gradscope.torchutil.seeded(seed)``, as ``gradscope trial`` builds a model file). ``init`` strings name how the
*hidden* weighted layers are initialised; the output layer keeps PyTorch's default:

  default         PyTorch's own init (kaiming_uniform with a = √5: weights U(±1/√fan_in))
  scale:F         PyTorch's init, weights × F (a user's "bigger init" or a checkpoint gone wrong)
  normal:S        weights N(0, S²) (a fixed std, ignoring the fan-in)
  xavier:G        xavier_uniform_ with gain G
  kaiming:F       kaiming_normal_ (fan_in, relu) × F
  orthogonal:G    orthogonal_ with gain G
  negnormal:M,S   weights N(-M, S²): a mean shifted negative (every unit starts below zero for positive inputs)

``bias``: None keeps PyTorch's bias init, a number sets every hidden bias to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}
CLASSES = 10


def init_(layers: Iterable[nn.Module], init: str, bias: float | None = 0.0) -> None:
    """Initialise the weights of ``layers`` (Linear / Conv2d) by ``init`` (see the module docstring)."""
    kind, _, arg = init.partition(":")
    for layer in layers:
        assert isinstance(layer, nn.Linear | nn.Conv2d)
        w = layer.weight
        if kind == "default":
            pass
        elif kind == "scale":
            w.data.mul_(float(arg))
        elif kind == "normal":
            nn.init.normal_(w, 0.0, float(arg))
        elif kind == "xavier":
            nn.init.xavier_uniform_(w, gain=float(arg))
        elif kind == "kaiming":
            nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
            w.data.mul_(float(arg))
        elif kind == "orthogonal":
            nn.init.orthogonal_(w, gain=float(arg))
        elif kind == "negnormal":
            mean, std = (float(v) for v in arg.split(","))
            nn.init.normal_(w, -mean, std)
        else:
            raise ValueError(f"unknown init {init!r}")
        if bias is not None and layer.bias is not None:
            nn.init.constant_(layer.bias, bias)


def mlp(
    act: str,
    depth: int,
    width: int,
    init: str = "default",
    bias: float | None = 0.0,
    *,
    dropout: float = 0.0,
    in_features: int = 64,
) -> nn.Sequential:
    """in_features → [Linear(width) → act (→ Dropout)] × depth → Linear(10), an ``nn.Sequential``."""
    layers: list[nn.Module] = []
    hidden: list[nn.Module] = []
    for i in range(depth):
        linear = nn.Linear(in_features if i == 0 else width, width)
        hidden.append(linear)
        layers += [linear, ACTIVATIONS[act]()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, CLASSES))
    init_(hidden, init, bias)
    return nn.Sequential(*layers)


def cnn(
    act: str,
    depth: int,
    channels: int,
    init: str = "default",
    bias: float | None = 0.0,
    *,
    in_channels: int = 1,
    pool_every: int = 0,
) -> nn.Sequential:
    """8x8 images → [Conv2d(3x3, padding 1) → act] × depth (a 2x2 max-pool after every ``pool_every``-th, while
    the map is larger than 2x2) → Flatten → Linear(10), an ``nn.Sequential``."""
    layers: list[nn.Module] = []
    convs: list[nn.Module] = []
    size = 8
    for i in range(depth):
        conv = nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1)
        convs.append(conv)
        layers += [conv, ACTIVATIONS[act]()]
        if pool_every and (i + 1) % pool_every == 0 and size > 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
    layers += [nn.Flatten(), nn.Linear(channels * size * size, CLASSES)]
    init_(convs, init, bias)
    return nn.Sequential(*layers)


class SharedLoop(nn.Module):
    """One block applied ``n`` times in a Python loop (weight sharing across depth), then a linear head. ``stem``
    maps the input to the block's shape (Identity when it already fits)."""

    def __init__(self, stem: nn.Module, block: nn.Module, n: int, head: nn.Module) -> None:
        super().__init__()
        self.stem, self.block, self.head, self.n = stem, block, head, n

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for _ in range(self.n):
            h = self.block(h)
        return self.head(h)


def shared_mlp(act: str, n: int, width: int, init: str = "default", bias: float | None = 0.0) -> SharedLoop:
    """64 → Linear(width) → act, then one Linear(width, width) → act block called n times, → Linear(10)."""
    stem = nn.Sequential(nn.Linear(64, width), ACTIVATIONS[act]())
    linear = nn.Linear(width, width)
    init_([stem[0], linear], init, bias)
    return SharedLoop(stem, nn.Sequential(linear, ACTIVATIONS[act]()), n, nn.Linear(width, CLASSES))


def shared_cnn(act: str, n: int, channels: int, init: str = "default", bias: float | None = 0.0) -> SharedLoop:
    """1x8x8 → Conv2d(channels) → act, then one Conv2d(channels, channels) → act block called n times → Linear."""
    stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), ACTIVATIONS[act]())
    conv = nn.Conv2d(channels, channels, 3, padding=1)
    init_([stem[0], conv], init, bias)
    head = nn.Sequential(nn.Flatten(), nn.Linear(channels * 64, CLASSES))
    return SharedLoop(stem, nn.Sequential(conv, ACTIVATIONS[act]()), n, head)


class Block(nn.Module):
    """Linear → act, optionally LayerNorm-free dropout: the unit the tree models stack."""

    def __init__(self, width: int, act: str, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.act = ACTIVATIONS[act]()
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.act(self.fc(x)))


class Encoder(nn.Module):
    def __init__(self, width: int, depth: int, act: str, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Linear(64, width)
        self.act = ACTIVATIONS[act]()
        self.blocks = nn.ModuleList(Block(width, act, dropout) for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.embed(x))
        for block in self.blocks:
            h = block(h)
        return h


class Classifier(nn.Module):
    def __init__(self, width: int, act: str) -> None:
        super().__init__()
        self.hidden = nn.Linear(width, width // 2)
        self.act = ACTIVATIONS[act]()
        self.out = nn.Linear(width // 2, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.act(self.hidden(x)))


class TreeNet(nn.Module):
    """An nn.Module tree, not an nn.Sequential: encoder (stem + ModuleList of blocks) → classifier (two layers)."""

    def __init__(self, width: int, depth: int, act: str, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = Encoder(width, depth, act, dropout)
        self.classifier = Classifier(width, act)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.encoder(x))


def tree(
    act: str, depth: int, width: int, init: str = "default", bias: float | None = 0.0, *, dropout: float = 0.0
) -> TreeNet:
    model = TreeNet(width, depth, act, dropout)
    hidden = [model.encoder.embed, *(b.fc for b in model.encoder.blocks), model.classifier.hidden]
    init_(hidden, init, bias)
    return model


class ConvTower(nn.Module):
    """A module-tree CNN: a feature tower of conv stages (each a ModuleList of convs) with pooling between stages,
    then an MLP head; forward written out by hand, as in many research repositories."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], per_stage: int, act: str) -> None:
        super().__init__()
        self.act = ACTIVATIONS[act]()
        stages = []
        c = in_channels
        for w in widths:
            stages.append(nn.ModuleList(nn.Conv2d(c if i == 0 else w, w, 3, padding=1) for i in range(per_stage)))
            c = w
        self.stages = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(2)
        size = 8 // 2 ** (len(widths) - 1)
        self.fc = nn.Linear(c * size * size, 32)
        self.out = nn.Linear(32, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        for i, stage in enumerate(self.stages):
            if i:
                x = self.pool(x)
            for conv in stage:
                x = self.act(conv(x))
        return self.out(self.act(self.fc(x.flatten(1))))


def conv_tower(
    act: str,
    widths: tuple[int, ...],
    per_stage: int,
    init: str = "default",
    bias: float | None = 0.0,
    *,
    in_channels: int = 1,
) -> ConvTower:
    model = ConvTower(in_channels, widths, per_stage, act)
    init_([m for m in model.modules() if isinstance(m, nn.Conv2d)] + [model.fc], init, bias)
    return model


class Recurrent(nn.Module):
    """Tokens (or one-hot float vectors) → ``nn.RNN`` / ``nn.GRU`` → a linear classifier at every position."""

    def __init__(
        self,
        cell: str,
        hidden: int,
        *,
        layers: int = 1,
        nonlinearity: str = "tanh",
        embed: int | None = 16,
        vocab: int = 16,
        classes: int = 8,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed) if embed else None
        size = embed or vocab
        if cell == "rnn":
            self.rnn: nn.Module = nn.RNN(size, hidden, layers, nonlinearity=nonlinearity, batch_first=True)
        elif cell == "gru":
            self.rnn = nn.GRU(size, hidden, layers, batch_first=True)
        else:
            raise ValueError(f"unknown cell {cell!r}")
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x) if self.embed is not None else x
        out, _ = self.rnn(h)
        return self.head(out)


def recurrent(
    hidden: int,
    *,
    cell: str = "rnn",
    layers: int = 1,
    nonlinearity: str = "tanh",
    onehot: bool = False,
    hh_scale: float = 1.0,
    ih_scale: float = 1.0,
    orthogonal_hh: float | None = None,
) -> Recurrent:
    """A recurrent classifier; ``hh_scale`` / ``ih_scale`` multiply PyTorch's recurrent / input weights,
    ``orthogonal_hh`` re-draws the recurrent weights as orthogonal with that gain."""
    model = Recurrent(cell, hidden, layers=layers, nonlinearity=nonlinearity, embed=None if onehot else 16)
    for name, p in model.rnn.named_parameters():
        if name.startswith("weight_hh"):
            if orthogonal_hh is not None:
                nn.init.orthogonal_(p, gain=orthogonal_hh)
            p.data.mul_(hh_scale)
        elif name.startswith("weight_ih"):
            p.data.mul_(ih_scale)
    return model
