"""Probe batches and the default loss.

Batches come from the model file's ``probe_batches(n, seed)``, else its ``example_inputs()``, else
``--input-shape``, else are inferred from the model's first layer. Synthetic data is drawn from a private
``torch.Generator`` seeded per batch (``seed + i``): the global RNG is never touched, so a scan does not
change what the user's training code draws next.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .errors import GradscopeError, ProbeError
from .loading import ModelFileHooks
from .torchutil import ACTIVATIONS, dtype_name, float_dtype, iter_tensors
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

# Layers that keep their input's shape and say nothing about it: inference looks past them.
_PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    *ACTIVATIONS,
)


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
) -> list[Batch]:
    """``n`` probe batches on ``device``, from the first source that applies (see the module docstring).

    ``input_shapes`` are full shapes, batch dimension included (``--input-shape 8,3,32,32``), so
    ``batch_size`` does not apply to them. ``input_dtype`` overrides the dtype of synthetic inputs; by default
    floats use the model's first floating parameter dtype (float32 for a model without one). ``budget`` is called
    with the bytes of one synthetic batch, measured on the meta device before anything is allocated (it raises
    to refuse).
    """
    if n < 1:
        raise ProbeError(f"--batches={n} must be at least 1")
    if hooks.probe_batches is not None:
        given = _user_batches(hooks.probe_batches, n, seed)
        return [to_device(_validated(b, i, "probe_batches"), device) for i, b in enumerate(given)]
    if hooks.example_inputs is not None:
        example = _call_hook(hooks.example_inputs, "example_inputs()")
        batch = to_device(_validated(example, 0, "example_inputs"), device)
        return [batch] * n  # the same inputs each time: a fixed batch is what example_inputs() promises

    dtype = _parse_dtype(input_dtype)
    if input_shapes:
        make = _from_shapes(model, input_shapes, dtype)
    else:
        if batch_size < 1:
            raise ProbeError(f"--batch-size={batch_size} must be at least 1")
        make = _inferred(model, dtype, batch_size=batch_size, seq_len=seq_len, image_size=image_size)
    generator = torch.Generator(device="cpu")
    if budget is not None:
        with torch.device("meta"):  # shapes and dtypes only: no memory
            sample = make(generator)
        budget(sum(t.numel() * t.element_size() for t in iter_tensors(sample)))
    batches: list[Batch] = []
    for i in range(n):
        generator.manual_seed(seed + i)
        batches.append(to_device(make(generator), device))
    return batches


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


def _validated(batch: Any, index: int, source: str) -> Batch:
    where = f"probe batch {index} ({source})"
    if not isinstance(batch, (torch.Tensor, tuple, list, Mapping)):
        raise ProbeError(
            f"{where} is a {type(batch).__name__}; it must be a Tensor, a tuple (positional args) "
            "or a dict (keyword args)"
        )
    tensors = list(iter_tensors(batch))
    if not tensors:
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


def _parse_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    dtype = INPUT_DTYPES.get(name.strip().lower())
    if dtype is None:
        raise ProbeError(f"--input-dtype {name!r} is not one of {', '.join(INPUT_DTYPES)}")
    return dtype


def _draw(shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator, high: int) -> torch.Tensor:
    if dtype.is_floating_point:
        # Drawn in float32 and cast, so a seed gives the same values whatever the dtype.
        return torch.randn(shape, generator=generator).to(dtype)
    return torch.randint(0, high, shape, generator=generator, dtype=dtype)


def _from_shapes(model: nn.Module, shapes: Sequence[tuple[int, ...]], dtype: torch.dtype | None) -> Any:
    resolved: list[tuple[int, ...]] = []
    for shape in shapes:
        shape = tuple(int(d) for d in shape)
        if not shape or any(d < 1 for d in shape):
            raise ProbeError(f"--input-shape {','.join(map(str, shape))}: every dimension must be at least 1")
        resolved.append(shape)
    chosen = dtype if dtype is not None else float_dtype(model)
    first = _first_layer(model)
    high = first[1].num_embeddings if first and isinstance(first[1], (nn.Embedding, nn.EmbeddingBag)) else 2

    def make(generator: torch.Generator) -> Batch:
        inputs = tuple(_draw(shape, chosen, generator, high) for shape in resolved)
        return inputs[0] if len(inputs) == 1 else inputs

    return make


def _first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The first module in ``named_modules()`` order that is not a container or a shape-keeping activation."""
    for name, module in model.named_modules():
        if isinstance(module, _KNOWN):
            return name, module
        if isinstance(module, _PASS_THROUGH) or next(module.children(), None) is not None:
            continue
        return name, module
    return None


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


def _inferred(model: nn.Module, dtype: torch.dtype | None, *, batch_size: int, seq_len: int, image_size: int) -> Any:
    found = _first_layer(model)
    if found is None:
        raise ProbeError(
            f"cannot infer the input shape: {type(model).__name__} has no layers; "
            "pass --input-shape 8,3,32,32 or define example_inputs() in the model file"
        )
    name, layer = found
    label = f"'{name or '<model>'}' ({type(layer).__name__})"
    b, s, size = batch_size, seq_len, image_size

    if isinstance(layer, (nn.Embedding, nn.EmbeddingBag)):
        if dtype is not None and dtype.is_floating_point:
            raise ProbeError(
                f"--input-dtype {dtype_name(dtype)} does not fit the first layer {label}, "
                "which takes integer token ids; use --input-dtype int64"
            )
        token_dtype = dtype or torch.int64
        vocab = layer.num_embeddings

        def tokens(generator: torch.Generator) -> Batch:
            return torch.randint(0, vocab, (b, s), generator=generator, dtype=token_dtype)

        return tokens

    if isinstance(layer, nn.modules.lazy.LazyModuleMixin):
        raise _cannot_infer(label, "its sizes are set by the first forward call")
    shapes = _shapes_for(layer, b=b, s=s, size=size)
    if shapes is None:
        raise _cannot_infer(label, None)
    chosen = dtype if dtype is not None else float_dtype(model)

    def make(generator: torch.Generator) -> Batch:
        inputs = tuple(_draw(shape, chosen, generator, 2) for shape in shapes)
        return inputs[0] if len(inputs) == 1 else inputs

    return make


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
        f"cannot infer the input shape from the first layer {label}{reason}; pass --input-shape 8,3,32,32 "
        "or define example_inputs() in the model file"
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


def batch_size_of(batch: Batch) -> int | None:
    """The leading dimension of the first tensor that has one; ``None`` when there is none."""
    for tensor in iter_tensors(batch):
        if tensor.dim() > 0:
            return int(tensor.shape[0])
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
