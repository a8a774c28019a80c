"""Model targets → ``nn.Module``, plus the optional probe/loss hooks found next to the model.

A target is ``path/to/file.py``, ``path/to/file.py:NAME`` or ``package.module:NAME`` (README,
"Model targets"). Every failure is a ``ModelLoadError`` with one line that names the file or option and
says what to do.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import enum
import importlib
import importlib.util
import inspect
import itertools
import os
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .errors import ModelLoadError
from .util import describe, first_line

FACTORY_NAMES: tuple[str, ...] = ("build_model", "create_model", "get_model")
HOOK_NAMES: tuple[str, ...] = ("example_inputs", "probe_batches", "loss_fn", "dataset")

# Import names whose pip distribution is called something else; the rest are suggested as-is.
_PIP_NAMES = {
    "sklearn": "scikit-learn",
    "cv2": "opencv-python",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "skimage": "scikit-image",
}

_counter = itertools.count()


@dataclass(frozen=True)
class ModelFileHooks:
    """Optional functions found in the model file (or a separate ``--probe`` file)."""

    example_inputs: Callable[[], Any] | None = None  # -> one batch: Tensor | tuple (positional) | dict (kw)
    probe_batches: Callable[[int, int], Iterable[Any]] | None = None  # (n, seed) -> n batches
    loss_fn: Callable[[Any, Any], Any] | None = None  # (output, batch) -> scalar tensor
    dataset: Callable[[], Any] | None = None  # used later by `trial`
    source: str | None = None  # the file (or module) they came from


@dataclass(frozen=True)
class LoadedModel:
    module: nn.Module
    target: str  # the target string as the user gave it
    name: str  # what was picked, e.g. "DeepTanh" or "build_model"
    hooks: ModelFileHooks


def load(
    target: str,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    probe_file: str | None = None,
    kwargs_label: str = "--model-kwargs",
) -> LoadedModel:
    """Resolve ``target`` to a module, construct it with ``model_kwargs`` and collect the hooks.

    Hooks come from the model file (or, for ``package.module:NAME``, from that module); those in
    ``probe_file`` take precedence one by one. ``kwargs_label`` names where ``model_kwargs`` came from in messages.
    """
    kwargs = dict(model_kwargs or {})
    where, name = _split_target(target)
    is_file = _looks_like_path(where)
    namespace = import_file(where) if is_file else _import_package_module(where, target)
    if name is None:  # only files get here: _split_target requires NAME for package.module targets
        module, picked = _discover(namespace, where, kwargs, kwargs_label)
    else:
        obj = _get_attribute(namespace, name, where)
        module, picked = _instantiate(obj, name, kwargs, where, kwargs_label), name

    hooks = _hooks_from(namespace, where)
    if probe_file is not None:
        hooks = _merge_hooks(_load_probe_hooks(probe_file), hooks)
    return LoadedModel(module=module, target=target, name=picked, hooks=hooks)


# -- targets -------------------------------------------------------------------------------------------------


def _split_target(target: str) -> tuple[str, str | None]:
    """``(file_or_module, NAME or None)``. A colon inside a path (``C:\\x\\m.py``) is not a NAME separator."""
    text = target.strip()
    if not text:
        raise ModelLoadError("TARGET is empty; pass path/to/model.py, model.py:NAME or package.module:NAME")
    head, sep, tail = text.rpartition(":")
    if sep and head and tail and not any(ch in tail for ch in "/\\") and not tail.endswith(".py"):
        return head, tail
    if text.endswith(".py"):
        return text, None
    if os.path.exists(text) or any(ch in text for ch in "/\\"):
        kind = "a directory" if os.path.isdir(text) else "not a .py file"
        raise ModelLoadError(f"{text}: {kind}; pass a Python model file (model.py) or package.module:NAME")
    raise ModelLoadError(
        f"{text}: not a model target; pass path/to/model.py, path/to/model.py:NAME or package.module:NAME"
    )


def _looks_like_path(where: str) -> bool:
    return where.endswith(".py") or any(ch in where for ch in "/\\") or os.path.exists(where)


def import_file(path: str) -> types.ModuleType:
    """Execute a Python file as a module under a private, unique name and hand the module object back.

    The caller's interpreter state is left as it was found:

    * the file's directory is on ``sys.path`` only while the file executes (so it can import helper modules
      that sit next to it), and ``sys.path`` is restored exactly afterwards;
    * ``sys.argv`` is ``[path]`` while the file executes, so it never parses gradscope's own arguments;
    * the private module name is removed from ``sys.modules`` afterwards, and so is every module newly
      imported *from the file's directory* (helpers that sit next to it), so a second model file with a helper
      of the same name gets its own. Newly imported third-party packages stay in ``sys.modules``: removing a
      package with C extensions and importing it again breaks it.

    ``if __name__ == "__main__":`` blocks do not run. ``KeyboardInterrupt`` propagates; every other failure
    becomes a ``ModelLoadError`` naming the file.
    """
    file = Path(path)
    if not file.exists():
        raise ModelLoadError(f"{path}: file not found; check the path to the model file")
    if file.is_dir():
        raise ModelLoadError(f"{path}: is a directory; pass a Python file such as {path.rstrip('/')}/m.py")
    if file.suffix != ".py":
        raise ModelLoadError(f"{path}: not a .py file; pass a Python model file or package.module:NAME")
    resolved = file.resolve()
    directory = str(resolved.parent)
    module_name = f"_gradscope_model_{os.getpid()}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py path always has a source loader
        raise ModelLoadError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)

    saved_path = list(sys.path)
    saved_argv = sys.argv
    before = set(sys.modules)
    sys.path.insert(0, directory)
    sys.argv = [path]
    # Registered while it runs: dataclasses, typing and pickle look a class's module up by name.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:
        raise ModelLoadError(
            f"{path}: exited during import (sys.exit({exc.code!r})); "
            "guard module-level code with if __name__ == '__main__'"
        ) from None
    except SyntaxError as exc:
        where = exc.filename if exc.filename and Path(exc.filename).resolve() != resolved else path
        raise ModelLoadError(f"{where}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except ImportError as exc:
        raise ModelLoadError(_import_error_message(path, exc)) from None
    except Exception as exc:
        raise ModelLoadError(f"{path} failed at import: {describe(exc)}") from None
    finally:
        import_path = list(sys.path)  # what the file saw, including entries it added itself
        sys.path[:] = saved_path
        sys.argv = saved_argv
        sys.modules.pop(module_name, None)
        _forget_local_modules(before, directory, import_path)
    return module


def _forget_local_modules(before: set[str], directory: str, search_path: list[str]) -> None:
    """Drop modules imported from ``directory`` during the import.

    A module belongs to the longest ``sys.path`` entry that holds it, so a virtualenv inside the project
    directory is not mistaken for a helper.
    """
    roots = sorted({os.path.abspath(p or os.curdir) for p in search_path}, key=len, reverse=True)
    for name in set(sys.modules) - before:
        for location in _locations(sys.modules.get(name)):
            owner = next((r for r in roots if _is_within(os.path.abspath(location), r)), None)
            if owner == directory:
                sys.modules.pop(name, None)
                break


def _locations(module: object) -> list[str]:
    """Where a module was loaded from, read from its namespace: a module-level ``__getattr__`` answers any name
    (``__path__`` included) with whatever it likes, and sys.modules may hold objects that are not modules."""
    try:
        namespace = vars(module)
        found = [namespace.get("__file__"), *(namespace.get("__path__") or ())]
    except Exception:  # no namespace, or a __path__ that is not a list of paths
        return []
    return [location for location in found if isinstance(location, str)]


def _is_within(location: str, root: str) -> bool:
    return location == root or location.startswith(root.rstrip(os.sep) + os.sep)


def _import_error_message(path: str, exc: ImportError) -> str:
    missing = exc.name
    if isinstance(exc, ModuleNotFoundError) and missing:
        top = missing.split(".")[0]
        pip_name = _PIP_NAMES.get(top, top)
        return (
            f"{path}: imports module {missing!r}, which is not installed; "
            f"pip install {pip_name} (or put {top}.py next to the model file)"
        )
    if missing:
        top = missing.split(".")[0]
        return (
            f"{path}: {first_line(exc)}; check that {top!r} is installed and up to date "
            f"(pip install -U {_PIP_NAMES.get(top, top)})"
        )
    return f"{path}: import failed: {first_line(exc)}"


def _import_package_module(module_name: str, target: str) -> types.ModuleType:
    """Import ``package.module`` normally (it stays imported). The working directory is searched last, so a
    project's own package works with the ``gradscope`` script too, without shadowing installed packages."""
    if not module_name.replace(".", "").replace("_", "").isalnum():
        raise ModelLoadError(
            f"{target}: {module_name!r} is neither a .py file nor a module name; "
            "pass path/to/model.py[:NAME] or package.module:NAME"
        )
    saved_path = list(sys.path)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            top = exc.name.split(".")[0]
            raise ModelLoadError(
                f"{target}: cannot import module {exc.name!r}; check the spelling or pip install "
                f"{_PIP_NAMES.get(top, top)}"
            ) from None
        raise ModelLoadError(_import_error_message(module_name, exc)) from None
    except ImportError as exc:
        raise ModelLoadError(_import_error_message(module_name, exc)) from None
    except SystemExit as exc:
        raise ModelLoadError(
            f"{module_name}: exited during import (sys.exit({exc.code!r})); "
            "guard module-level code with if __name__ == '__main__'"
        ) from None
    except SyntaxError as exc:
        where = exc.filename or module_name
        raise ModelLoadError(f"{where}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:
        raise ModelLoadError(f"{module_name} failed at import: {describe(exc)}") from None
    finally:
        sys.path[:] = saved_path


def _get_attribute(namespace: types.ModuleType, name: str, where: str) -> Any:
    obj: Any = namespace
    for part in name.split("."):  # NAME may be dotted: Zoo.resnet
        try:
            obj = getattr(obj, part)
        except AttributeError:
            found = ", ".join(_candidates(namespace)) or "none"
            raise ModelLoadError(f"{where}: no attribute {name!r} (model candidates: {found})") from None
    return obj


# -- discovery and construction ------------------------------------------------------------------------------


def _discover(
    namespace: types.ModuleType, path: str, kwargs: dict[str, Any], label: str = "--model-kwargs"
) -> tuple[nn.Module, str]:
    """Factory, then an instance named ``model``, then the model class the file builds around (``_ranked``)."""
    for factory in FACTORY_NAMES:
        obj = getattr(namespace, factory, None)
        if callable(obj):
            return _instantiate(obj, factory, kwargs, path, label), factory

    instance = getattr(namespace, "model", None)
    if isinstance(instance, nn.Module):
        return _instantiate(instance, "model", kwargs, path, label), "model"

    uses = _class_uses(namespace)
    classes = _ranked(_defined_classes(namespace), uses)
    top = _top_level(classes, uses)  # over every class: one used only by a class that needs arguments is no leader
    usable = [cls for cls in classes if _unsatisfied(cls, kwargs) == ([], [])]
    leaders = [cls for cls in usable if cls in top]
    chosen: type[nn.Module] | None = None
    if len(leaders) == 1:
        chosen = leaders[0]
    elif not leaders and len(top) == 1:  # the one top-level class needs arguments: say which, and how to pass them
        chosen = top[0]
    elif len(usable) == 1:
        chosen = usable[0]
    elif usable:
        names = ", ".join(cls.__name__ for cls in usable)
        first = (leaders or usable)[0].__name__
        raise ModelLoadError(f"{path}: several model classes could be built ({names}); pick one with {path}:{first}")
    if chosen is not None:
        return _instantiate(chosen, chosen.__name__, kwargs, path, label), chosen.__name__
    candidates = _candidates(namespace)
    if candidates:
        example = candidates[0].split(" ")[0]
        obj = getattr(namespace, example, None)
        missing = _unsatisfied(obj, {})[0] if isinstance(obj, type) else []
        extra = f" --model-kwargs {_kwargs_example(obj, missing)}" if isinstance(obj, type) and missing else ""
        raise ModelLoadError(
            f"{path}: no model found by discovery (candidates: {', '.join(candidates)}); pick one with "
            f"{path}:{example}{extra}"
        )
    raise ModelLoadError(
        f"{path}: no nn.Module found; define build_model(), a module-level 'model' instance or an nn.Module "
        f"subclass, or point at one with {path}:NAME"
    )


Uses = Callable[[type, type], bool]  # uses(a, b): class a's body names class b


def _ranked(classes: list[type[nn.Module]], uses: Uses) -> list[type[nn.Module]]:
    """``classes`` with the top-level ones first, each group in file order."""
    top = _top_level(classes, uses)
    return top + [cls for cls in classes if cls not in top]


def _top_level(classes: list[type[nn.Module]], uses: Uses) -> list[type[nn.Module]]:
    """The classes that no other class in ``classes`` uses."""
    return [cls for cls in classes if not any(other is not cls and uses(other, cls) for other in classes)]


def _class_uses(namespace: types.ModuleType) -> Uses:
    """Whether one class of the file uses another: its body (methods, class attributes; not its bases) names it.

    Read from the file's source, so nothing is built to find out: nanoGPT's ``Block`` names
    ``CausalSelfAttention`` and ``MLP``, ``GPT`` names ``Block``, and nothing names ``GPT``. Without readable
    source nothing uses anything (file order stays).
    """
    mentioned: dict[str, set[str]] = {}  # class name -> every Name and .attr in its body
    file = getattr(namespace, "__file__", None)
    try:
        tree = ast.parse(Path(file).read_text(encoding="utf-8")) if isinstance(file, str) else None
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        tree = None
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.ClassDef):
            names = mentioned.setdefault(node.name, set())
            for inner in (n for statement in node.body for n in ast.walk(statement)):
                if isinstance(inner, ast.Name):
                    names.add(inner.id)
                elif isinstance(inner, ast.Attribute):
                    names.add(inner.attr)
    aliases: dict[int, set[str]] = {}
    for name, obj in vars(namespace).items():
        if isinstance(obj, type):
            aliases.setdefault(id(obj), {obj.__name__}).add(name)

    def uses(user: type, used: type) -> bool:
        return bool(mentioned.get(user.__name__, set()) & aliases.get(id(used), {getattr(used, "__name__", "")}))

    return uses


def _defined_classes(namespace: types.ModuleType) -> list[type[nn.Module]]:
    """The file's own nn.Module classes, less the mixins among them: a class without a constructor of its own (it
    makes no layers) that another one combines with a second base (pytorch/examples SNLI's ``Bottle`` in
    ``class Linear(Bottle, nn.Linear)``) is a part, not a model. A class merely subclassed stays a candidate
    (``class B(A)`` leaves both), and so does a base with its own ``__init__``."""
    classes = _own_classes(namespace)
    mixed = {id(base) for cls in classes if len(cls.__bases__) > 1 for base in cls.__bases__}
    mixins = {id(cls) for cls in classes if id(cls) in mixed and "__init__" not in vars(cls)}
    return [cls for cls in classes if id(cls) not in mixins] or classes


def _own_classes(namespace: types.ModuleType) -> list[type[nn.Module]]:
    seen: dict[int, type[nn.Module]] = {}
    for obj in vars(namespace).values():
        if (
            isinstance(obj, type)
            and issubclass(obj, nn.Module)
            and obj.__module__ == namespace.__name__  # imported classes (nn.Linear, helpers) don't count
            and not inspect.isabstract(obj)
        ):
            seen.setdefault(id(obj), obj)
    return list(seen.values())


def _candidates(namespace: types.ModuleType) -> list[str]:
    """Everything a user could name after the colon, described, for error messages."""
    found: list[tuple[bool, str]] = []  # (used by another class of the file, description): top-level ones first
    uses = _class_uses(namespace)
    classes = _defined_classes(namespace)
    for name, obj in vars(namespace).items():
        if name.startswith("_"):
            continue
        if isinstance(obj, nn.Module):
            found.append((False, f"{name} ({type(obj).__name__} instance)"))
        elif isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == namespace.__name__:
            missing, _ = _unsatisfied(obj, {})
            inner = any(other is not obj and uses(other, obj) for other in classes)
            found.append((inner, f"{name} (class, needs {', '.join(missing)})" if missing else f"{name} (class)"))
        elif name in FACTORY_NAMES and callable(obj):
            found.append((False, f"{name} (factory)"))
    return [text for _, text in sorted(found, key=lambda item: item[0])]


def _kwargs_example(obj: Callable[..., Any], missing: list[str]) -> str:
    """The ``--model-kwargs`` value that names each missing argument, quoted for a shell."""
    example = ", ".join(f'"{arg}": {_example_value(obj, arg)}' for arg in missing)
    return f"'{{{example}}}'"


def _unsatisfied(obj: Callable[..., Any], kwargs: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """``(required args not given, given args not accepted)``; both empty when the signature is unknown."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return [], []
    params = signature.parameters.values()
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    accepted = {
        p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    missing = [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and p.name not in kwargs
    ]
    unknown = [] if takes_any else [k for k in kwargs if k not in accepted]
    return missing, unknown


def _instantiate(obj: Any, name: str, kwargs: dict[str, Any], where: str, label: str = "--model-kwargs") -> nn.Module:
    if isinstance(obj, nn.Module):
        if kwargs:
            raise ModelLoadError(
                f"{where}:{name} is an nn.Module instance, so {label} cannot be applied; "
                "point at its class or a factory instead"
            )
        return obj
    if not callable(obj):
        raise ModelLoadError(f"{where}:{name} is a {type(obj).__name__}, not an nn.Module class, factory or instance")
    missing, unknown = _unsatisfied(obj, kwargs)
    if missing:
        raise ModelLoadError(
            f"{where}:{name} needs argument(s) {', '.join(missing)}; pass them with --model-kwargs "
            f"{_kwargs_example(obj, missing)}"
        )
    if unknown:
        raise ModelLoadError(f"{where}:{name} does not take argument(s) {', '.join(unknown)} given in {label}")
    # As at import: the factory sees sys.argv = [file], not gradscope's own options, and an argparse/sys.exit in
    # it is a load error naming the file, not gradscope exiting with argparse's usage line.
    kwargs = _typed_kwargs(obj, kwargs, f"{where}:{name}")
    saved_argv = sys.argv
    sys.argv = [where]
    try:
        result = obj(**kwargs)
    except SystemExit as exc:
        raise ModelLoadError(
            f"{where}: {name}() exited (sys.exit({exc.code!r})); build the model without parsing arguments "
            "and pass settings with --model-kwargs"
        ) from None
    except Exception as exc:
        raise ModelLoadError(f"{where}: {name}() raised {describe(exc)}") from None
    finally:
        sys.argv = saved_argv
    if not isinstance(result, nn.Module):
        raise ModelLoadError(
            f"{where}: {name}() returned {type(result).__name__}, not an nn.Module; return the model itself"
        )
    return result


# -- keyword arguments that are config objects ----------------------------------------------------------------
#
# JSON has no dataclasses: ``--model-kwargs '{"config": {"n_layer": 3}}'`` for ``GPT(config)`` gives a dict where the
# constructor wants a ``GPTConfig``. Each dict value becomes an instance of the class the parameter is annotated
# with, or, without an annotation, of the one dataclass (else the one keyword-constructible class) defined next to
# the constructor whose fields fit the dict; recursively, for dicts inside it. Anything else stays a dict.

_PLAIN = (dict, Mapping, object, list, tuple, set, str, bytes, int, float, bool, complex, type(None))


def _typed_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], label: str) -> dict[str, Any]:
    """``kwargs`` with dict values turned into the config objects ``fn`` takes (see above)."""
    if not any(isinstance(v, Mapping) for v in kwargs.values()):
        return kwargs
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    hints = _hints(fn)
    namespace = _globals_of(fn)
    typed = dict(kwargs)
    for key, value in kwargs.items():
        param = params.get(key)
        if param is None or not isinstance(value, Mapping):
            continue
        cls = _config_class(hints.get(key, param.annotation), namespace, value)
        if cls is None:
            continue
        fields = {str(k): v for k, v in value.items()}
        missing, unknown = _unsatisfied(cls, fields)
        if missing or unknown:
            names = [p for p in inspect.signature(cls).parameters if p not in fields]
            accepted = ", ".join(names) or "none"
            spelled = [(u, _spelled_like(u, names)) for u in unknown]
            unknown_text = ", ".join(f"{u} (did you mean {m}?)" if m else u for u, m in spelled)
            problem = f"has no field(s) {unknown_text}" if unknown else f"needs {', '.join(missing)}"
            raise ModelLoadError(
                f"{label}: --model-kwargs {key!r} is built as {cls.__name__}, which {problem} "
                f"(its other fields: {accepted})"
            )
        fields = _typed_kwargs(cls, fields, f"{label} {key}")
        try:
            typed[key] = cls(**fields)
        except Exception as exc:
            raise ModelLoadError(
                f"{label}: --model-kwargs {key!r} is built as {cls.__name__}(**{key}), which raised {describe(exc)}"
            ) from None
    return typed


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s parameter annotations, strings (``from __future__ import annotations``) resolved in its module;
    one that cannot be resolved stays a string."""
    target = fn.__init__ if isinstance(fn, type) else fn  # type: ignore[misc]
    namespace = _globals_of(fn)
    try:
        return dict(typing.get_type_hints(target, globalns=namespace))
    except Exception:  # one unresolvable annotation spoils them all: resolve the simple ones one by one
        pass
    raw = dict(getattr(target, "__annotations__", None) or {})
    return {name: _lookup(value, namespace) if isinstance(value, str) else value for name, value in raw.items()}


def _lookup(text: str, namespace: Mapping[str, Any]) -> Any:
    """A string annotation that is a (dotted) name, ``Optional[name]`` or ``name | None``, looked up; else the text."""
    parts = [p.strip() for p in text.split("|")]
    if text.startswith("Optional[") and text.endswith("]"):
        parts = [text[len("Optional[") : -1].strip()]
    names = [p for p in parts if p != "None"]
    if len(names) != 1:
        return text
    obj: Any = namespace
    for i, part in enumerate(names[0].split(".")):
        obj = obj.get(part) if i == 0 and isinstance(obj, Mapping) else getattr(obj, part, None)
        if obj is None:
            return text
    return obj


def _globals_of(fn: Callable[..., Any]) -> dict[str, Any]:
    """The module namespace ``fn`` (a function or a class) was defined in."""
    target = inspect.unwrap(fn.__init__ if isinstance(fn, type) else fn)  # type: ignore[misc]
    found = getattr(target, "__globals__", None)
    if isinstance(fn, type) and (not isinstance(found, dict) or found.get("__name__") != fn.__module__):
        module = sys.modules.get(fn.__module__)
        found = vars(module) if module is not None else found
    return found if isinstance(found, dict) else {}


def _config_class(annotation: Any, namespace: Mapping[str, Any], value: Mapping[Any, Any]) -> type | None:
    """The class a dict given for a parameter annotated ``annotation`` should become (None: keep the dict)."""
    if annotation is inspect.Parameter.empty:
        return _fitting_class(namespace, value)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]  # Optional[GPTConfig]
    if not isinstance(annotation, type) or typing.get_origin(annotation) is not None:
        return None
    if annotation in _PLAIN or issubclass(annotation, (Mapping, nn.Module)):
        return None
    return annotation


def _fitting_class(namespace: Mapping[str, Any], value: Mapping[Any, Any]) -> type | None:
    """The one dataclass defined in ``namespace``'s module whose fields fit ``value``; else the one other class with
    its own keyword constructor that fits; else the one dataclass that has most of ``value``'s keys as fields (a
    typo in a field name is then reported against it); None when there is no such class or several."""
    classes = [c for c in _classes_in(namespace) if not issubclass(c, (nn.Module, BaseException, enum.Enum))]
    fitting = [c for c in classes if _fits(c, value)]
    keys = {str(k) for k in value}
    close = [
        c
        for c in classes
        if dataclasses.is_dataclass(c)
        and 2 * sum(bool(_spelled_like(k, [f.name for f in dataclasses.fields(c)])) for k in keys) >= len(keys) > 0
    ]
    for group in ([c for c in fitting if dataclasses.is_dataclass(c)], fitting, close):
        if len(group) == 1:
            return group[0]
        if group:
            return None
    return None


def _spelled_like(key: str, names: Iterable[str]) -> str | None:
    """The one of ``names`` that ``key`` is, or is a likely misspelling of (``n_layers``, ``nlayer`` → ``n_layer``)."""
    names = list(names)
    if key in names:
        return key
    found = difflib.get_close_matches(key, names, n=1, cutoff=0.8)
    return found[0] if found else None


def _classes_in(namespace: Mapping[str, Any]) -> list[type]:
    """The classes defined in the module whose namespace this is (not imported ones), once each."""
    module = namespace.get("__name__")
    found = {id(obj): obj for obj in namespace.values() if isinstance(obj, type) and obj.__module__ == module}
    return list(found.values())


def _fits(cls: type, value: Mapping[Any, Any]) -> bool:
    if not dataclasses.is_dataclass(cls) and cls.__init__ is object.__init__:  # type: ignore[misc]
        return False
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return False
    if any(p.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL) for p in params):
        return False  # takes anything: no evidence it is the config
    missing, unknown = _unsatisfied(cls, {str(k): v for k, v in value.items()})
    return not missing and not unknown


def _example_value(fn: Callable[..., Any], arg: str) -> str:
    """What to write for ``arg`` in the --model-kwargs example: a JSON object with the required fields of the
    config class it takes (``{}`` when every field has a default), else ``<value>``."""
    try:
        param = inspect.signature(fn).parameters[arg]
    except (TypeError, ValueError, KeyError):
        return "<value>"
    namespace = _globals_of(fn)
    cls = _config_class(_hints(fn).get(arg, param.annotation), namespace, {})
    if cls is None and param.annotation is inspect.Parameter.empty:  # any one dataclass of the file, fitting or not
        found = [c for c in _classes_in(namespace) if dataclasses.is_dataclass(c)]
        cls = found[0] if len(found) == 1 else None
    if cls is None:
        return "<value>"
    missing, _ = _unsatisfied(cls, {})
    return "{" + ", ".join(f'"{field}": <value>' for field in missing) + "}"


# -- hooks ---------------------------------------------------------------------------------------------------


def _hooks_from(namespace: types.ModuleType, source: str) -> ModelFileHooks:
    # Non-callables under these names (``dataset = [...]``) are ordinary variables, not hooks: ignored.
    found = {
        hook: obj
        for hook in HOOK_NAMES
        if callable(obj := getattr(namespace, hook, None)) and not isinstance(obj, types.ModuleType)
    }
    return ModelFileHooks(**found, source=source if found else None)


def _load_probe_hooks(probe_file: str) -> ModelFileHooks:
    if not probe_file.endswith(".py"):
        raise ModelLoadError(f"--probe {probe_file}: not a .py file; pass a .py file with example_inputs()")
    hooks = _hooks_from(import_file(probe_file), probe_file)
    if hooks.source is None:
        hooks_list = ", ".join(n + "()" for n in HOOK_NAMES)
        raise ModelLoadError(f"--probe {probe_file}: defines none of {hooks_list}")
    return hooks


def _merge_hooks(preferred: ModelFileHooks, fallback: ModelFileHooks) -> ModelFileHooks:
    merged = {hook: getattr(preferred, hook) or getattr(fallback, hook) for hook in HOOK_NAMES}
    sources = [s for s in (preferred.source, fallback.source) if s is not None]
    return ModelFileHooks(**merged, source=", ".join(dict.fromkeys(sources)) or None)
