"""The import graph of src/gradscope: no cycle (function-level imports included), every module imports on its own,
no module reaches into another's underscore names, and the layers point down."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "gradscope"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(imported gradscope module, names taken from it) for every import statement, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names if alias.name.startswith("gradscope")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if not target.startswith("gradscope"):
                continue
            names = tuple(alias.name for alias in node.names)
            # `from . import fmt` imports a module, not a name
            submodules = [n for n in names if f"{target}.{n}" in MODULES]
            found += [(f"{target}.{n}", ()) for n in submodules]
            if len(submodules) < len(names):
                found.append((target, tuple(n for n in names if n not in submodules)))
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = {t for t, _ in _imports(name, path)} - {name}
        # A package's own __init__ always runs before its modules: an edge to an ancestor is no cycle.
        graph[name] = {t for t in targets if t in MODULES and not name.startswith(t + ".")}
    return graph


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_module_takes_another_modules_underscore_names() -> None:
    offences = [
        f"{name} takes {target}.{n}"
        for name, path in MODULES.items()
        for target, names in _imports(name, path)
        for n in names
        if n.startswith("_") and n != "__version__" and target != name
    ]
    assert not offences, offences


@pytest.mark.slow
def test_every_module_imports_on_its_own() -> None:
    """Each module in a fresh interpreter (a partial-initialisation cycle shows only there)."""
    optional = {"gradscope.integrations.hf": "transformers", "gradscope.integrations.lightning": "lightning"}
    code = "\n".join(
        f"import importlib, sys\ntry:\n    importlib.import_module({name!r})\nexcept ImportError as e:\n"
        f"    print({name!r}, e) if {optional.get(name)!r} not in str(e) else None\n"
        f"for m in [m for m in sys.modules if m.startswith('gradscope')]:\n    del sys.modules[m]"
        for name in MODULES
        if not name.endswith("__main__")
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


# Arrows point down: a module may import only from its own layer or the ones below.
LAYERS = [
    {
        "gradscope",
        "gradscope.__main__",
        "gradscope.cli",
        "gradscope.testing",
        "gradscope.pytest_plugin",
        "gradscope.integrations",
    },
    {"gradscope.pipeline"},
    {"gradscope.report", "gradscope.trial", "gradscope.watching", "gradscope.ci"},
    {"gradscope.scanner", "gradscope.gates", "gradscope.advice", "gradscope.remedies", "gradscope.diagnose"},
    {"gradscope.recorder", "gradscope.probes", "gradscope.loading", "gradscope.checkpoint"},
    {"gradscope.torchutil", "gradscope.config", "gradscope.results", "gradscope.records"},
    {"gradscope.vocab", "gradscope.util", "gradscope.errors", "gradscope._version", "gradscope.display"},
]


def _layer(module: str) -> int:
    for depth, group in enumerate(LAYERS):
        if module in group or any(module.startswith(g + ".") for g in group if g != "gradscope"):
            return depth
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: place it")


def test_arrows_point_down() -> None:
    upward = [
        f"{name} ({_layer(name)}) imports {target} ({_layer(target)})"
        for name, targets in _graph().items()
        for target in targets
        if _layer(target) < _layer(name) and not target.startswith(name.rpartition(".")[0] + ".")
    ]
    assert not upward, upward


def test_watch_is_the_function() -> None:
    import gradscope

    assert callable(gradscope.watch) and not isinstance(gradscope.watch, type(importlib))


@pytest.mark.slow
def test_every_benchmark_script_imports() -> None:
    """The benchmarks import the library's names directly, so a refactor that moves a name breaks them silently
    (benchmarks/remedies.py still imported IN_MEMORY from its old module). Each is loaded as a file, as it runs,
    without running its main."""
    root = Path(__file__).resolve().parents[1]
    scripts = sorted((root / "benchmarks").glob("*.py"))
    code = "\n".join(
        f"spec = importlib.util.spec_from_file_location('bench_{i}', {str(path)!r})\n"
        f"module = importlib.util.module_from_spec(spec)\nsys.modules[spec.name] = module\n"
        f"spec.loader.exec_module(module)"
        for i, path in enumerate(scripts)
    )
    out = subprocess.run(
        [sys.executable, "-c", "import importlib.util, sys\n" + code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert len(scripts) >= 7 and out.returncode == 0, out.stderr[-2000:]


def _load_benchmark(name: str) -> Any:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode", ["plain", "scan", "floor", "gradients"])
def test_overhead_modes_run_and_leave_the_model_as_it_was(mode: str) -> None:
    """Every timed mode of benchmarks/overhead.py (the scan, the plain baseline and both floors) runs on an MLP and
    on a convnet with BatchNorm, and leaves no gradient and no changed weight behind (running statistics do change:
    the plain run trains BatchNorm). A round that left ``.grad`` set would make the next one accumulate."""
    overhead = _load_benchmark("overhead")
    for case in (overhead.cases(True)["tanh60x64"], overhead.cases(True)["cnn"]):
        model, batches = overhead.setup(case, torch.device("cpu"))
        before = [p.detach().clone() for p in model.parameters()]
        overhead.TIMED[mode](model, batches[:2])
        assert all(p.grad is None for p in model.parameters())
        assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
