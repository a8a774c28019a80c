"""The bad-input matrix (issue 6): every way a user can hand gradscope something broken, each answered with exit
code 2 and one specific line on stderr — no traceback, nothing on stdout.

One table, one parametrized test through Typer's ``CliRunner`` (torch is imported once). Each case writes its own
broken files into ``tmp_path``: model files, config files, checkpoints; a case whose model is fine scans
``tests/assets/tiny_relu_mlp.py``. A handful of behaviours depend on a real process (Ctrl-C, a full disk behind
stdout) and run as subprocesses below the table (marked ``slow``); the few cases that must *succeed* despite odd
input (prints at import, a 1,000-layer model, a 150-level tree) follow the table too.

test_cli.py covers the basic forms (missing file, --batches 0, a YAML os.system tag, ...); the table repeats a
few in other shapes so that it stands on its own as the checklist the issue asks for.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import (
    FAST,
    GRADSCOPE,
    asset,
    cli_env,
    copy_asset,
    invoke,
    net_source,
    start,
    state_copy,
    write_source,
)
from torch import nn

from gradscope.errors import ModelLoadError

# ------------------------------------------------------------------------------------------- model sources

TINY_FILE = asset("tiny_relu_mlp.py")  # a model that is fine: Linear(8, 8) → ReLU → Linear(8, 4)
TINY = str(TINY_FILE)
OK = TINY_FILE.read_text(encoding="utf-8")  # its source, for the cases that add to it

net = net_source


def with_hooks(hooks: str, body: str = "return self.l(x)") -> str:
    return net(body, extra="\n\n" + textwrap.dedent(hooks))


EVIL_MARKER = "pwned.txt"


def _ok_model() -> nn.Module:
    """The asset's model, built in this process (for checkpoints that must fit it, or not)."""
    model: nn.Module = runpy.run_path(TINY)["build_model"]()
    return model


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
        state = state_copy(_ok_model())
        del state[key]
        return state

    return make


def _with_extra(_tmp: Path) -> object:
    return state_copy(_ok_model()) | {"extra.weight": torch.zeros(2)}


def _reshaped(_tmp: Path) -> object:
    return state_copy(_ok_model()) | {"0.weight": torch.zeros(8, 9)}


def _prefixed(_tmp: Path) -> object:
    return {f"module.{k}": v for k, v in state_copy(_ok_model()).items()}


def _many_unexpected(_tmp: Path) -> object:
    return state_copy(_ok_model()) | {f"head{i}.weight": torch.zeros(1) for i in range(8)}


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
    command: str = "scan"
    fast: bool = True  # add FAST (two batches of eight); False where the probe must come from a baseline
    absent: tuple[str, ...] = ()  # none may be in the error line (an option the user did not type)


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
        ("forward failed in layer '2' (Linear)", "8x16 and 8x4"),
        {"m.py": "from torch import nn\n\nmodel = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(8, 4))\n"},
    ),
    Case(
        "input-dtype-unlike-the-parameters",
        (M, "--input-dtype", "float64"),
        (
            "forward failed in layer '0' (Linear)",
            "inputs are float64",
            "parameters are float32",
            "--input-dtype float32",
        ),
        {"m.py": "from torch import nn\n\nmodel = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))\n"},
    ),  # fmt: skip
    Case(
        "second-sequence-passed-as-none",
        (M,),
        ("forward failed in layer 'tgt_emb' (Embedding)", "passed None for forward()'s argument 2", "example_inputs()"),
        {
            "m.py": "from torch import nn\n\n\nclass Seq2Seq(nn.Module):\n    def __init__(self):\n"
            "        super().__init__()\n        self.src_emb = nn.Embedding(10, 4)\n"
            "        self.tgt_emb = nn.Embedding(10, 4)\n\n"
            "    def forward(self, src, tgt):\n        return self.src_emb(src) + self.tgt_emb(tgt)\n"
        },
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
        "example-inputs-tensors-in-an-object",
        (M,),
        (
            "probe batch 0 (example_inputs) contains no tensor gradscope can see",
            "found a SimpleNamespace",
            "namedtuple",
        ),
        {
            "m.py": with_hooks(
                "def example_inputs():\n    import types\n    return (types.SimpleNamespace(x=torch.zeros(4, 8)),)\n"
            )
        },
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
        ("loss_fn returned a tensor of shape (8, 4)",),
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
    Case("negative-batches", (TINY, "--batches", "-3"), ("batches", "-3", "at least 1"), {}),
    Case("seed-beyond-64-bits", (TINY, "--seed", str(2**70)), ("--seed", "64 bits"), {}),
    Case("zero-batch-size", (TINY, "--batch-size", "0"), ("--batch-size 0", "at least 1"), {}),
    Case("negative-input-shape", (TINY, "--input-shape", "8,-1"), ("--input-shape", "positive integers"), {}),
    Case("unknown-input-dtype", (TINY, "--input-dtype", "float8"), ("--input-dtype", "float8"), {}),
    Case(
        "probe-file-not-python",
        (TINY, "--probe", "{d}/probe.txt"),
        ("--probe", "not a .py file"),
        {"probe.txt": "x"},
    ),
    Case(
        "cuda-unavailable",
        (TINY, "--device", "cuda:0"),
        ("CUDA is not available", "--device cpu"),
        {},
        marks=(pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here"),),
    ),
    # -- config files ----------------------------------------------------------------------------------------
    Case(
        "config-unknown-section",
        (TINY, "--config", "{d}/c.yaml"),
        ("c.yaml", "unknown section 'probes'"),
        {"c.yaml": "probes:\n  batches: 2\n"},
    ),
    Case(
        "config-unknown-key-diagnose",
        (TINY, "--config", "{d}/c.yaml"),
        ("unknown key 'vanishing_eror'",),
        {"c.yaml": "diagnose:\n  vanishing_eror: 0.001\n"},
    ),
    Case(
        "config-zero-batches",
        (TINY, "--config", "{d}/c.yaml"),
        ("c.yaml", "probe.batches=0"),
        {"c.yaml": "probe:\n  batches: 0\n"},
    ),
    Case(
        "config-negative-batches",
        (TINY, "--config", "{d}/c.yaml"),
        ("probe.batches=-2",),
        {"c.yaml": "probe:\n  batches: -2\n"},
    ),
    Case(
        "config-string-for-int",
        (TINY, "--config", "{d}/c.yaml"),
        ("probe.batches must be int", "four"),
        {"c.yaml": "probe:\n  batches: four\n"},
    ),
    Case(
        "config-bool-for-int",
        (TINY, "--config", "{d}/c.yaml"),
        ("probe.batch_size must be int", "True"),
        {"c.yaml": "probe:\n  batch_size: yes\n"},
    ),
    Case(
        "config-top-level-list",
        (TINY, "--config", "{d}/c.yaml"),
        ("top level must be a mapping", "list"),
        {"c.yaml": "- probe\n- diagnose\n"},
    ),
    Case(
        "config-section-scalar",
        (TINY, "--config", "{d}/c.yaml"),
        ("section 'probe' must be a mapping",),
        {"c.yaml": "probe: 3\n"},
    ),
    Case(
        "config-invalid-yaml",
        (TINY, "--config", "{d}/c.yaml"),
        ("c.yaml", "invalid YAML at line 3"),
        {"c.yaml": "probe:\n  batches: [2\n  seed: 1\n"},
    ),
    Case(
        "config-thresholds-inconsistent",
        (TINY, "--config", "{d}/c.yaml"),
        ("vanishing_error <= vanishing_warning",),
        {"c.yaml": "diagnose:\n  vanishing_error: 0.5\n  vanishing_warning: 0.1\n"},
    ),
    Case(
        "config-kwargs-not-mapping",
        (TINY, "--config", "{d}/c.yaml"),
        ("model.kwargs must be Mapping",),
        {"c.yaml": "model:\n  kwargs: [1, 2]\n"},
    ),
    Case(
        "config-bad-device",
        (TINY, "--config", "{d}/c.yaml"),
        ("probe.device", "tpu"),
        {"c.yaml": "probe:\n  device: tpu\n"},
    ),
    Case(
        "config-yaml-python-apply",
        (TINY, "--config", "{d}/c.yaml"),
        ("c.yaml", "invalid YAML"),
        {"c.yaml": YAML_EVIL_APPLY},
        after=_no_marker,
    ),
    Case(
        "config-yaml-python-new",
        (TINY, "--config", "{d}/c.yaml"),
        ("c.yaml", "invalid YAML"),
        {"c.yaml": YAML_EVIL_NEW},
        after=_no_marker,
    ),
    Case(
        "config-yaml-python-name",
        (TINY, "--config", "{d}/c.yaml"),
        ("c.yaml", "invalid YAML"),
        {"c.yaml": "probe:\n  seed: !!python/name:os.getpid\n"},
    ),
    Case(
        "config-is-directory",
        (TINY, "--config", "{d}/conf"),
        ("conf", "cannot read config file"),
        {},
        setup=_mkdir("conf"),
    ),
    Case(
        "config-not-utf8",
        (TINY, "--config", "{d}/c.yaml"),
        ("c.yaml", "cannot read config file"),
        {},
        setup=_write_bytes("c.yaml", b"probe:\n  seed: \xff\xfe\n"),
    ),
    # -- checkpoints (--weights) -----------------------------------------------------------------------------
    Case("weights-missing", (TINY, "--weights", "{d}/nope.pt"), ("--weights", "nope.pt", "file not found"), {}),
    Case(
        "weights-empty-file",
        (TINY, "--weights", "{d}/ckpt.pt"),
        ("ckpt.pt", "empty file"),
        {},
        setup=_write_bytes("ckpt.pt", b""),
    ),
    Case(
        "weights-not-a-checkpoint",
        (TINY, "--weights", "{d}/ckpt.pt"),
        ("ckpt.pt", "not a PyTorch checkpoint"),
        {},
        setup=_write_bytes("ckpt.pt", b"just some text, not a zip or a pickle"),
    ),
    Case(
        "weights-is-directory",
        (TINY, "--weights", "{d}/ckpt"),
        ("ckpt", "is a directory"),
        {},
        setup=_mkdir("ckpt"),
    ),
    Case(
        "weights-pickle-with-code",
        (TINY, "--weights", "{d}/ckpt.pt"),
        ("ckpt.pt", "refused", "weights_only=True"),
        {},
        setup=ckpt(lambda d: {"0.weight": _Evil(d / EVIL_MARKER)}),
        after=_no_marker,
    ),
    Case(
        "weights-not-a-state-dict",
        (TINY, "--weights", "{d}/ckpt.pt"),
        ("not a state dict", "list"),
        {},
        setup=ckpt(lambda _d: [torch.zeros(2)]),
    ),
    Case(
        "weights-nested-unknown-key",
        (TINY, "--weights", "{d}/ckpt.pt"),
        ("not a state dict", "'weights'"),
        {},
        setup=ckpt(lambda _d: {"weights": state_copy(_ok_model()), "epoch": 3}),
    ),
    Case(
        "weights-missing-key",
        (TINY, "--weights", "{d}/ckpt.pt"),
        ("missing key(s) '2.bias'",),
        {},
        setup=ckpt(_without("2.bias")),
    ),
    Case(
        "weights-unexpected-key",
        (TINY, "--weights", "{d}/ckpt.pt"),
        ("unexpected key(s) 'extra.weight'",),
        {},
        setup=ckpt(_with_extra),
    ),
    Case(
        "weights-many-unexpected-keys",
        (TINY, "--weights", "{d}/ckpt.pt"),
        ("'head4.weight' (and 3 more)",),
        {},
        setup=ckpt(_many_unexpected),
    ),
    Case(
        "weights-shape-mismatch",
        (TINY, "--weights", "{d}/ckpt.pt"),
        ("shape mismatch for '0.weight'", "checkpoint [8, 9], model [8, 8]"),
        {},
        setup=ckpt(_reshaped),
    ),
    Case(
        "weights-dataparallel-prefix",
        (TINY, "--weights", "{d}/ckpt.pt"),
        ("starts with 'module.'",),
        {},
        setup=ckpt(_prefixed),
    ),
    # -- output paths ----------------------------------------------------------------------------------------
    Case(
        "output-under-a-file",
        (TINY, "--format", "json", "--output", "{d}/afile/report.json"),
        ("cannot write", "report.json"),
        {"afile": "a file, not a directory\n"},
    ),
    Case(
        "output-is-a-directory",
        (TINY, "--format", "json", "--output", "{d}/out"),
        ("cannot write", "out"),
        {},
        setup=_mkdir("out"),
    ),
]


# -- cases added for hostile input (issue 11): resource bombs, odd models, blame, control characters --------------


def _nested_json(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _nested_yaml(depth: int) -> str:
    return "model:\n  kwargs:\n    a: " + "{a: " * depth + "1" + "}" * depth + "\n"


def _baseline(edit: Callable[[dict[str, Any]], None] | None = None) -> Callable[[Path], None]:
    """A real baseline of the tiny model at ``{d}/base.json`` (written by ``gradscope baseline``), then edited."""

    def setup(tmp: Path) -> None:
        done = invoke("baseline", TINY, "-o", tmp / "base.json", *FAST)
        assert done.code == 0, done.stderr
        if edit is not None:
            data = json.loads((tmp / "base.json").read_text(encoding="utf-8"))
            edit(data)
            (tmp / "base.json").write_text(json.dumps(data), encoding="utf-8")

    return setup


def _probe_value(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["probe"].update({key: value})


def _layer_value(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        if value is _DROP:
            del data["layers"][0][key]
        else:
            data["layers"][0][key] = value

    return edit


_DROP = object()
BASE = ("--baseline", "{d}/base.json")

HOSTILE_CASES: list[Case] = [
    # -- resource bombs: answered before any work, naming the value and where it came from -------------------
    Case(
        "config-yaml-alias",
        (TINY, "--config", "{d}/c.yaml"),
        ("c.yaml", "aliases (*n) are not allowed"),
        {"c.yaml": "probe:\n  batches: &n 2\n  seed: *n\n"},
    ),
    Case(
        "config-yaml-alias-bomb",
        (TINY, "--config", "{d}/c.yaml"),
        ("c.yaml", "aliases"),
        {"c.yaml": "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nprobe: *b\n"},
    ),
    Case(
        "config-nested-3000-deep",
        (TINY, "--config", "{d}/c.yaml"),
        ("c.yaml", "nested more than 64 levels deep"),
        {"c.yaml": _nested_yaml(3000)},
    ),
    Case(
        "config-kwargs-nested-70-deep",
        (TINY, "--config", "{d}/c.yaml"),
        ("c.yaml", "nested more than 64 levels deep"),
        {"c.yaml": _nested_yaml(70)},
    ),
    Case(
        "model-kwargs-nested-3000-deep",
        (TINY, "--model-kwargs", _nested_json(3000)),
        ("--model-kwargs", "nested more than 64 levels deep"),
        absent=("RecursionError",),
    ),
    Case(
        "model-kwargs-nested-70-deep",
        (TINY, "--model-kwargs", _nested_json(70)),
        ("--model-kwargs", "nested more than 64 levels deep"),
    ),
    Case(
        "model-kwargs-huge-invalid",
        (TINY, "--model-kwargs", "[" + "1," * 100_000 + "1]"),
        ("--model-kwargs must be a JSON object", "..."),
    ),
    Case(
        "config-huge-invalid-value",
        (TINY, "--config", "{d}/c.yaml"),
        ("c.yaml", "probe.batches must be int", "..."),
        {"c.yaml": "probe:\n  batches: [" + "0, " * 20_000 + "0]\n"},
    ),
    Case("batches-over-limit", (TINY, "--batches", "100000000"), ("--batches 100000000", "at most 1,000")),
    Case("batch-size-over-limit", (TINY, "--batch-size", "1000000000"), ("--batch-size 1000000000", "65,536")),
    Case(
        "config-batches-over-limit",
        (TINY, "--config", "{d}/c.yaml"),
        ("c.yaml", "probe.batches=5000", "at most 1,000"),
        {"c.yaml": "probe:\n  batches: 5000\n"},
    ),
    Case(
        "config-image-size-over-limit",
        (TINY, "--config", "{d}/c.yaml"),
        ("c.yaml", "probe.image_size=100000"),
        {"c.yaml": "probe:\n  image_size: 100000\n"},
    ),
    Case(
        "probe-memory-estimate-batch-size",
        (M, "--batch-size", "65536", "--batches", "4"),
        ("MiB", "limit", "--batch-size 65536", "--batches 4"),
        {"m.py": "from torch import nn\n\nmodel = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())\n"},
    ),
    Case(
        "probe-memory-estimate-config",
        (M, "--config", "{d}/c.yaml"),
        ("MiB", "probe.batch_size=65536 in", "c.yaml"),
        {
            "m.py": "from torch import nn\n\nmodel = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())\n",
            "c.yaml": "probe:\n  batch_size: 65536\n  batches: 4\n",
        },
        fast=False,
    ),
    Case(
        "probe-memory-estimate-input-shape",
        (TINY, "--input-shape", "100000000,8"),
        ("MiB", "limit", "--input-shape 100000000,8"),
    ),
    # -- a baseline's bad values are blamed on the baseline, never on an option the user did not type ----------
    Case(
        "baseline-batch-size-zero",
        (TINY, *BASE),
        ("base.json", "probe.batch_size=0"),
        setup=_baseline(_probe_value("batch_size", 0)),
        command="check",
        fast=False,
        absent=("--batch-size",),
    ),
    Case(
        "baseline-batches-huge",
        (TINY, *BASE),
        ("base.json", "100000000", "at most 1,000"),
        setup=_baseline(_probe_value("batches", 100_000_000)),
        command="check",
        fast=False,
        absent=("--batches",),
    ),
    Case(
        "baseline-seed-beyond-64-bits",
        (TINY, *BASE),
        ("base.json", "probe.seed", "64 bits"),
        setup=_baseline(_probe_value("seed", 2**70)),
        command="check",
        fast=False,
        absent=("--seed",),
    ),
    Case(
        "baseline-batch-size-over-memory",
        (M, *BASE),
        ("MiB", "probe.batch_size=65536 in baseline", "base.json"),
        {"m.py": "from torch import nn\n\nmodel = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())\n"},
        setup=_baseline(_probe_value("batch_size", 65_536)),
        command="check",
        fast=False,
        absent=("--batch-size",),
    ),
    Case(
        "baseline-layer-without-grad-rms",
        (TINY, *BASE),
        ("base.json", "layers[0] has no 'grad_rms'"),
        setup=_baseline(_layer_value("grad_rms", _DROP)),
        command="check",
    ),
    Case(
        "baseline-layer-negative-signal",
        (TINY, *BASE),
        ("base.json", "layers[0].signal_rms must be >= 0"),
        setup=_baseline(_layer_value("signal_rms", -1.0)),
        command="check",
    ),
    Case(
        "baseline-layer-negative-range",
        (TINY, *BASE),
        ("base.json", "grad_rms_range"),
        setup=_baseline(_layer_value("grad_rms_range", [-1.0, 1.0])),
        command="check",
    ),
    Case(
        "baseline-fraction-above-one",
        (TINY, *BASE),
        ("base.json", "dead_fraction must be in [0, 1]"),
        setup=_baseline(_layer_value("dead_fraction", 2.0)),
        command="check",
    ),
    Case(
        "baseline-nested-3000-deep",
        (TINY, *BASE),
        ("base.json", "nested"),
        {"base.json": _nested_json(3000)},
        command="check",
        absent=("RecursionError",),
    ),
    # -- models gradscope cannot hook or copy: one line, or a report --------------------------------------------
    Case(
        "torchscript-module",
        (M,),
        ("TorchScript", "before scripting"),
        {"m.py": "import torch\nfrom torch import nn\n\nmodel = torch.jit.script(nn.Sequential(nn.Linear(8, 4)))\n"},
    ),
    Case(
        "torchscript-submodule",
        (M,),
        ("submodule 'body'", "TorchScript"),
        {
            "m.py": net("return self.body(x)", layer="nn.Linear(8, 4)").replace(
                "self.l = nn.Linear(8, 4)", "self.body = torch.jit.script(nn.Linear(8, 4))"
            )
        },
    ),  # fmt: skip
    Case(
        "lazy-linear",
        (M, "--input-shape", "4,8"),
        ("uninitialised lazy parameters", "LazyLinear"),
        {"m.py": "from torch import nn\n\nmodel = nn.Sequential(nn.LazyLinear(4))\n"},
    ),
    # -- messages name the real source and keep the reason ----------------------------------------------------
    Case(
        "config-kwargs-not-taken",
        (M, "--config", "{d}/c.yaml"),
        ("does not take argument(s) depth", "model.kwargs in", "c.yaml"),
        {
            "m.py": "from torch import nn\n\n\ndef build_model(width=8):\n    return nn.Linear(8, width)\n",
            "c.yaml": "model:\n  kwargs:\n    depth: 3\n",
        },
        absent=("given in --model-kwargs",),
    ),  # fmt: skip
    Case(
        "weights-refused-by-load-hook",
        (M, "--weights", "{d}/ckpt.pt"),
        ("ckpt.pt", "cannot load into the model", "ValueError: incompatible tokenizer"),
        {
            "m.py": OK + "\n\n_build = build_model\n\n\ndef _refuse(*args):\n"
            "    raise ValueError('incompatible tokenizer')\n\n\ndef build_model():\n    model = _build()\n"
            "    model.register_load_state_dict_pre_hook(_refuse)\n    return model\n"
        },
        setup=ckpt(lambda _d: state_copy(_ok_model())),
    ),
    Case(
        "weights-reason-on-second-line",
        (M, "--weights", "{d}/ckpt.pt"),
        ("ckpt.pt", "format v1 is not supported"),
        {
            "m.py": "import torch\nfrom torch import nn\n\n\nclass V(nn.Linear):\n"
            "    def _load_from_state_dict(self, sd, prefix, meta, strict, missing, unexpected, errors):\n"
            "        errors.append('format v1 is not supported')\n\n\n"
            "def build_model():\n    return nn.Sequential(V(8, 8), nn.ReLU(), nn.Linear(8, 4))\n"
        },
        setup=ckpt(lambda _d: state_copy(_ok_model())),
    ),
    Case(
        "layer-name-with-newline-in-error",
        (M,),
        ("forward failed in layer 'a\\n:\u200b:error:\u200b:x' (Linear)",),  # one line, no workflow command
        {
            "m.py": "from torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
            "        super().__init__()\n        self.add_module('a\\n::error::x', nn.Linear(9, 4))\n\n"
            "    def forward(self, x):\n        return getattr(self, 'a\\n::error::x')(x[:, :8])\n\n\n"
            "def example_inputs():\n    import torch\n    return torch.zeros(4, 8)\n"
        },
    ),
    Case(
        "forward-warns-then-fails",
        (M,),
        ("forward failed", "tokenizer not set"),
        {"m.py": net("import warnings\nwarnings.warn('old API')\nraise ValueError('tokenizer not set')")},
    ),
    # -- other commands check their output paths before any work ----------------------------------------------
    Case(
        "check-junit-missing-dir",
        (TINY, "--junit", "{d}/missing/junit.xml"),
        ("--junit", "does not exist"),
        command="check",
    ),
    Case(
        "baseline-output-is-directory",
        (TINY, "-o", "{d}/out"),
        ("--output", "is a directory"),
        setup=_mkdir("out"),
        command="baseline",
    ),
]
CASES += HOSTILE_CASES


def _fill(text: str, directory: Path) -> str:
    return text.replace("{d}", str(directory))


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    for name, source in case.files.items():
        (tmp_path / name).write_text(textwrap.dedent(_fill(source, tmp_path)).lstrip(), encoding="utf-8")
    if case.setup is not None:
        case.setup(tmp_path)
    args = [_fill(a, tmp_path) for a in case.args]
    result = invoke(case.command, args[0], *(FAST if case.fast else ()), *args[1:])
    assert result.code == 2, (result.code, result.stdout, result.stderr)
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
    for needle in case.absent:
        assert needle not in line, f"{needle!r} in {line!r}"
    assert len(line) < 600 and "\x1b" not in line, line
    if case.after is not None:
        case.after(tmp_path)


def test_the_matrix_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


# ------------------------------------------------------------------------------- odd input that must succeed


def test_prints_in_the_model_file_keep_json_stdout_clean(tmp_path: Path) -> None:
    # Module-level prints and prints in forward() go to stderr: stdout stays one JSON document.
    path = write_source(tmp_path, "m.py", net("print('forward!')\nreturn self.l(x)", extra="\nprint('importing')\n"))
    result = invoke("scan", path, *FAST, "--format", "json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["schema"] == "gradscope.report/1"
    assert "importing" in result.stderr and "forward!" in result.stderr


def test_a_thousand_layer_model_scans_without_recursion_error() -> None:
    result = invoke("scan", asset("thousand_layers.py"), "--batches", "1", "--batch-size", "4", "--format", "json")
    assert result.code in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert len(report["layers"]) == 1000
    assert report["layers"][-1]["name"] == "999"


def test_deeply_nested_model_scans() -> None:
    # Nesting, not only length: named_modules(), the recorder and the failure locator all walk the tree.
    result = invoke("scan", asset("deeply_nested.py"), "--batches", "1", "--batch-size", "4", "--format", "json")
    assert result.code in (0, 1), result.stderr
    assert len(json.loads(result.stdout)["layers"]) == 150


def test_weights_load_a_nested_state_dict_and_change_the_scan(tmp_path: Path) -> None:
    trained = _ok_model()
    with torch.no_grad():
        trained[2].weight.zero_()  # a saved state that blocks the gradient: the scan must see it
        trained[2].bias.zero_()
    torch.save({"epoch": 7, "state_dict": trained.state_dict()}, tmp_path / "ckpt.pt")
    base = invoke("scan", TINY, *FAST, "--format", "json")
    loaded = invoke("scan", TINY, *FAST, "--format", "json", "--weights", tmp_path / "ckpt.pt")
    assert base.code in (0, 1) and loaded.code in (0, 1), loaded.stderr
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


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_mid_scan_exits_130_and_writes_nothing(tmp_path: Path) -> None:
    copy_asset("slow_forward.py", tmp_path)  # it touches 'started' next to itself
    report = tmp_path / "report.json"
    args = ["slow_forward.py", "--batches", "50", "--batch-size", "4", "--format", "json", "--output", report]
    proc = start("scan", *args, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert proc.popen.poll() is None, proc.popen.communicate()
            assert time.monotonic() < deadline, "the scan never started"
            time.sleep(0.05)
        proc.popen.send_signal(signal.SIGINT)
        outcome = proc.result()
    finally:
        proc.stop()
    assert outcome.code == 130, (outcome.code, outcome.stderr)
    assert outcome.stdout == ""
    assert outcome.stderr.strip().splitlines()[-1] == "gradscope: interrupted"
    assert "Traceback" not in outcome.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slow_forward.py", "started"]  # no report, no temp file


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("where", ["stdout", "--output"])
def test_full_disk_is_one_line_and_exit_2(tmp_path: Path, where: str) -> None:
    args = [*GRADSCOPE, "scan", TINY, *FAST, "--format", "json"]
    with open("/dev/full", "w") as full:
        if where == "stdout":
            done = subprocess.run(
                args,
                cwd=tmp_path,
                env=cli_env(),
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
                env=cli_env(),
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


# ------------------------------------------------------------ hostile input through the library (issue 11)


def _batches(n: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(4, 8, generator=g) for _ in range(n)]


class _Stateful(nn.Module):
    """Forward keeps a call counter, builds a cache attribute, swaps its activation and its weight's storage."""

    def __init__(self) -> None:
        super().__init__()
        self.l, self.act = nn.Linear(8, 4), nn.Tanh()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.cache = x.mean()
        self.act = nn.ReLU()
        self.l.weight.data = self.l.weight.data * 2  # a new storage behind the same Parameter
        return self.act(self.l(x))


def test_scan_restores_attributes_modules_and_storages() -> None:
    from gradscope import scan

    model = _Stateful()
    weight, act, storage = model.l.weight, model.act, model.l.weight.data_ptr()
    value = weight.detach().clone()
    scan(model, _batches())
    assert model.calls == 0 and not hasattr(model, "cache")
    assert model.act is act and isinstance(model.act, nn.Tanh)
    assert model.l.weight is weight and weight.data_ptr() == storage and torch.equal(weight.detach(), value)


def test_scan_turns_autograd_on_and_leaves_the_callers_mode() -> None:
    from gradscope import scan

    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4))
    expected = scan(model, _batches()).to_dict()
    with torch.set_grad_enabled(False):
        got = scan(model, _batches()).to_dict()
        assert not torch.is_grad_enabled()
    assert {k: v for k, v in got.items() if k != "timing"} == {k: v for k, v in expected.items() if k != "timing"}


def test_torchscript_and_lazy_models_are_probe_errors() -> None:
    from gradscope import scan
    from gradscope.errors import ProbeError

    scripted = torch.jit.script(nn.Sequential(nn.Linear(8, 4)))
    with pytest.raises(ProbeError, match="TorchScript"):
        scan(scripted, _batches())
    with pytest.raises(ProbeError, match="uninitialised lazy parameters"):
        scan(nn.Sequential(nn.LazyLinear(4)), _batches())


def test_yaml_aliases_and_deep_nesting_are_config_errors(tmp_path: Path) -> None:
    from gradscope.config import load_config
    from gradscope.errors import ConfigError

    (tmp_path / "a.yaml").write_text("probe:\n  batches: &n 2\n  seed: *n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"aliases \(\*n\)"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="model.kwargs is nested more than 64 levels"):
        nested: dict[str, Any] = {}
        for _ in range(70):
            nested = {"a": nested}
        from gradscope.config import Config, merge

        merge(Config(), {"model": {"kwargs": nested}}, source="test")


def test_copy_model_copies_what_deepcopy_refuses() -> None:
    import threading

    from torch.nn.utils import prune

    from gradscope.torchutil import copy_model

    model = nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 4))
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    model.lock = threading.Lock()  # type: ignore[assignment]
    model(torch.randn(2, 8))
    copy = copy_model(model)
    assert copy is not model and copy[0].weight_orig is not model[0].weight_orig
    assert torch.equal(copy(torch.ones(2, 8)), model(torch.ones(2, 8)))


def test_renderers_show_cleaned_names_and_json_keeps_them(make_report: Any) -> None:
    from helpers import finding, flat_layer, render_text

    from gradscope.report import render_json, render_markdown, render_terminal
    from gradscope.report.html import render_html
    from gradscope.vocab import Severity

    name = "a\n::error title=x::pwned\x1b[2J\u202e##[warning]y"
    report = make_report(
        [flat_layer(0, name, 1e-9, 1e-9), flat_layer(1, "b", 1e-2, 1e-2)],
        findings=[finding("vanishing_gradient", Severity.ERROR, name)],
        target="::set-output name=x::y",
    )
    outputs = {
        "terminal": render_text(lambda console: render_terminal(report, console), width=60),
        "markdown": render_markdown(report),
        "html": render_html(report),
    }
    for kind, text in outputs.items():
        assert "\x1b" not in text and "\u202e" not in text, kind
        for line in text.splitlines():
            assert not line.lstrip().startswith(("::", "##[")), (kind, line)
    assert json.loads(render_json(report))["layers"][0]["name"] == name  # the data stays exact
    assert report.layers[0].name == name


# ---------------------------------------------------------- hostile input through real processes (issue 11)

NOISY = """
import os, sys, warnings
import torch
from torch import nn

os.system("echo noise-from-os-system")
os.write(1, b"noise-from-fd-1\\n")
print("noise-to-dunder-stdout", file=sys.__stdout__, flush=True)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(8, 4)

    def forward(self, x):
        os.write(1, b"noise-in-forward\\n")
        warnings.warn("a deprecated call in forward")
        return self.l(x)


def dataset():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 8, generator=g), torch.randint(0, 4, (64,), generator=g)
"""


@pytest.mark.slow
@pytest.mark.parametrize("command", ["scan", "trial", "check"])
def test_fd1_writes_never_reach_stdout(tmp_path: Path, command: str) -> None:
    model = write_source(tmp_path, "noisy.py", NOISY)
    extra = {"scan": ("--format", "json"), "trial": ("--steps", "3", "--remedy", "none", "--format", "json")}
    args = [command, model, *(FAST if command != "trial" else ()), *extra.get(command, ())]
    done = subprocess.run(
        [*GRADSCOPE, *map(str, args)], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=180
    )
    assert done.returncode in (0, 1), done.stderr
    assert "noise" not in done.stdout, done.stdout[:500]
    assert "noise-in-forward" in done.stderr and "noise-from-os-system" in done.stderr
    assert "a deprecated call in forward" in done.stderr  # held back while the model ran, shown after
    if command != "check":
        json.loads(done.stdout)


@pytest.mark.slow
def test_relative_probe_file_survives_a_chdir_at_import(tmp_path: Path) -> None:
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    write_source(work, "m.py", f"import os\n{OK}\nos.chdir({str(elsewhere)!r})\n")
    write_source(work, "probe.py", "import torch\n\n\ndef example_inputs():\n    return torch.ones(3, 8)\n")
    done = subprocess.run(
        [*GRADSCOPE, "scan", "m.py", "--probe", "probe.py", "--format", "json", "-o", "out.json"],
        cwd=work,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    assert json.loads((work / "out.json").read_text(encoding="utf-8"))["probe"]["batch_size"] == 3
    assert not (elsewhere / "out.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["table", "markdown", "html"])
def test_injected_layer_names_in_every_stdout_format(tmp_path: Path, fmt: str) -> None:
    hostile = Path(__file__).parent / "assets" / "hostile" / "injection.py"
    done = subprocess.run(
        [*GRADSCOPE, "scan", str(hostile), *FAST, "--format", fmt],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    assert "\x1b" not in done.stdout
    for line in done.stdout.splitlines():
        assert not line.lstrip().startswith(("::", "##[")), line


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [("check", "--help"), ("diff", "--help"), ("--version",)])
def test_help_on_a_full_disk_is_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*GRADSCOPE, *args], cwd=tmp_path, env=cli_env(), stdout=full, stderr=subprocess.PIPE, text=True, timeout=60
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == ["error: " + done.stderr.strip().removeprefix("error: ")]
    assert "No space left on device" in done.stderr and "Traceback" not in done.stderr
