"""Probe batches and the default loss.

Batches come from the model file's ``probe_batches(n, seed)``, else its ``example_inputs()``, else
``--input-shape``, else are inferred from the model's first layer. Synthetic data is drawn from a private
``torch.Generator`` seeded per batch (``seed + i``): the global RNG is never touched, so a scan does not
change what the user's training code draws next.

Which layer is first is checked against forward() itself: a dry run with pre-hooks on every layer stops at the
first one called, before it runs (registration order is not call order: ``TransformerModel(nn.Transformer)``
registers its encoder before the embedding it calls first). Required forward() arguments after the inferred inputs
(``forward(input, hidden)``) are supplied where the model or the signature says how (``_extra_for``).
"""

from __future__ import annotations

import inspect
import itertools
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .errors import GradscopeError, ProbeError
from .loading import ModelFileHooks
from .results import ProbeInput
from .torchutil import ACTIVATIONS, EMBEDDINGS, dtype_name, float_dtype, iter_tensors
from .util import describe

Batch = Any  # Tensor | tuple[Any, ...] | dict[str, Any]

DEFAULT_LOSS_NAME = "random_projection"

INPUT_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
}

_CONV3D_SIZE = 16  # volumes grow with the cube; 16³ keeps a probe cheap
_LOSS_SEED_STRIDE = 1_000_003  # a prime, so (seed, batch) pairs do not collide for small batch counts
_HALF = (torch.float16, torch.bfloat16)

_PADDING: tuple[type[nn.Module], ...] = tuple(
    getattr(nn, f"{kind}Pad{d}d")
    for kind in ("Reflection", "Replication", "Zero", "Constant", "Circular")
    for d in (1, 2, 3)
    if hasattr(nn, f"{kind}Pad{d}d")
)

# Layers that say nothing about their input's shape and keep what the next layer needs to see: inference looks
# past them (a padding layer before a convolution, a Flatten before a Linear).
_PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.Flatten,
    *_PADDING,
    *ACTIVATIONS,
)


class ProbeBatches(list[Any]):
    """The probe batches, and what building them decided.

    ``batch_dim`` is the dimension of the inputs that indexes samples (1 for sequence-first inputs, ``(T, B)``);
    ``assumed`` says, one sentence each, what synthetic inputs took for granted (a 1×1 latent, ``hidden =
    None``, …). A plain list of batches works everywhere too: ``layout`` then reads the batch dimension off the
    model.
    """

    def __init__(self, batches: Iterable[Any] = (), *, batch_dim: int = 0, assumed: Sequence[str] = ()) -> None:
        super().__init__(batches)
        self.batch_dim = batch_dim
        self.assumed = tuple(assumed)


def build_batches(
    model: nn.Module,
    hooks: ModelFileHooks,
    *,
    n: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    input_shapes: Sequence[tuple[int, ...]] | None = None,
    input_dtype: str | None = None,
    seq_len: int = 32,
    image_size: int = 32,
    budget: Callable[[int], None] | None = None,
) -> ProbeBatches:
    """``n`` probe batches on ``device``, from the first source that applies (see the module docstring).

    ``input_shapes`` are full shapes, batch dimension included (``--input-shape 8,3,32,32``), so
    ``batch_size`` does not apply to them. ``input_dtype`` overrides the dtype of synthetic inputs; by default
    floats use the model's first floating parameter dtype (float32 for a model without one), and inputs of an
    ``Embedding`` are int64 token ids in its vocabulary. ``budget`` is called with the bytes of one synthetic
    batch, measured on the meta device before anything is allocated (it raises to refuse).
    """
    if n < 1:
        raise ProbeError(f"--batches={n} must be at least 1")
    if hooks.probe_batches is not None:
        given = _user_batches(hooks.probe_batches, n, seed)
        checked = [to_device(_validated(b, i, "probe_batches"), device) for i, b in enumerate(given)]
        return ProbeBatches(checked, batch_dim=batch_dim(model))
    if hooks.example_inputs is not None:
        example = _call_hook(hooks.example_inputs, "example_inputs()")
        batch = to_device(_validated(example, 0, "example_inputs"), device)
        # The same inputs each time: a fixed batch is what example_inputs() promises.
        return ProbeBatches([batch] * n, batch_dim=batch_dim(model))

    dtype = _parse_dtype(input_dtype)
    if input_shapes:
        plan = _shape_plan(model, input_shapes, dtype, device=device, seed=seed)
    else:
        if batch_size < 1:
            raise ProbeError(f"--batch-size={batch_size} must be at least 1")
        sizes = _Sizes(batch_size, seq_len, image_size)
        plan = _inferred_plan(model, dtype, sizes, device=device, seed=seed)
    generator = torch.Generator(device="cpu")
    if budget is not None:
        with torch.device("meta"):  # shapes and dtypes only: no memory
            sample = plan.draw(model, generator)
        budget(sum(t.numel() * t.element_size() for t in iter_tensors(sample)))
    batches: list[Batch] = []
    for i in range(n):
        generator.manual_seed(seed + i)
        batches.append(to_device(plan.draw(model, generator), device))
    return ProbeBatches(batches, batch_dim=plan.batch_dim, assumed=plan.assumed)


def layout(model: nn.Module, batches: Sequence[Batch]) -> tuple[int, tuple[str, ...]]:
    """``(batch dimension, what the probe assumed)`` for ``batches``: as ``build_batches`` decided them, or, for a
    plain list, the batch dimension read off the model and nothing assumed."""
    if isinstance(batches, ProbeBatches):
        return batches.batch_dim, batches.assumed
    return batch_dim(model), ()


def inputs_of(batch: Batch) -> tuple[ProbeInput, ...]:
    """Every tensor of ``batch`` (nested ones too), in order: its shape, dtype and, for keyword arguments, the key."""

    def entry(tensor: torch.Tensor, name: str | None) -> ProbeInput:
        return ProbeInput(tuple(int(d) for d in tensor.shape), dtype_name(tensor.dtype), name)

    if isinstance(batch, Mapping):
        return tuple(entry(t, str(key)) for key, value in batch.items() for t in iter_tensors(value))
    return tuple(entry(t, None) for t in iter_tensors(batch))


# -- user batches --------------------------------------------------------------------------------------------


def _call_hook(hook: Any, label: str, *args: Any) -> Any:
    try:
        return hook(*args)
    except GradscopeError:
        raise
    except Exception as exc:
        raise ProbeError(f"{label} raised {describe(exc)}") from None


def _user_batches(hook: Any, n: int, seed: int) -> list[Batch]:
    label = f"probe_batches({n}, {seed})"
    produced = _call_hook(hook, label, n, seed)
    if isinstance(produced, (torch.Tensor, Mapping)) or not isinstance(produced, Iterable):
        kind = type(produced).__name__
        raise ProbeError(f"{label} returned {kind}; it must return an iterable of {n} batches")
    try:
        batches = list(itertools.islice(produced, n))  # islice: an endless generator is fine
    except GradscopeError:
        raise
    except Exception as exc:
        raise ProbeError(f"{label} raised {describe(exc)} while yielding batches") from None
    if len(batches) < n:
        raise ProbeError(
            f"{label} yielded {len(batches)} batch(es), expected {n}; yield one per --batches or lower --batches"
        )
    return batches


def _first_opaque(obj: Any) -> Any:
    """The first value in a batch that is neither a tensor, a tuple, list or dict, nor a plain scalar or string."""
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return next((found for found in map(_first_opaque, obj) if found is not None), None)
    return None if obj is None or isinstance(obj, (torch.Tensor, bool, int, float, complex, str, bytes)) else obj


def _validated(batch: Any, index: int, source: str) -> Batch:
    where = f"probe batch {index} ({source})"
    if not isinstance(batch, (torch.Tensor, tuple, list, Mapping)):
        raise ProbeError(
            f"{where} is a {type(batch).__name__}; it must be a Tensor, a tuple (positional args) "
            "or a dict (keyword args)"
        )
    tensors = list(iter_tensors(batch))
    if not tensors:
        other = _first_opaque(batch)
        if other is not None:  # tensors inside an object gradscope does not open (a SimpleNamespace, a custom class)
            raise ProbeError(
                f"{where} contains no tensor gradscope can see: it looks inside tuples, lists and dicts only, and "
                f"found a {type(other).__name__}; pass its tensors in a tuple, a dict or a namedtuple instead"
            )
        raise ProbeError(f"{where} contains no tensor; return the model's input tensors from {source}()")
    for tensor in tensors:
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        if bool(torch.isnan(tensor).any()):
            raise ProbeError(f"{where} contains NaN values; make {source}() return finite inputs")
        if bool(torch.isinf(tensor).any()):
            raise ProbeError(f"{where} contains Inf values; make {source}() return finite inputs")
    return batch


# -- synthetic batches ---------------------------------------------------------------------------------------

# Where a model keeps its context length: token ids longer than this would overflow a position table.
_CONTEXT_NAMES = (
    "block_size",
    "max_seq_len",
    "max_len",
    "max_length",
    "n_positions",
    "max_position_embeddings",
    "context_length",
    "n_ctx",
)
# forward() arguments that are a recurrent state, which a model's init_hidden(batch_size) makes.
_STATE_NAMES = ("hidden", "hx", "h", "h0", "state", "states", "hidden_state")
_SEQUENCE: tuple[type[nn.Module], ...] = (
    nn.RNNBase,
    nn.Transformer,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.MultiheadAttention,
)
_DRY_RUNS = 3  # first layer guesses checked against the layer forward() really calls first


class _Stop(BaseException):  # BaseException: a model's own `except Exception` does not swallow it
    """Raised by the pre-hook of the first layer forward() calls: the dry run ends there, before any layer ran."""


def _parse_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    dtype = INPUT_DTYPES.get(name.strip().lower())
    if dtype is None:
        raise ProbeError(f"--input-dtype {name!r} is not one of {', '.join(INPUT_DTYPES)}")
    return dtype


@dataclass(frozen=True)
class _Sizes:
    batch: int
    seq_len: int
    image: int


@dataclass(frozen=True)
class _Draw:
    """One synthetic input tensor: normal floats, or integers in ``[0, high)``."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    high: int = 2

    def draw(self, generator: torch.Generator) -> torch.Tensor:
        if self.dtype.is_floating_point:
            # Drawn in float32 and cast, so a seed gives the same values whatever the dtype.
            return torch.randn(self.shape, generator=generator).to(self.dtype)
        return torch.randint(0, self.high, self.shape, generator=generator, dtype=self.dtype)

    def code(self) -> str:
        """The expression that makes such a tensor, for an error message that shows the fix."""
        dims = ", ".join(map(str, self.shape))
        if self.dtype.is_floating_point:
            cast = "" if self.dtype == torch.float32 else f", dtype=torch.{dtype_name(self.dtype)}"
            return f"torch.randn({dims}{cast})"
        return f"torch.randint(0, {self.high}, ({dims}{',' if len(self.shape) == 1 else ''}))"


@dataclass(frozen=True)
class _Extra:
    """A required positional argument of forward() after the drawn inputs, and how the probe supplies it."""

    name: str
    note: str  # what was assumed; for a missing one, the error that says what to do
    init: str | None = None  # a model method called with the batch size ("init_hidden")
    like: _Draw | None = None  # drawn like the first input (a transformer's tgt)
    missing: bool = False

    def value(self, model: nn.Module, batch_size: int, generator: torch.Generator) -> Any:
        if self.init is not None:
            return getattr(model, self.init)(batch_size)
        if self.like is not None:
            return self.like.draw(generator)
        return None


@dataclass(frozen=True)
class _Plan:
    """How to draw a synthetic batch: inputs made for the first layer, then forward()'s other arguments."""

    layer: tuple[str, nn.Module] | None  # the first layer the inputs are made for
    inputs: tuple[_Draw, ...]
    batch_dim: int
    batch_size: int
    extras: tuple[_Extra, ...] = ()
    assumed: tuple[str, ...] = ()

    def draw(self, model: nn.Module, generator: torch.Generator) -> Batch:
        values: list[Any] = [d.draw(generator) for d in self.inputs]
        values += [e.value(model, self.batch_size, generator) for e in self.extras]
        return values[0] if len(values) == 1 else tuple(values)

    def checked(self) -> _Plan:
        """This plan, or the error of the first argument it cannot supply."""
        for extra in self.extras:
            if extra.missing:
                raise ProbeError(extra.note)
        return self


def _shape_plan(
    model: nn.Module, shapes: Sequence[tuple[int, ...]], dtype: torch.dtype | None, *, device: torch.device, seed: int
) -> _Plan:
    """``--input-shape``: the shapes as given; token ids in the vocabulary when the first layer forward() calls is
    an Embedding (int64 unless ``--input-dtype`` says otherwise), else floats."""
    resolved: list[tuple[int, ...]] = []
    for shape in shapes:
        shape = tuple(int(d) for d in shape)
        if not shape or any(d < 1 for d in shape):
            raise ProbeError(f"--input-shape {','.join(map(str, shape))}: every dimension must be at least 1")
        resolved.append(shape)
    floats = dtype if dtype is not None else float_dtype(model)
    static = _first_layer(model)
    draft = _with_extras(model, _Plan(static, tuple(_Draw(s, floats) for s in resolved), 0, resolved[0][0]))
    layer = static if static is not None and static[1] is model else _first_called(model, draft, device, seed) or static
    assumed: list[str] = []
    chosen, high = floats, 2
    module = None if layer is None else layer[1]
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and layer is not None:
        high = module.num_embeddings
        if dtype is None:
            chosen = torch.int64
            assumed.append(f"int64 token ids below {high} for the first layer {_label(layer)}")
        elif not dtype.is_floating_point:
            chosen = dtype
    elif dtype is not None:
        chosen = dtype
    dim, note = _batch_dim_for(model, layer)
    first = resolved[0]
    dim = dim if len(first) > dim else 0
    assumed += [note] if note and dim else []
    plan = _Plan(layer, tuple(_Draw(s, chosen, high) for s in resolved), dim, first[dim], assumed=tuple(assumed))
    return _with_extras(model, plan).checked()


def _inferred_plan(
    model: nn.Module, dtype: torch.dtype | None, sizes: _Sizes, *, device: torch.device, seed: int
) -> _Plan:
    """Inputs for the first layer: the first in registration order that inference knows, checked by a dry run
    against the layer forward() really calls first (``_first_called``), up to ``_DRY_RUNS`` times."""
    static = _first_layer(model)
    if static is None:
        raise ProbeError(
            f"cannot infer the input shape: {type(model).__name__} has no layers; "
            "pass --input-shape with the full shape, batch size first (e.g. 8,3,32,32 for 8 RGB 32×32 images), "
            "or define example_inputs() in the model file"
        )
    start = static if _inferable(static[1]) else next((f for f in _layers(model) if _inferable(f[1])), None)
    if start is None:
        raise _cannot_infer_layer(static)
    plan = _plan_for(model, start, dtype, sizes)
    tried = {id(start[1])}
    for _ in range(_DRY_RUNS if start[1] is not model else 0):  # a torch layer scanned as is: its own contract
        called = _first_called(model, plan, device, seed)
        if called is None or id(called[1]) in tried:
            break
        if not _inferable(called[1]):
            if start is not static:  # neither the first layer registered nor the first called is one we know
                raise _cannot_infer_layer(called)
            break  # a layer we cannot read (a custom norm) sees the input first: keep what the next one needs
        tried.add(id(called[1]))
        plan = _plan_for(model, called, dtype, sizes)
    return plan.checked()


def _plan_for(model: nn.Module, found: tuple[str, nn.Module], dtype: torch.dtype | None, sizes: _Sizes) -> _Plan:
    name, layer = found
    label = _label(found)
    if isinstance(layer, nn.modules.lazy.LazyModuleMixin):
        raise _cannot_infer_layer(found)
    dim, note = _batch_dim_for(model, found)
    assumed = [note] if note else []
    b, size = sizes.batch, sizes.image
    s, context = _context_length(model, sizes.seq_len)
    if isinstance(layer, (*EMBEDDINGS, *_SEQUENCE)) and context:
        assumed.append(context)
    if isinstance(layer, (nn.Embedding, nn.EmbeddingBag)):
        if dtype is not None and dtype.is_floating_point:
            raise ProbeError(
                f"--input-dtype {dtype_name(dtype)} does not fit the first layer {label}, "
                "which takes integer token ids; use --input-dtype int64"
            )
        tokens = _Draw((b, s) if dim == 0 else (s, b), dtype or torch.int64, layer.num_embeddings)
        return _with_extras(model, _Plan(found, (tokens,), dim, b, assumed=tuple(assumed)))
    shapes = _latent(layer, b)
    if shapes is not None:
        ones = "×".join("1" * (len(shapes[0]) - 2))
        assumed.append(
            f"a {ones} latent for the transposed convolution {label}, as a generator takes "
            "(--input-shape for feature maps)"
        )
    else:
        shapes = _shapes_for(layer, b=b, s=s, size=size)
    if shapes is None:
        raise _cannot_infer_layer(found)
    chosen = dtype if dtype is not None else float_dtype(model)
    plan = _Plan(found, tuple(_Draw(shape, chosen) for shape in shapes), dim, b, assumed=tuple(assumed))
    return _with_extras(model, plan)


def _label(found: tuple[str, nn.Module]) -> str:
    return f"'{found[0] or '<model>'}' ({type(found[1]).__name__})"


def _layers(model: nn.Module, *, root: bool = True) -> Iterator[tuple[str, nn.Module]]:
    """The modules inference can read an input from, in ``named_modules()`` order: known layers and leaves, not
    containers or shape-keeping layers. A subclass of a known layer that has layers inside and its own forward()
    (``class TransformerModel(nn.Transformer)``) is a container: its forward() says nothing about torch's. One
    whose only children keep the shape (the forward-forward example's ``Layer(nn.Linear)`` with a ReLU) is read
    as the layer it extends."""
    for name, module in model.named_modules():
        if not name and not root:
            continue
        has_children = next(module.children(), None) is not None
        if isinstance(module, _KNOWN):
            inner = any(not isinstance(child, _PASS_THROUGH) for child in module.children())
            if not (inner and _own_forward(module)):
                yield name, module
        elif not has_children and not isinstance(module, _PASS_THROUGH):
            yield name, module


def _own_forward(module: nn.Module) -> bool:
    return not (getattr(type(module).forward, "__module__", None) or "").startswith("torch.")


def _first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The first module in ``named_modules()`` order that is not a container or a shape-keeping layer."""
    return next(_layers(model), None)


def _inferable(layer: nn.Module) -> bool:
    if isinstance(layer, nn.modules.lazy.LazyModuleMixin):
        return False
    return isinstance(layer, EMBEDDINGS) or _shapes_for(layer, b=1, s=1, size=1) is not None


def _first_called(model: nn.Module, plan: _Plan, device: torch.device, seed: int) -> tuple[str, nn.Module] | None:
    """The layer forward() calls first on a batch of ``plan``: a pre-hook on every layer stops forward at the
    first one, before it runs, so nothing is computed and nothing (running statistics) changes. None when forward()
    fails before it reaches a layer, or reaches none."""
    hooked = list(_layers(model, root=False))
    if not hooked:
        return None
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    try:
        batch = to_device(plan.draw(model, generator), device)
    except Exception:  # init_hidden() failed: the real draw says so
        return None
    names = {id(module): name for name, module in hooked}
    first: list[tuple[str, nn.Module]] = []

    def stop(module: nn.Module, args: Any) -> None:
        first.append((names[id(module)], module))
        raise _Stop

    handles = [module.register_forward_pre_hook(stop) for _, module in hooked]
    try:
        with torch.no_grad():
            call_model(model, batch)
    except _Stop:
        pass
    except Exception:  # the input did not get forward() to any layer: no verdict on the guess
        pass
    finally:
        for handle in handles:
            handle.remove()
    return first[0] if first else None


def batch_dim(model: nn.Module) -> int:
    """The input dimension that indexes samples, from the model alone: 1 when the first layer, or the recurrent or
    transformer layer an Embedding first layer feeds, is sequence-first (``batch_first=False``), else 0."""
    return _batch_dim_for(model, _first_layer(model))[0]


def _batch_dim_for(model: nn.Module, found: tuple[str, nn.Module] | None) -> tuple[int, str | None]:
    """``(batch dimension, a note when it is not 0)`` for inputs made for the first layer ``found``."""
    if found is None:
        return 0, None
    sequence: tuple[str, nn.Module] | None = found if isinstance(found[1], _SEQUENCE) else None
    if sequence is None and isinstance(found[1], EMBEDDINGS):
        sequence = next(((n, m) for n, m in model.named_modules() if isinstance(m, _SEQUENCE)), None)
    if sequence is None or _batch_first(sequence[1]):
        return 0, None
    where = f"'{sequence[0]}'" if sequence[0] else "the model"
    return 1, f"sequence-first inputs, samples along dimension 1 ({where}: batch_first=False)"


def _batch_first(layer: nn.Module) -> bool:
    flag = getattr(layer, "batch_first", None)
    if flag is None:  # encoder/decoder layers keep it on their attention
        flag = getattr(getattr(layer, "self_attn", None), "batch_first", True)
    return bool(flag)


def _context_length(model: nn.Module, seq_len: int) -> tuple[int, str | None]:
    """``seq_len``, or the model's context length where that is shorter (nanoGPT's ``config.block_size``)."""
    config = getattr(model, "config", None)
    for owner in (model, config):
        for attr in _CONTEXT_NAMES:
            try:
                value = owner.get(attr) if isinstance(owner, Mapping) else getattr(owner, attr, None)
            except Exception:  # a property that raises: no context length there
                value = None
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value < seq_len:
                where = "config." if owner is config else ""
                return value, f"sequence length {value}, the model's {where}{attr}"
    return seq_len, None


def _latent(layer: nn.Module, b: int) -> list[tuple[int, ...]] | None:
    """``(B, C, 1[, 1[, 1]])`` for a transposed convolution that makes something of a 1×1 input (a generator's
    latent); None for other layers and for one whose padding would leave nothing."""
    if not isinstance(layer, nn.modules.conv._ConvTransposeNd) or isinstance(layer.padding, str):
        return None
    geometry = zip(layer.kernel_size, layer.padding, layer.output_padding, layer.dilation, strict=True)
    if any(d * (k - 1) - 2 * p + o + 1 < 1 for k, p, o, d in geometry):
        return None
    return [(b, layer.in_channels, *(1 for _ in layer.kernel_size))]


def _with_extras(model: nn.Module, plan: _Plan) -> _Plan:
    """``plan`` with forward()'s required positional arguments after its inputs supplied (``_extra_for``), and
    inputs beyond what forward() takes dropped."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return plan
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return plan
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in params if p.kind in kinds]
    inputs = plan.inputs[: len(positional)] if positional else plan.inputs
    extras: list[_Extra] = []
    for index, param in enumerate(positional[len(inputs) :], start=len(inputs)):
        if param.default is not inspect.Parameter.empty:
            break
        extras.append(_extra_for(model, param, index, inputs, plan.batch_size))
    for param in params:
        if param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is inspect.Parameter.empty:
            extras.append(_missing(model, param, inputs, "a keyword-only argument"))
    notes = tuple(e.note for e in extras if not e.missing)
    return replace(plan, inputs=inputs, extras=tuple(extras), assumed=plan.assumed + notes)


def _extra_for(model: nn.Module, param: inspect.Parameter, index: int, inputs: tuple[_Draw, ...], b: int) -> _Extra:
    """How to supply forward()'s argument ``param``: the model's ``init_<name>(batch_size)`` (``init_hidden`` for a
    recurrent state), the first input's like for a transformer's second sequence, ``None`` where the signature
    allows it (no annotation, or one that admits None); else it is missing."""
    name = param.name
    methods = [f"init_{name}", *(["init_hidden"] if name in _STATE_NAMES else [])]
    for method in dict.fromkeys(methods):
        init = getattr(model, method, None)
        if callable(init) and _takes_one_argument(init):
            return _Extra(name, f"{name} = model.{method}({b})", init=method)
    if (
        index == 1
        and inputs
        and any(isinstance(m, (nn.TransformerDecoder, nn.TransformerDecoderLayer)) for m in model.modules())
    ):
        first = inputs[0]
        vocabularies = [int(m.num_embeddings) for m in model.modules() if isinstance(m, nn.Embedding)]
        high = first.high if first.dtype.is_floating_point else min([first.high, *vocabularies])
        return _Extra(name, f"{name} drawn like the first input", like=replace(first, high=high))
    if _admits_none(model.forward, param):
        return _Extra(name, f"{name} = None")
    return _missing(model, param, inputs, "annotated, without None")


def _missing(model: nn.Module, param: inspect.Parameter, inputs: tuple[_Draw, ...], why: str) -> _Extra:
    codes = ", ".join([*(d.code() for d in inputs), f"<{param.name}>"])
    return _Extra(
        param.name,
        f"{type(model).__name__}.forward() needs {param.name!r} ({why}), which the probe cannot make up; "
        f"define `def example_inputs(): return ({codes})` in the model file (or in a --probe file)",
        missing=True,
    )


def _takes_one_argument(fn: Any) -> bool:
    try:
        inspect.signature(fn).bind(1)
    except (TypeError, ValueError):
        return False
    return True


def _admits_none(fn: Any, param: inspect.Parameter) -> bool:
    if param.annotation is inspect.Parameter.empty:
        return True
    try:
        hint = typing.get_type_hints(fn).get(param.name, param.annotation)
    except Exception:  # an annotation that does not resolve: read its text
        hint = param.annotation
    if isinstance(hint, str):
        return "None" in hint or "Optional" in hint or hint.strip() in ("Any", "object", "typing.Any")
    return hint in (Any, object, None, type(None)) or type(None) in typing.get_args(hint)


def _cannot_infer_layer(found: tuple[str, nn.Module]) -> ProbeError:
    lazy = isinstance(found[1], nn.modules.lazy.LazyModuleMixin)
    return _cannot_infer(_label(found), "its sizes are set by the first forward call" if lazy else None)


_KNOWN: tuple[type[nn.Module], ...] = (
    nn.Embedding,
    nn.EmbeddingBag,
    nn.Linear,
    nn.Bilinear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.RNNBase,
    nn.LayerNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.Transformer,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.MultiheadAttention,
)


def _shapes_for(layer: nn.Module, *, b: int, s: int, size: int) -> list[tuple[int, ...]] | None:
    if isinstance(layer, nn.Linear):
        return [(b, layer.in_features)]
    if isinstance(layer, nn.Bilinear):
        return [(b, layer.in1_features), (b, layer.in2_features)]
    if isinstance(layer, (nn.Conv1d, nn.ConvTranspose1d)):
        return [(b, layer.in_channels, size)]
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        return [(b, layer.in_channels, size, size)]
    if isinstance(layer, (nn.Conv3d, nn.ConvTranspose3d)):
        return [(b, layer.in_channels, _CONV3D_SIZE, _CONV3D_SIZE, _CONV3D_SIZE)]
    if isinstance(layer, nn.RNNBase):
        return [_sequence(b, s, layer.input_size, layer.batch_first)]
    if isinstance(layer, nn.LayerNorm):
        return [(b, *layer.normalized_shape)]
    if isinstance(layer, nn.BatchNorm1d):
        return [(b, layer.num_features)]
    if isinstance(layer, nn.BatchNorm2d):
        return [(b, layer.num_features, size, size)]
    if isinstance(layer, nn.Transformer):  # forward(src, tgt)
        shape = _sequence(b, s, layer.d_model, layer.batch_first)
        return [shape, shape]
    if isinstance(layer, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        attention = layer.self_attn
        return [_sequence(b, s, attention.embed_dim, attention.batch_first)]
    if isinstance(layer, nn.MultiheadAttention):
        return [_sequence(b, s, layer.embed_dim, layer.batch_first)]
    return None


def _sequence(b: int, s: int, features: int, batch_first: bool) -> tuple[int, int, int]:
    return (b, s, features) if batch_first else (s, b, features)


def _cannot_infer(label: str, why: str | None) -> ProbeError:
    reason = f": {why}" if why else ""
    return ProbeError(
        f"cannot infer the input shape from the first layer {label}{reason}; pass --input-shape with the full "
        "shape, batch size first (e.g. 8,3,32,32 for 8 RGB 32×32 images), or define example_inputs() in the model file"
    )


# -- running the model ---------------------------------------------------------------------------------------


def call_model(model: nn.Module, batch: Batch) -> Any:
    """Run forward: a Tensor is one argument, a tuple/list positional arguments, a dict keyword arguments.

    Exceptions from forward() propagate unchanged: the scanner re-runs forward to say which layer failed.
    """
    if isinstance(batch, torch.Tensor):
        return model(batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    if isinstance(batch, Mapping):
        return model(**batch)
    raise ProbeError(f"a probe batch must be a Tensor, tuple or dict, got {type(batch).__name__}")


def select_output(output: Any) -> torch.Tensor:
    """The tensor the default loss uses: the output itself, the first tensor of a tuple/list, a dict's
    ``"logits"`` (else its first tensor), a ``.logits`` attribute, or the first tensor of ``to_tuple()``."""
    if output is None:
        raise ProbeError("the model returned None; forward() must return a tensor")
    tensor = find_output_tensor(output)
    if tensor is None:
        raise ProbeError(
            f"the model returned {type(output).__name__}, which holds no tensor; return a tensor, a tuple or "
            "dict of tensors, or define loss_fn(output, batch) in the model file"
        )
    if tensor.is_complex():
        raise ProbeError(
            f"model output is a complex tensor ({tensor.dtype}); define loss_fn(output, batch) returning a real scalar"
        )
    if not tensor.is_floating_point():
        kind = "a boolean" if tensor.dtype == torch.bool else "an integer"
        raise ProbeError(f"model output is {kind} tensor ({tensor.dtype}); gradients need a floating-point output")
    if not tensor.requires_grad:
        raise ProbeError(
            "the model output does not depend on any trainable parameter (requires_grad=False); check that "
            "parameters require grad and forward() does not use torch.no_grad() or .detach()"
        )
    return tensor


def find_output_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        logits = output.get("logits")
        if isinstance(logits, torch.Tensor):
            return logits
        return next(iter(iter_tensors(output)), None)
    if isinstance(output, (tuple, list)):
        return next(iter(iter_tensors(output)), None)
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    to_tuple = getattr(output, "to_tuple", None)
    if callable(to_tuple):
        try:
            items = to_tuple()
        except Exception:  # an unrelated to_tuple(); the caller reports "no tensor"
            return None
        return next(iter(iter_tensors(items)), None)
    return None


def default_loss(output: torch.Tensor, seed: int, batch_index: int) -> torch.Tensor:
    """The documented default loss, ``random_projection``: ``loss = sum(output * R) / batch``.

    ``R`` has the output's shape and is drawn from N(0, 1) in float32 by a CPU ``torch.Generator`` seeded
    with ``seed * 1_000_003 + batch_index`` (modulo 2**64), then moved to the output's device; ``batch`` is
    ``output.shape[0]`` (1 for a scalar output). The gradient of this loss with respect to every output
    element is ``R / batch``: a random, unit-variance cotangent that does not depend on the output's values.
    It is therefore usable even when the output has collapsed (constant or zero), and means the same thing
    for logits, log-probabilities or any other output. Half-precision outputs are projected in float32, so the
    loss itself does not underflow. The same seed gives the same loss and gradients on every run.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed((seed * _LOSS_SEED_STRIDE + batch_index) % (1 << 64))
    compute = torch.float32 if output.dtype in _HALF else output.dtype
    projection = torch.randn(tuple(output.shape), generator=generator, dtype=torch.float32)
    projection = projection.to(device=output.device, dtype=compute)
    batch = output.shape[0] if output.dim() > 0 and output.shape[0] > 0 else 1
    return (output.to(compute) * projection).sum() / batch


# -- batch utilities -----------------------------------------------------------------------------------------


def batch_size_of(batch: Batch, dim: int = 0) -> int | None:
    """The size of dimension ``dim`` (the batch dimension, ``layout``) of the first tensor that has one, else its
    leading dimension; ``None`` when no tensor has a dimension."""
    for tensor in iter_tensors(batch):
        if tensor.dim() > 0:
            return int(tensor.shape[dim if tensor.dim() > dim else 0])
    return None


def to_device(batch: Batch, device: torch.device) -> Batch:
    """``batch`` with every tensor moved to ``device``; containers keep their type, other values are kept."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        moved = {key: to_device(value, device) for key, value in batch.items()}
        return moved if type(batch) is dict else _rebuild_mapping(batch, moved)
    if isinstance(batch, tuple):
        items = [to_device(value, device) for value in batch]
        if hasattr(batch, "_fields"):  # namedtuple
            return type(batch)(*items)
        return tuple(items)
    if isinstance(batch, list):
        return [to_device(value, device) for value in batch]
    return batch


def _rebuild_mapping(original: Mapping[Any, Any], moved: dict[Any, Any]) -> Mapping[Any, Any]:
    try:
        return type(original)(moved)  # type: ignore[call-arg]
    except Exception:  # a Mapping type that cannot be built from a dict: a plain dict works for **kwargs
        return moved
