"""The bad-input matrix (issue 6): every way a user can hand gradscope something broken, each answered with exit
code 2 and one specific line on stderr — no traceback, nothing on stdout.

One table, one parametrized test through Typer's ``CliRunner`` (torch is imported once). Each case writes its own
files into ``tmp_path``: model files, config files, checkpoints. A handful of behaviours depend on a real process
(Ctrl-C, a full disk behind stdout) and run as subprocesses below the table; the few cases that must *succeed*
despite odd input (prints at import, a 1,000-layer model) follow the table too.

test_cli.py covers the basic forms (missing file, --batches 0, a YAML os.system tag, ...); the table repeats a
few in other shapes so that it stands on its own as the checklist the issue asks for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from gradscope.cli import app
from gradscope.errors import ModelLoadError

torch.set_num_threads(1)

FAST = ("--batches", "2", "--batch-size", "4")
runner = CliRunner()

# ------------------------------------------------------------------------------------------- model sources

OK = textwrap.dedent("""
    import torch
    from torch import nn


    def build_model():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
""").lstrip()


def net(body: str, *, extra: str = "", layer: str = "nn.Linear(8, 4)") -> str:
    """A one-layer model file whose forward() is ``body``; ``extra`` is appended at module level."""
    forward = textwrap.indent(textwrap.dedent(body).strip(), " " * 8)
    return (
        "import torch\nfrom torch import nn\n\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        f"        self.l = {layer}\n\n"
        "    def forward(self, x):\n"
        f"{forward}\n" + textwrap.dedent(extra)
    )


def with_hooks(hooks: str, body: str = "return self.l(x)") -> str:
    return net(body, extra="\n\n" + textwrap.dedent(hooks))


EVIL_MARKER = "pwned.txt"


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _ok_model() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))


class _Evil:
    """Unpickling this runs ``touch pwned.txt`` — what weights_only=True must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def ckpt(make: Callable[[Path], object]) -> Callable[[Path], None]:
    """A setup step that saves ``make(tmp)`` with torch.save to ``tmp/ckpt.pt``."""

    def setup(tmp: Path) -> None:
        torch.save(make(tmp), tmp / "ckpt.pt")

    return setup


def _without(key: str) -> Callable[[Path], object]:
    def make(_tmp: Path) -> object:
        state = _state(_ok_model())
        del state[key]
        return state

    return make


def _with_extra(_tmp: Path) -> object:
    return _state(_ok_model()) | {"extra.weight": torch.zeros(2)}


def _reshaped(_tmp: Path) -> object:
    return _state(_ok_model()) | {"0.weight": torch.zeros(8, 9)}


def _prefixed(_tmp: Path) -> object:
    return {f"module.{k}": v for k, v in _state(_ok_model()).items()}


def _many_unexpected(_tmp: Path) -> object:
    return _state(_ok_model()) | {f"head{i}.weight": torch.zeros(1) for i in range(8)}


def _write_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / name).write_bytes(data)

    return setup


def _mkdir(name: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / name).mkdir()

    return setup


def _no_marker(tmp: Path) -> None:
    assert not (tmp / EVIL_MARKER).exists(), "the payload ran"


# --------------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # "{d}" is the case's directory; the model target comes first
    needles: tuple[str, ...]  # every one must be in the error line
    files: dict[str, str] = field(default_factory=dict)  # name -> source (dedented)
    setup: Callable[[Path], None] | None = None
    after: Callable[[Path], None] | None = None
    one_line: bool = True  # False where the user's own code printed to stderr first (argparse's usage)
    marks: tuple[pytest.MarkDecorator, ...] = ()


M = "{d}/m.py"
YAML_EVIL_APPLY = f'probe: !!python/object/apply:os.system ["touch {{d}}/{EVIL_MARKER}"]\n'
YAML_EVIL_NEW = f'!!python/object/new:subprocess.Popen [["touch", "{{d}}/{EVIL_MARKER}"]]\n'

CASES: list[Case] = [
    # -- model files: importing ------------------------------------------------------------------------------
    Case("empty-file", (M,), ("m.py", "no nn.Module found"), {"m.py": ""}),
    Case("only-comments", (M,), ("m.py", "no nn.Module found"), {"m.py": "# a model will go here\n"}),
    Case("syntax-error", (M,), ("m.py", "syntax error at line 3"), {"m.py": "import torch\n\ndef f(:\n"}),
    Case(
        "import-missing-package",
        (M,),
        ("'gradscope_missing_dep'", "pip install gradscope_missing_dep"),
        {"m.py": "import torch\nimport gradscope_missing_dep.layers\n"},
    ),
    Case(
        "import-known-pip-name", (M,), ("'skimage'", "pip install scikit-image"), {"m.py": "import skimage.filters\n"}
    ),
    Case(
        "import-missing-name",
        (M,),
        ("m.py", "no_such_layer_xyz", "'torch'"),
        {"m.py": "from torch.nn import no_such_layer_xyz\n"},
    ),
    Case(
        "module-level-argparse",
        (M,),
        ("m.py", "exited during import", "sys.exit(2)", "__main__"),
        {
            "m.py": OK + "\nimport argparse\np = argparse.ArgumentParser()\np.add_argument('--data', required=True)\n"
            "args = p.parse_args()\n"
        },
        one_line=False,
    ),
    Case(
        "module-level-sys-exit-message",
        (M,),
        ("m.py", "exited during import", "needs a GPU"),
        {"m.py": "raise SystemExit('this script needs a GPU')\n"},
    ),
    Case(
        "module-level-exception",
        (M,),
        ("m.py", "failed at import", "RuntimeError: dataset not downloaded"),
        {"m.py": "raise RuntimeError('dataset not downloaded')\n"},
    ),
    Case("module-level-input", (M,), ("m.py", "failed at import", "EOFError"), {"m.py": "name = input()\n"}),
    # -- model files: building -------------------------------------------------------------------------------
    Case(
        "factory-raises",
        (M,),
        ("m.py", "build_model() raised ValueError: depth must be even"),
        {"m.py": "def build_model():\n    raise ValueError('depth must be even')\n"},
    ),
    Case(
        "factory-parses-argv",
        (M,),
        ("m.py", "build_model() exited", "--model-kwargs"),
        {
            "m.py": "import argparse\n\n\ndef build_model():\n    p = argparse.ArgumentParser()\n"
            "    p.add_argument('--depth', type=int, required=True)\n    p.parse_args()\n"
        },
        one_line=False,
    ),
    Case(
        "factory-returns-dict",
        (M,),
        ("build_model() returned dict, not an nn.Module",),
        {"m.py": "def build_model():\n    return {'model': None}\n"},
    ),
    Case(
        "factory-returns-class",
        (M,),
        ("build_model() returned type",),
        {"m.py": "from torch import nn\n\n\ndef build_model():\n    return nn.Linear\n"},
    ),
    Case(
        "named-attribute-missing",
        ("{d}/m.py:Nope",),
        ("no attribute 'Nope'", "Net (class)"),
        {"m.py": net("return self.l(x)")},
    ),
    Case("named-non-callable", ("{d}/m.py:DEPTH",), ("DEPTH is a int",), {"m.py": "DEPTH = 3\n"}),
    Case(
        "model-kwargs-unknown",
        (M, "--model-kwargs", '{"depth": 3}'),
        ("does not take argument(s) depth",),
        {"m.py": net("return self.l(x)")},
    ),
    Case(
        "model-kwargs-to-instance",
        ("{d}/m.py:model", "--model-kwargs", '{"depth": 3}'),
        ("instance", "--model-kwargs cannot be applied"),
        {"m.py": "from torch import nn\n\nmodel = nn.Linear(8, 4)\n"},
    ),
    Case(
        "meta-device-parameters",
        (M,),
        ("meta device", "to_empty"),
        {
            "m.py": "import torch\nfrom torch import nn\n\n\ndef build_model():\n    with torch.device('meta'):\n"
            "        return nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))\n"
        },
    ),
    Case(
        "no-parameters",
        (M, "--input-shape", "4,8"),
        ("has no parameters",),
        {"m.py": "from torch import nn\n\nmodel = nn.Sequential(nn.ReLU())\n"},
    ),
    # -- model files: forward output -------------------------------------------------------------------------
    Case("output-none", (M,), ("returned None",), {"m.py": net("self.l(x)\nreturn None")}),
    Case("output-integer", (M,), ("integer tensor",), {"m.py": net("return self.l(x).argmax(-1)")}),
    Case("output-bool", (M,), ("boolean tensor",), {"m.py": net("return self.l(x) > 0")}),
    Case("output-string", (M,), ("returned str", "holds no tensor"), {"m.py": net("self.l(x)\nreturn 'done'")}),
    Case(
        "output-complex",
        (M,),
        ("complex tensor", "loss_fn"),
        {"m.py": net("return torch.complex(self.l(x), self.l(x))")},
    ),
    Case(
        "output-detached",
        (M,),
        ("does not depend on any trainable parameter",),
        {"m.py": net("return self.l(x).detach()")},
    ),
    Case(
        "output-ignores-parameters",
        (M,),
        ("does not depend on any trainable parameter",),
        {"m.py": net("return x[:, :4] * 2")},
    ),
    Case(
        "output-under-no-grad",
        (M,),
        ("does not depend on any trainable parameter", "no_grad"),
        {"m.py": net("with torch.no_grad():\n    return self.l(x)")},
    ),
    Case(
        "forward-raises",
        (M,),
        ("forward failed", "probe batch 0", "tokenizer not set"),
        {"m.py": net("raise ValueError('tokenizer not set')")},
    ),
    # -- dtype and shape mismatches name the layer -----------------------------------------------------------
    Case(
        "dtype-mismatch-names-layer",
        (M,),
        ("forward failed in layer 'body.1' (Linear)", "dtype"),
        {
            "m.py": "from torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.body = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4).double())\n\n"
            "    def forward(self, x):\n        return self.body(x)\n"
        },
    ),
    Case(
        "shape-mismatch-names-layer",
        (M,),
        ("forward failed in layer '2' (Linear)", "4x16 and 8x4"),
        {"m.py": "from torch import nn\n\nmodel = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(8, 4))\n"},
    ),
    Case(
        "input-dtype-for-embedding",
        (M, "--input-dtype", "float32"),
        ("token ids", "--input-dtype int64"),
        {"m.py": "from torch import nn\n\nmodel = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))\n"},
    ),
    # -- probe hooks and inputs ------------------------------------------------------------------------------
    Case(
        "nan-inputs",
        (M,),
        ("probe batch 0 (example_inputs)", "NaN"),
        {"m.py": with_hooks("def example_inputs():\n    return torch.full((4, 8), float('nan'))\n")},
    ),
    Case(
        "inf-inputs",
        (M,),
        ("Inf values",),
        {
            "m.py": with_hooks(
                "def example_inputs():\n    x = torch.zeros(4, 8)\n    x[1, 2] = float('-inf')\n    return x\n"
            )
        },
    ),
    Case(
        "nan-in-second-probe-batch",
        (M,),
        ("probe batch 1 (probe_batches)", "NaN"),
        {
            "m.py": with_hooks(
                "def probe_batches(n, seed):\n    yield torch.zeros(4, 8)\n    yield torch.full((4, 8), float('nan'))\n"
            )
        },
    ),
    Case(
        "example-inputs-wrong-type",
        (M,),
        ("probe batch 0 (example_inputs) is a str",),
        {"m.py": with_hooks("def example_inputs():\n    return 'x.png'\n")},
    ),
    Case(
        "example-inputs-raises",
        (M,),
        ("example_inputs() raised FileNotFoundError", "x.npy"),
        {"m.py": with_hooks("def example_inputs():\n    raise FileNotFoundError('x.npy')\n")},
    ),
    Case(
        "probe-batches-too-few",
        (M,),
        ("yielded 1 batch(es), expected 2",),
        {"m.py": with_hooks("def probe_batches(n, seed):\n    return [torch.zeros(4, 8)]\n")},
    ),
    # -- the loss --------------------------------------------------------------------------------------------
    Case(
        "infinite-loss",
        (M,),
        ("loss is not finite", "loss_fn"),
        {"m.py": with_hooks("def loss_fn(output, batch):\n    return output.sum() / 0.0\n")},
    ),
    Case(
        "loss-not-scalar",
        (M,),
        ("loss_fn returned a tensor of shape (4, 4)",),
        {"m.py": with_hooks("def loss_fn(output, batch):\n    return output\n")},
    ),
    Case(
        "loss-is-a-float",
        (M,),
        ("loss_fn returned float",),
        {"m.py": with_hooks("def loss_fn(output, batch):\n    return 1.0\n")},
    ),
    Case(
        "loss-raises",
        (M,),
        ("loss_fn failed on probe batch 0", "AttributeError", "labels"),
        {"m.py": with_hooks("def loss_fn(output, batch):\n    return batch.labels\n")},
    ),
    # -- targets and options ---------------------------------------------------------------------------------
    Case("target-is-directory", ("{d}/pkg",), ("pkg", "directory"), setup=_mkdir("pkg")),
    Case("target-not-python", ("{d}/model.txt",), ("model.txt", "not a .py file"), {"model.txt": "x"}),
    Case("package-module-missing", ("gradscope_no_pkg.models:Net",), ("cannot import module 'gradscope_no_pkg'",)),
    Case("negative-batches", (M, "--batches", "-3"), ("batches", "-3", "at least 1"), {"m.py": OK}),
    Case("seed-beyond-64-bits", (M, "--seed", str(2**70)), ("--seed", "64 bits"), {"m.py": OK}),
    Case("zero-batch-size", (M, "--batch-size", "0"), ("--batch-size 0", "at least 1"), {"m.py": OK}),
    Case("negative-input-shape", (M, "--input-shape", "8,-1"), ("--input-shape", "positive integers"), {"m.py": OK}),
    Case("unknown-input-dtype", (M, "--input-dtype", "float8"), ("--input-dtype", "float8"), {"m.py": OK}),
    Case(
        "probe-file-not-python",
        (M, "--probe", "{d}/probe.txt"),
        ("--probe", "not a .py file"),
        {"m.py": OK, "probe.txt": "x"},
    ),
    Case(
        "cuda-unavailable",
        (M, "--device", "cuda:0"),
        ("CUDA is not available", "--device cpu"),
        {"m.py": OK},
        marks=(pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here"),),
    ),
    # -- config files ----------------------------------------------------------------------------------------
    Case(
        "config-unknown-section",
        (M, "--config", "{d}/c.yaml"),
        ("c.yaml", "unknown section 'probes'"),
        {"m.py": OK, "c.yaml": "probes:\n  batches: 2\n"},
    ),
    Case(
        "config-unknown-key-diagnose",
        (M, "--config", "{d}/c.yaml"),
        ("unknown key 'vanishing_eror'",),
        {"m.py": OK, "c.yaml": "diagnose:\n  vanishing_eror: 0.001\n"},
    ),
    Case(
        "config-zero-batches",
        (M, "--config", "{d}/c.yaml"),
        ("c.yaml", "probe.batches=0"),
        {"m.py": OK, "c.yaml": "probe:\n  batches: 0\n"},
    ),
    Case(
        "config-negative-batches",
        (M, "--config", "{d}/c.yaml"),
        ("probe.batches=-2",),
        {"m.py": OK, "c.yaml": "probe:\n  batches: -2\n"},
    ),
    Case(
        "config-string-for-int",
        (M, "--config", "{d}/c.yaml"),
        ("probe.batches must be int", "four"),
        {"m.py": OK, "c.yaml": "probe:\n  batches: four\n"},
    ),
    Case(
        "config-bool-for-int",
        (M, "--config", "{d}/c.yaml"),
        ("probe.batch_size must be int", "True"),
        {"m.py": OK, "c.yaml": "probe:\n  batch_size: yes\n"},
    ),
    Case(
        "config-top-level-list",
        (M, "--config", "{d}/c.yaml"),
        ("top level must be a mapping", "list"),
        {"m.py": OK, "c.yaml": "- probe\n- diagnose\n"},
    ),
    Case(
        "config-section-scalar",
        (M, "--config", "{d}/c.yaml"),
        ("section 'probe' must be a mapping",),
        {"m.py": OK, "c.yaml": "probe: 3\n"},
    ),
    Case(
        "config-invalid-yaml",
        (M, "--config", "{d}/c.yaml"),
        ("c.yaml", "invalid YAML at line 3"),
        {"m.py": OK, "c.yaml": "probe:\n  batches: [2\n  seed: 1\n"},
    ),
    Case(
        "config-thresholds-inconsistent",
        (M, "--config", "{d}/c.yaml"),
        ("vanishing_error <= vanishing_warning",),
        {"m.py": OK, "c.yaml": "diagnose:\n  vanishing_error: 0.5\n  vanishing_warning: 0.1\n"},
    ),
    Case(
        "config-kwargs-not-mapping",
        (M, "--config", "{d}/c.yaml"),
        ("model.kwargs must be Mapping",),
        {"m.py": OK, "c.yaml": "model:\n  kwargs: [1, 2]\n"},
    ),
    Case(
        "config-bad-device",
        (M, "--config", "{d}/c.yaml"),
        ("probe.device", "tpu"),
        {"m.py": OK, "c.yaml": "probe:\n  device: tpu\n"},
    ),
    Case(
        "config-yaml-python-apply",
        (M, "--config", "{d}/c.yaml"),
        ("c.yaml", "invalid YAML"),
        {"m.py": OK, "c.yaml": YAML_EVIL_APPLY},
        after=_no_marker,
    ),
    Case(
        "config-yaml-python-new",
        (M, "--config", "{d}/c.yaml"),
        ("c.yaml", "invalid YAML"),
        {"m.py": OK, "c.yaml": YAML_EVIL_NEW},
        after=_no_marker,
    ),
    Case(
        "config-yaml-python-name",
        (M, "--config", "{d}/c.yaml"),
        ("c.yaml", "invalid YAML"),
        {"m.py": OK, "c.yaml": "probe:\n  seed: !!python/name:os.getpid\n"},
    ),
    Case(
        "config-is-directory",
        (M, "--config", "{d}/conf"),
        ("conf", "cannot read config file"),
        {"m.py": OK},
        setup=_mkdir("conf"),
    ),
    Case(
        "config-not-utf8",
        (M, "--config", "{d}/c.yaml"),
        ("c.yaml", "cannot read config file"),
        {"m.py": OK},
        setup=_write_bytes("c.yaml", b"probe:\n  seed: \xff\xfe\n"),
    ),
    # -- checkpoints (--weights) -----------------------------------------------------------------------------
    Case("weights-missing", (M, "--weights", "{d}/nope.pt"), ("--weights", "nope.pt", "file not found"), {"m.py": OK}),
    Case(
        "weights-empty-file",
        (M, "--weights", "{d}/ckpt.pt"),
        ("ckpt.pt", "empty file"),
        {"m.py": OK},
        setup=_write_bytes("ckpt.pt", b""),
    ),
    Case(
        "weights-not-a-checkpoint",
        (M, "--weights", "{d}/ckpt.pt"),
        ("ckpt.pt", "not a PyTorch checkpoint"),
        {"m.py": OK},
        setup=_write_bytes("ckpt.pt", b"just some text, not a zip or a pickle"),
    ),
    Case(
        "weights-is-directory",
        (M, "--weights", "{d}/ckpt"),
        ("ckpt", "is a directory"),
        {"m.py": OK},
        setup=_mkdir("ckpt"),
    ),
    Case(
        "weights-pickle-with-code",
        (M, "--weights", "{d}/ckpt.pt"),
        ("ckpt.pt", "refused", "weights_only=True"),
        {"m.py": OK},
        setup=ckpt(lambda d: {"0.weight": _Evil(d / EVIL_MARKER)}),
        after=_no_marker,
    ),
    Case(
        "weights-not-a-state-dict",
        (M, "--weights", "{d}/ckpt.pt"),
        ("not a state dict", "list"),
        {"m.py": OK},
        setup=ckpt(lambda _d: [torch.zeros(2)]),
    ),
    Case(
        "weights-nested-unknown-key",
        (M, "--weights", "{d}/ckpt.pt"),
        ("not a state dict", "'weights'"),
        {"m.py": OK},
        setup=ckpt(lambda _d: {"weights": _state(_ok_model()), "epoch": 3}),
    ),
    Case(
        "weights-missing-key",
        (M, "--weights", "{d}/ckpt.pt"),
        ("missing key(s) '2.bias'",),
        {"m.py": OK},
        setup=ckpt(_without("2.bias")),
    ),
    Case(
        "weights-unexpected-key",
        (M, "--weights", "{d}/ckpt.pt"),
        ("unexpected key(s) 'extra.weight'",),
        {"m.py": OK},
        setup=ckpt(_with_extra),
    ),
    Case(
        "weights-many-unexpected-keys",
        (M, "--weights", "{d}/ckpt.pt"),
        ("'head4.weight' (and 3 more)",),
        {"m.py": OK},
        setup=ckpt(_many_unexpected),
    ),
    Case(
        "weights-shape-mismatch",
        (M, "--weights", "{d}/ckpt.pt"),
        ("shape mismatch for '0.weight'", "checkpoint [8, 9], model [8, 8]"),
        {"m.py": OK},
        setup=ckpt(_reshaped),
    ),
    Case(
        "weights-dataparallel-prefix",
        (M, "--weights", "{d}/ckpt.pt"),
        ("starts with 'module.'",),
        {"m.py": OK},
        setup=ckpt(_prefixed),
    ),
    # -- output paths ----------------------------------------------------------------------------------------
    Case(
        "output-under-a-file",
        (M, "--format", "json", "--output", "{d}/m.py/report.json"),
        ("cannot write", "report.json"),
        {"m.py": OK},
    ),
    Case(
        "output-is-a-directory",
        (M, "--format", "json", "--output", "{d}/out"),
        ("cannot write", "out"),
        {"m.py": OK},
        setup=_mkdir("out"),
    ),
]


def _fill(text: str, directory: Path) -> str:
    return text.replace("{d}", str(directory))


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    for name, source in case.files.items():
        (tmp_path / name).write_text(textwrap.dedent(_fill(source, tmp_path)).lstrip(), encoding="utf-8")
    if case.setup is not None:
        case.setup(tmp_path)
    args = [_fill(a, tmp_path) for a in case.args]
    result = runner.invoke(app, ["scan", args[0], *FAST, *args[1:]], catch_exceptions=False)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    if case.one_line:
        assert len(lines) == 1, result.stderr
    line = lines[-1]
    assert line.startswith("error: "), line
    for needle in case.needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    if case.after is not None:
        case.after(tmp_path)


def test_the_matrix_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


# ------------------------------------------------------------------------------- odd input that must succeed


def _write(tmp: Path, name: str, source: str) -> Path:
    path = tmp / name
    path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    return path


def test_prints_in_the_model_file_keep_json_stdout_clean(tmp_path: Path) -> None:
    # Module-level prints and prints in forward() go to stderr: stdout stays one JSON document.
    path = _write(tmp_path, "m.py", net("print('forward!')\nreturn self.l(x)", extra="\nprint('importing')\n"))
    result = runner.invoke(app, ["scan", str(path), *FAST, "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["schema"] == "gradscope.report/1"
    assert "importing" in result.stderr and "forward!" in result.stderr


def test_a_thousand_layer_model_scans_without_recursion_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "deep.py",
        """
        import torch
        from torch import nn


        def build_model():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                layers = []
                for _ in range(500):
                    layers += [nn.Linear(4, 4), nn.Tanh()]
                return nn.Sequential(*layers)
    """,
    )
    result = runner.invoke(
        app, ["scan", str(path), "--batches", "1", "--batch-size", "4", "--format", "json"], catch_exceptions=False
    )
    assert result.exit_code in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert len(report["layers"]) == 1000
    assert report["layers"][-1]["name"] == "999"


def test_deeply_nested_model_scans(tmp_path: Path) -> None:
    # Nesting, not only length: named_modules(), the recorder and the failure locator all walk the tree.
    path = _write(
        tmp_path,
        "nested.py",
        """
        import torch
        from torch import nn


        class Block(nn.Module):
            def __init__(self, inner=None):
                super().__init__()
                self.l = nn.Linear(4, 4)
                self.inner = inner

            def forward(self, x):
                x = torch.tanh(self.l(x))
                return self.inner(x) if self.inner is not None else x


        def build_model():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                block = None
                for _ in range(150):
                    block = Block(block)
                return block
    """,
    )
    result = runner.invoke(
        app, ["scan", str(path), "--batches", "1", "--batch-size", "4", "--format", "json"], catch_exceptions=False
    )
    assert result.exit_code in (0, 1), result.stderr
    assert len(json.loads(result.stdout)["layers"]) == 150


def test_weights_load_a_nested_state_dict_and_change_the_scan(tmp_path: Path) -> None:
    path = _write(tmp_path, "m.py", OK)
    trained = _ok_model()
    with torch.no_grad():
        trained[2].weight.zero_()  # a saved state that blocks the gradient: the scan must see it
        trained[2].bias.zero_()
    torch.save({"epoch": 7, "state_dict": trained.state_dict()}, tmp_path / "ckpt.pt")
    base = runner.invoke(app, ["scan", str(path), *FAST, "--format", "json"], catch_exceptions=False)
    loaded = runner.invoke(
        app,
        ["scan", str(path), *FAST, "--format", "json", "--weights", str(tmp_path / "ckpt.pt")],
        catch_exceptions=False,
    )
    assert base.exit_code in (0, 1) and loaded.exit_code in (0, 1), loaded.stderr
    weights = {layer["name"]: layer["weight_rms"] for layer in json.loads(loaded.stdout)["layers"]}
    assert weights["2"] == 0.0
    assert {layer["name"]: layer["weight_rms"] for layer in json.loads(base.stdout)["layers"]}["2"] > 0


def test_weights_materialise_a_meta_model(tmp_path: Path) -> None:
    from gradscope.checkpoint import load_weights

    with torch.device("meta"):
        model = _ok_model()
    model[0].weight.requires_grad_(False)
    source = _ok_model()
    torch.save(source.state_dict(), tmp_path / "ckpt.pt")
    load_weights(model, tmp_path / "ckpt.pt")
    assert not any(p.is_meta for p in model.parameters())
    assert torch.equal(model[2].weight, source[2].weight)
    assert model[0].weight.requires_grad is False  # the module's flag is kept, not the checkpoint's


def test_load_weights_library_error_type(tmp_path: Path) -> None:
    from gradscope.checkpoint import load_weights

    torch.save({"0.weight": torch.zeros(3)}, tmp_path / "ckpt.pt")
    with pytest.raises(ModelLoadError, match=r"missing key\(s\) '0.bias', '2.weight', '2.bias'"):
        load_weights(_ok_model(), tmp_path / "ckpt.pt")


# ---------------------------------------------------------------------------------------- real processes


def _env() -> dict[str, str]:
    drop = {"NO_COLOR", "FORCE_COLOR", "COLUMNS"}
    return {k: v for k, v in os.environ.items() if k not in drop} | {"OMP_NUM_THREADS": "1"}


SLOW = """
    import pathlib
    import time

    import torch
    from torch import nn

    STARTED = pathlib.Path(__file__).with_name("started")


    class Slow(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(8, 4)

        def forward(self, x):
            STARTED.touch()
            time.sleep(0.5)
            return self.l(x)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_mid_scan_exits_130_and_writes_nothing(tmp_path: Path) -> None:
    _write(tmp_path, "slow.py", SLOW)
    report = tmp_path / "report.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradscope",
            "scan",
            "slow.py",
            "--batches",
            "50",
            "--batch-size",
            "4",
            "--format",
            "json",
            "--output",
            str(report),
        ],
        cwd=tmp_path,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the scan never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (proc.returncode, err)
    assert out == ""
    assert err.strip().splitlines()[-1] == "gradscope: interrupted"
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slow.py", "started"]  # no report, no temp file


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("where", ["stdout", "--output"])
def test_full_disk_is_one_line_and_exit_2(tmp_path: Path, where: str) -> None:
    _write(tmp_path, "m.py", OK)
    args = [sys.executable, "-m", "gradscope", "scan", "m.py", *FAST, "--format", "json"]
    with open("/dev/full", "w") as full:
        if where == "stdout":
            done = subprocess.run(
                args,
                cwd=tmp_path,
                env=_env(),
                stdin=subprocess.DEVNULL,
                stdout=full,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
            )
        else:
            done = subprocess.run(
                [*args, "--output", "/dev/full"],
                cwd=tmp_path,
                env=_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
            )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "No space left on device" in lines[0]
    assert ("stdout" if where == "stdout" else "/dev/full") in lines[0]


def test_ctrl_c_in_process_removes_hooks_and_restores_the_model() -> None:
    # The library side of Ctrl-C: KeyboardInterrupt propagates, and every hook and flag is put back first.
    from gradscope.scanner import scan

    calls = {"n": 0}

    class Interrupting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return self.b(torch.tanh(self.a(x)))

    model = Interrupting().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(KeyboardInterrupt):
        scan(model, [torch.randn(4, 8) for _ in range(3)])
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
