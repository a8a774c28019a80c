"""The change a user makes in their own code to adopt applied suggestions: text, never an edit of their file.

For a layer list (``nn.Sequential``) it is the new list, with new and replaced entries marked; for any other module
it is the attribute path with the two lines to add (one in ``__init__``, one in ``forward``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from torch import nn

from ..results import Suggestion
from ..vocab import Remedy
from .apply import gru_like, residual_blocks

_NEW = "  # ← gradscope"


def code_change(model: nn.Module, applied: Sequence[Suggestion], pseudo_norm_args: str = "") -> str:
    after: dict[str, list[str]] = defaultdict(list)  # module name → constructor texts to insert after it
    replaced: dict[str, str] = {}
    lines: list[str] = []
    for s in applied:
        params = dict(s.params)
        if s.remedy is Remedy.PSEUDO_NORM:
            args = pseudo_norm_args or (f"scale={params['scale']:.3g}" if "scale" in params else "")
            for name in s.layers:
                after[name].append(f"gradscope.PseudoNorm({args})")
        elif s.remedy is Remedy.NORMALIZATION:
            norms = params["norm"]
            for name in s.layers:
                kind = norms[name] if isinstance(norms, dict) else norms
                after[name].append(f"nn.{kind}({_features(model, name)})")
        elif s.remedy is Remedy.ACTIVATION:
            act = str(params.get("activation", "ReLU"))
            for name in s.layers:
                replaced[name] = f"nn.{act}({params.get('negative_slope', '') if act == 'LeakyReLU' else ''})"
            if params.get("init"):
                lines += [
                    "# and initialise every Linear/Conv for the new activation:",
                    "for m in model.modules():",
                    "    if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):",
                    f"        nn.init.{params['init']}(m.weight, nonlinearity='relu')",
                    "        nn.init.zeros_(m.bias)",
                ]
        elif s.remedy is Remedy.RESCALE:
            lines.append("# per-layer gains (W = g·W_raw; the forward function is unchanged):")
            lines += [
                f"gradscope.remedies.apply_rescale({_path(name)}, {gain})" for name, gain in params["gains"].items()
            ]
        elif s.remedy is Remedy.REGULARIZE:
            weights = ", ".join(f"{_path(n)}.weight" for n in s.layers)
            lines += [
                "# in the training step, before loss.backward():",
                f"loss = loss + {params['lambda']} * sum(w.pow(2).sum() for w in [{weights}])",
            ]
        elif s.remedy is Remedy.INIT:
            scheme = str(params.get("scheme"))
            arg = f"gain={params['gain']}" if "gain" in params else "nonlinearity='relu'"
            lines += [
                f"for m in [{', '.join(_path(n) for n in s.layers)}]:",
                f"    nn.init.{scheme}(m.weight, {arg})",
                "    nn.init.zeros_(m.bias)",
            ]
        elif s.remedy is Remedy.GATED_RECURRENT:
            for name in s.layers:
                module = model.get_submodule(name)
                if isinstance(module, nn.RNN):
                    replaced[name] = _ctor(gru_like(module))
        elif s.remedy is Remedy.RESIDUAL and "block" in params:
            blocks = residual_blocks(model, s.layers, int(params["block"]))
            spans = ", ".join(f"{_path(first)} … {_path(last)}" for first, last in blocks)
            lines += [
                "# skip connections x + f(x) around each block (same shape in and out):",
                "class Residual(nn.Module):",
                "    def __init__(self, *layers: nn.Module) -> None:",
                "        super().__init__()",
                "        self.body = nn.Sequential(*layers)",
                "",
                "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
                "        return x + self.body(x)",
                f"# and in the layer list, wrap each of: {spans}",
                "# as one Residual(...) entry",
            ]
        elif s.remedy is Remedy.CLIP:
            lines.append(
                f"torch.nn.utils.clip_grad_norm_(model.parameters(), {params.get('max_norm', 1.0)})"
                "  # after loss.backward()"
            )
    return "\n".join(_structural(model, after, replaced) + lines)


def _structural(model: nn.Module, after: dict[str, list[str]], replaced: dict[str, str]) -> list[str]:
    """New layer lists for Sequential parents; two-line snippets for everything else."""
    modules = dict(model.named_modules())
    by_parent: dict[str, set[str]] = defaultdict(set)
    loose: list[str] = []
    for name in [*after, *replaced]:
        parent, _, child = name.rpartition(".")
        if isinstance(modules.get(parent), nn.Sequential) and child in dict(modules[parent].named_children()):
            by_parent[parent].add(name)
        elif name not in loose:
            loose.append(name)
    out: list[str] = []
    for parent in sorted(by_parent):
        where = "the model itself" if not parent else _path(parent)
        out.append(f"# {where} is an nn.Sequential; its new layer list:")
        out.append("nn.Sequential(")
        for child, module in modules[parent].named_children():
            name = f"{parent}.{child}" if parent else child
            if name in replaced:
                out.append(f"    {replaced[name]},{_NEW} (was {_ctor(module)})")
            else:
                out.append(f"    {_ctor(module)},")
            out += [f"    {text},{_NEW}" for text in after.get(name, [])]
        out.append(")")
    for name in loose:
        attr = re.sub(r"\W", "_", "_".join(name.split("."))) or "root"
        for text in after.get(name, []):
            new = f"self.{attr}_{text.split('(')[0].split('.')[-1].lower()}"
            out += [
                f"# after {_path(name)} ({type(modules[name]).__name__}):",
                f"#   in __init__:  {new} = {text}",
                f"#   in forward:   h = {new}(<the output of {_self_path(name)}>)",
            ]
        if name in replaced:
            out.append(f"{_path(name)} = {replaced[name]}  # was {_ctor(modules[name])}")
    return out


def _ctor(module: nn.Module) -> str:
    if next(module.children(), None) is not None:
        return f"{type(module).__name__}(...)"
    prefix = "nn." if type(module).__module__.startswith("torch.nn") else ""
    arguments = module.extra_repr()
    return f"{prefix}{type(module).__name__}({arguments if arguments.isprintable() else '...'})"


def _features(model: nn.Module, name: str) -> int | str:
    module = model.get_submodule(name)
    return getattr(module, "out_features", None) or getattr(module, "out_channels", None) or "num_features"


def _path(name: str, root: str = "model") -> str:
    """``model.blocks[0].fc``; a name that is no identifier (``add_module`` takes any string) as a quoted
    ``get_submodule`` call, so no name can break a line of the code or add one."""
    out = root
    for part in name.split("."):
        if part.isdigit():
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}"
        elif part:
            out += f".get_submodule({part!r})"
    return out


def _self_path(name: str) -> str:
    return _path(name, "self")
