"""``--weights ckpt.pt``: put a saved state dict into a freshly built model, safely.

Checkpoints are read only with ``torch.load(..., weights_only=True)``: tensors, containers and plain numbers load,
a pickle that would run code (``__reduce__`` to ``os.system``, arbitrary classes) is refused before anything runs.
Every failure is a ``ModelLoadError`` with one line that names the file and says what to do.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ModelLoadError
from .util import first_line, one_line

# Keys under which training scripts commonly nest the model's state dict (Lightning: "state_dict").
_NESTED_KEYS: tuple[str, ...] = ("state_dict", "model", "model_state_dict")
_SHOWN = 5  # keys named per kind in a message; the rest are counted


def load_weights(model: nn.Module, path: str | Path, *, name: str | None = None) -> None:
    """Copy the state dict saved at ``path`` into ``model`` (strict: every key present, none extra, same shapes).
    Messages name the checkpoint as ``name`` (the path as the user typed it; default ``path``)."""
    shown = name or str(path)
    state = read_state_dict(path, name=shown)
    _check_keys(model, state, shown)
    # A model built on the meta device (no storage) takes the checkpoint's tensors themselves; any other keeps its
    # own parameters (dtype, device, identity) and has the values copied in.
    meta = any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    try:
        model.load_state_dict(state, strict=True, assign=meta)
    except Exception as exc:  # a layer's own _load_from_state_dict or a load hook refused it: keep its reason
        reason = one_line(str(exc)) or type(exc).__name__
        kind = "" if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: "
        raise ModelLoadError(f"--weights {shown}: cannot load into the model: {kind}{reason}") from None


def read_state_dict(path: str | Path, *, name: str | None = None) -> Mapping[str, torch.Tensor]:
    """The state dict saved at ``path``: a plain one, or one nested under ``state_dict`` / ``model``; messages
    name it ``name`` (default ``path``)."""
    file = Path(path)
    path = name or path
    if not file.exists():
        raise ModelLoadError(f"--weights {path}: file not found; check the path to the checkpoint")
    if file.is_dir():
        raise ModelLoadError(f"--weights {path}: is a directory; pass a checkpoint file saved with torch.save")
    if file.stat().st_size == 0:
        raise ModelLoadError(f"--weights {path}: empty file; pass a checkpoint saved with torch.save")
    try:
        # weights_only=True: the unpickler allows tensors and plain containers only, so no code in the file runs.
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(_load_failure(path, exc)) from None
    state = _find_state_dict(data)
    if state is None:
        raise ModelLoadError(
            f"--weights {path}: not a state dict (got {_kind(data)}); save one with "
            "torch.save(model.state_dict(), path), or a dict holding it under 'state_dict' or 'model'"
        )
    return state


def _load_failure(path: str | Path, exc: BaseException) -> str:
    text = str(exc)
    markers = ("weights_only", "Unsupported global", "Unpickler")
    if (isinstance(exc, pickle.UnpicklingError) and "weights" in text.lower()) or any(m in text for m in markers):
        return (
            f"--weights {path}: refused: the file holds pickled Python objects beyond tensors "
            "(loading it could run code); gradscope loads checkpoints only with torch.load(weights_only=True): "
            "re-save it with torch.save(model.state_dict(), path)"
        )
    return f"--weights {path}: not a PyTorch checkpoint ({type(exc).__name__}: {first_line(exc)})"


def _find_state_dict(data: Any) -> Mapping[str, torch.Tensor] | None:
    if _is_state_dict(data):
        return data  # type: ignore[no-any-return]
    if isinstance(data, Mapping):
        for key in _NESTED_KEYS:
            inner = data.get(key)
            if _is_state_dict(inner):
                return inner
    return None


def _is_state_dict(data: Any) -> bool:
    return (
        isinstance(data, Mapping)
        and bool(data)
        and all(isinstance(k, str) for k in data)
        and all(isinstance(v, torch.Tensor) for v in data.values())
    )


def _check_keys(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing key(s) {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected key(s) {_list(unexpected)}")
        hint = _prefix_hint(list(expected), list(state))
        raise ModelLoadError(
            f"--weights {path}: does not match {type(model).__name__}: {'; '.join(parts)}"
            f"{hint or '; check that the checkpoint was saved from this model (and its --model-kwargs)'}"
        )
    for key, tensor in state.items():
        want = expected[key]
        if tuple(tensor.shape) != tuple(want.shape):
            raise ModelLoadError(
                f"--weights {path}: shape mismatch for {key!r}: checkpoint {list(tensor.shape)}, "
                f"model {list(want.shape)}; check --model-kwargs or that the checkpoint is from this model"
            )


def _prefix_hint(expected: list[str], given: list[str]) -> str:
    """DataParallel/compile checkpoints prefix every key ('module.', '_orig_mod.'): say so instead of listing keys."""
    for prefix in ("module.", "_orig_mod."):
        if given and all(k.startswith(prefix) for k in given) and {k[len(prefix) :] for k in given} == set(expected):
            return f"; every checkpoint key starts with {prefix!r}: strip that prefix when saving"
    return ""


def _list(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_SHOWN])
    rest = len(keys) - _SHOWN
    return f"{shown} (and {rest} more)" if rest > 0 else shown


def _kind(data: Any) -> str:
    if isinstance(data, Mapping):
        return f"a dict with keys {_list([str(k) for k in data])}" if data else "an empty dict"
    return type(data).__name__
