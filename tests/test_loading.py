"""Model targets: discovery, construction, hooks and a clean interpreter afterwards."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from helpers import write_source
from torch import nn

from gradscope.errors import ModelLoadError
from gradscope.loading import LoadedModel, ModelFileHooks, import_file, load

HEADER = "import torch\nfrom torch import nn\n"


def write(directory: Path, name: str, body: str, *, header: bool = True) -> str:
    """``body`` (dedented) after the torch imports, written to ``directory/name``; the path as a string."""
    return str(write_source(directory, name, (HEADER if header else "") + textwrap.dedent(body)))


def load_error(target: str, **kwargs: object) -> str:
    with pytest.raises(ModelLoadError) as info:
        load(target, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


# -- discovery -----------------------------------------------------------------------------------------------


def test_factory_wins_over_instance_and_class(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.py",
        """
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(3, 2)
        model = nn.Linear(5, 5)
        def build_model():
            return nn.Linear(4, 1)
    """,
    )
    loaded = load(path)
    assert isinstance(loaded, LoadedModel)
    assert loaded.name == "build_model"
    assert loaded.target == path
    assert isinstance(loaded.module, nn.Linear) and loaded.module.in_features == 4


@pytest.mark.parametrize("factory", ["create_model", "get_model"])
def test_other_factory_names(tmp_path: Path, factory: str) -> None:
    path = write(tmp_path, "m.py", f"def {factory}():\n    return nn.Linear(2, 2)\n")
    assert load(path).name == factory


def test_instance_named_model_before_class(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.py",
        """
        class Net(nn.Module):
            pass
        model = nn.Sequential(nn.Linear(3, 3))
    """,
    )
    loaded = load(path)
    assert loaded.name == "model"
    assert isinstance(loaded.module, nn.Sequential)


def test_single_class_defined_in_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.py",
        """
        from torch.nn import Linear  # imported classes are not candidates
        class Block(nn.Module):
            def __init__(self, dim):
                super().__init__()
                self.fc = nn.Linear(dim, dim)
        class DeepTanh(nn.Module):
            def __init__(self, depth=3):
                super().__init__()
                self.layers = nn.Sequential(*[Block(4) for _ in range(depth)])
    """,
    )
    loaded = load(path)
    assert loaded.name == "DeepTanh"
    assert len(list(loaded.module.get_submodule("layers").children())) == 3


def test_several_candidates_listed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.py",
        """
        class A(nn.Module):
            pass
        class B(nn.Module):
            pass
    """,
    )
    message = load_error(path)
    assert "A" in message and "B" in message
    assert f"{path}:A" in message


def test_no_candidate_lists_what_exists(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "net = nn.Linear(2, 2)\n")
    message = load_error(path)
    assert "net (Linear instance)" in message
    assert f"{path}:net" in message
    assert load(f"{path}:net").name == "net"


def test_nothing_at_all(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "x = 1\n")
    message = load_error(path)
    assert "no nn.Module" in message and f"{path}:NAME" in message


def test_constructor_needing_args(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.py",
        """
        class Deep(nn.Module):
            def __init__(self, depth, width=4):
                super().__init__()
                self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
    """,
    )
    message = load_error(path)
    assert "depth" in message and "width" not in message
    assert "--model-kwargs" in message and '"depth"' in message
    loaded = load(path, model_kwargs={"depth": 5})
    assert loaded.name == "Deep" and len(list(loaded.module.get_submodule("layers").children())) == 5


def test_unknown_kwarg(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "def build_model(depth=2):\n    return nn.Linear(depth, 1)\n")
    assert load(path, model_kwargs={"depth": 7}).module.in_features == 7
    assert "colour" in load_error(path, model_kwargs={"colour": 1})


def test_kwargs_to_instance_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "model = nn.Linear(2, 2)\n")
    assert "instance" in load_error(path, model_kwargs={"depth": 3})


def test_explicit_names(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.py",
        """
        class A(nn.Module):
            def __init__(self, n=2):
                super().__init__()
                self.fc = nn.Linear(n, n)
        class B(nn.Module):
            pass
        def make(n=3):
            return A(n)
        inst = B()
    """,
    )
    assert load(f"{path}:A").module.get_submodule("fc").in_features == 2
    assert load(f"{path}:make", model_kwargs={"n": 6}).module.get_submodule("fc").in_features == 6
    assert load(f"{path}:inst").name == "inst"
    message = load_error(f"{path}:Missing")
    assert "Missing" in message and "A (class)" in message


def test_named_non_module(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "VALUE = 3\n")
    assert "int" in load_error(f"{path}:VALUE")


def test_package_module_target() -> None:
    loaded = load("torch.nn:Linear", model_kwargs={"in_features": 3, "out_features": 2})
    assert isinstance(loaded.module, nn.Linear)
    assert loaded.module.out_features == 2
    assert loaded.name == "Linear"
    assert loaded.hooks == ModelFileHooks()
    assert "in_features" in load_error("torch.nn:Linear")


def test_package_module_missing() -> None:
    message = load_error("no_such_pkg_gradscope.models:Net")
    assert "no_such_pkg_gradscope" in message and "pip install" in message
    assert "Nope" in load_error("torch.nn:Nope")


def test_bad_target_forms(tmp_path: Path) -> None:
    assert "file not found" in load_error(str(tmp_path / "absent.py"))
    text = tmp_path / "model.txt"
    text.write_text("x")
    assert ".py" in load_error(str(text))
    assert "directory" in load_error(str(tmp_path) + "/")
    assert "empty" in load_error("  ")


# -- discovery ranks the top-level model first ---------------------------------------------------------------

NESTED = """
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        width: int = 4
        depth: int = 2

    class Norm(nn.Module):
        def __init__(self, ndim, bias):
            super().__init__()
            self.w = nn.Parameter(torch.ones(ndim))

    class Block(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.norm = Norm(cfg.width, True)
            self.fc = nn.Linear(cfg.width, cfg.width)

    class Net(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.cfg = cfg
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
"""


def test_discovery_picks_the_class_no_other_class_uses(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", NESTED)
    loaded = load(path, model_kwargs={"cfg": {"depth": 3}})
    assert loaded.name == "Net"  # Block could be built too, but Net uses it
    assert len(loaded.module.get_submodule("blocks")) == 3


def test_discovery_without_kwargs_names_the_top_level_class_and_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", NESTED)
    message = load_error(path)
    assert f"{path}:Net needs argument(s) cfg" in message
    assert """--model-kwargs '{"cfg": {}}'""" in message  # Cfg has a default for every field
    assert load(path, model_kwargs={"cfg": {}}).name == "Net"


def test_candidates_list_the_top_level_classes_first(tmp_path: Path) -> None:
    body = NESTED + "\n    class Other(nn.Module):\n        def __init__(self, size):\n            super().__init__()\n"
    message = load_error(write(tmp_path, "m.py", body))
    assert message.index("Net (class") < message.index("Norm (class")
    assert message.index("Other (class") < message.index("Block (class")
    assert f"pick one with {tmp_path}/m.py:Net" in message


def test_a_subclass_is_not_a_use(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "class A(nn.Module):\n    pass\nclass B(A):\n    pass\n")
    message = load_error(path)
    assert "several model classes" in message and "A" in message and "B" in message


def test_a_class_used_only_by_one_that_needs_arguments_is_no_leader(tmp_path: Path) -> None:
    """llama2.c's model.py: Transformer uses TransformerBlock (which needs layer_id too), which uses Attention.
    With --model-kwargs for Transformer, Attention can be built as well, but it is not top-level."""
    source = """
        class Attention(nn.Module):
            def __init__(self, dim):
                super().__init__()
                self.wq = nn.Linear(dim, dim)
        class TransformerBlock(nn.Module):
            def __init__(self, layer_id, dim):
                super().__init__()
                self.attention = Attention(dim)
        class Transformer(nn.Module):
            def __init__(self, dim):
                super().__init__()
                self.layers = nn.ModuleList([TransformerBlock(i, dim) for i in range(2)])
    """
    path = write(tmp_path, "m.py", source)
    loaded = load(path, model_kwargs={"dim": 4})
    assert type(loaded.module).__name__ == "Transformer"


def test_a_mixin_is_not_a_model(tmp_path: Path) -> None:
    """pytorch/examples SNLI: the parameter-free ``Bottle`` is mixed into ``Linear(Bottle, nn.Linear)``; with no
    arguments it is the only class that can be built, and it is not the model."""
    source = """
        class Bottle(nn.Module):
            def forward(self, x):
                return super().forward(x)
        class Linear(Bottle, nn.Linear):
            pass
        class Classifier(nn.Module):
            def __init__(self, width):
                super().__init__()
                self.out = Linear(width, 3)
    """
    path = write(tmp_path, "m.py", source)
    message = load_error(path)
    assert "Classifier needs argument(s) width" in message and "Bottle" not in message
    assert type(load(path, model_kwargs={"width": 4}).module).__name__ == "Classifier"


def test_the_hint_to_pick_a_class_says_what_it_needs(tmp_path: Path) -> None:
    source = """
        class Generator(nn.Module):
            def __init__(self, ngpu):
                super().__init__()
                self.fc = nn.Linear(2, 2)
        class Discriminator(nn.Module):
            def __init__(self, ngpu):
                super().__init__()
                self.fc = nn.Linear(2, 2)
    """
    message = load_error(write(tmp_path, "m.py", source))
    assert "pick one with" in message and """:Generator --model-kwargs '{"ngpu": """ in message


def test_a_base_with_its_own_constructor_is_no_mixin(tmp_path: Path) -> None:
    """Only a class without a constructor of its own is a mixin: ``TracedNet(Net, Hooks)`` leaves ``Net`` (it makes
    layers) a candidate, and ``Hooks`` none."""
    source = """
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(16, 2)
        class Hooks(nn.Module):
            def extra(self):
                return 1
        class TracedNet(Net, Hooks):
            def __init__(self, path):
                super().__init__()
    """
    assert type(load(write(tmp_path, "m.py", source)).module).__name__ == "Net"


def test_a_part_that_builds_is_not_taken_for_the_model_that_needs_arguments(tmp_path: Path) -> None:
    source = """
        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(16, 16)
        class Net(nn.Module):
            def __init__(self, depth):
                super().__init__()
                self.blocks = nn.Sequential(*[Block() for _ in range(depth)])
    """
    path = write(tmp_path, "m.py", source)
    assert "Net needs argument(s) depth" in load_error(path)
    assert type(load(path, model_kwargs={"depth": 2}).module).__name__ == "Net"


# -- dict keyword arguments become config objects ------------------------------------------------------------


@pytest.mark.parametrize("annotation", ["", ": Cfg", ": Optional[Cfg]", ": 'Cfg | None'"])
def test_dict_kwarg_becomes_the_dataclass(tmp_path: Path, annotation: str) -> None:
    path = write(
        tmp_path,
        "m.py",
        f"""
        from dataclasses import dataclass
        from typing import Optional

        @dataclass
        class Cfg:
            width: int
            bias: bool = True

        @dataclass
        class Unrelated:
            name: str

        class Net(nn.Module):
            def __init__(self, cfg{annotation}):
                super().__init__()
                self.fc = nn.Linear(cfg.width, 2, bias=cfg.bias)
    """,
    )
    module = load(path, model_kwargs={"cfg": {"width": 5, "bias": False}}).module
    assert module.get_submodule("fc").in_features == 5 and module.get_submodule("fc").bias is None


def test_nested_dicts_and_annotated_classes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.py",
        "from __future__ import annotations\n"
        + HEADER
        + textwrap.dedent("""
        from dataclasses import dataclass, field

        @dataclass
        class Inner:
            width: int = 3

        @dataclass
        class Outer:
            inner: Inner = field(default_factory=Inner)
            extra: dict = field(default_factory=dict)

        class Net(nn.Module):
            def __init__(self, cfg: Outer, table: dict | None = None):
                super().__init__()
                assert isinstance(cfg.inner, Inner) and isinstance(cfg.extra, dict)
                assert table is None or isinstance(table, dict)
                self.fc = nn.Linear(cfg.inner.width, 1)
        """),
        header=False,
    )
    kwargs = {"cfg": {"inner": {"width": 7}, "extra": {"a": 1}}, "table": {"width": 2}}
    assert load(path, model_kwargs=kwargs).module.get_submodule("fc").in_features == 7


def test_a_dict_that_fits_no_class_stays_a_dict(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.py",
        """
        from dataclasses import dataclass

        @dataclass
        class Cfg:
            width: int

        class Net(nn.Module):
            def __init__(self, sizes):
                super().__init__()
                assert isinstance(sizes, dict)
                self.fc = nn.Linear(sizes["a"], sizes["b"])
    """,
    )
    assert load(path, model_kwargs={"sizes": {"a": 3, "b": 2}}).module.get_submodule("fc").in_features == 3


def test_a_misspelt_field_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.py",
        """
        from dataclasses import dataclass

        @dataclass
        class Cfg:
            width: int = 2
            depth: int = 1

        class Net(nn.Module):
            def __init__(self, cfg):
                super().__init__()
                self.fc = nn.Linear(cfg.width, 1)
    """,
    )
    message = load_error(path, model_kwargs={"cfg": {"widht": 3, "depth": 2}})
    assert "built as Cfg" in message and "widht" in message and "width" in message


# -- import errors -------------------------------------------------------------------------------------------


def test_sys_exit_at_import(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "import sys\nsys.exit(3)\n")
    message = load_error(path)
    assert "sys.exit(3)" in message and "__main__" in message


def test_keyboard_interrupt_propagates(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        load(path)


def test_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "x = 1\ny = (\ndef f(:\n", header=False)
    message = load_error(path)
    assert "syntax error at line" in message and path in message


def test_missing_import(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "import gradscope_not_installed_pkg.sub\n")
    message = load_error(path)
    assert "gradscope_not_installed_pkg" in message
    assert "pip install gradscope_not_installed_pkg" in message


def test_exception_at_import(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "raise RuntimeError('no GPU here\\nsecond line')\n")
    assert load_error(path) == f"{path} failed at import: RuntimeError: no GPU here"


def test_factory_raising(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "def build_model():\n    raise ValueError('depth must be even')\n")
    assert "build_model() raised ValueError: depth must be even" in load_error(path)


def test_factory_returning_non_module(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "def build_model():\n    return {'a': 1}\n")
    message = load_error(path)
    assert "build_model() returned dict" in message and "nn.Module" in message


# -- a clean interpreter afterwards --------------------------------------------------------------------------


def test_sys_path_and_modules_unchanged(tmp_path: Path) -> None:
    write(tmp_path, "gs_helper_layers.py", "class Block(nn.Linear):\n    pass\n")
    (tmp_path / "gs_helper_pkg").mkdir()
    write(tmp_path / "gs_helper_pkg", "__init__.py", "WIDTH = 3\n", header=False)
    path = write(
        tmp_path,
        "m.py",
        """
        import sys
        import json  # already imported elsewhere: stays
        from gs_helper_layers import Block
        from gs_helper_pkg import WIDTH
        sys.path.append("/somewhere/else")
        def build_model():
            return Block(WIDTH, 2)
    """,
    )
    path_before = list(sys.path)
    modules_before = set(sys.modules)
    loaded = load(path)
    assert sys.path == path_before
    assert set(sys.modules) - modules_before == set()
    assert "gs_helper_layers" not in sys.modules and "gs_helper_pkg" not in sys.modules
    assert loaded.module.in_features == 3  # classes from removed helpers keep working


def test_same_helper_name_in_two_directories(tmp_path: Path) -> None:
    for width in (2, 5):
        folder = tmp_path / f"d{width}"
        folder.mkdir()
        write(folder, "gs_shared_helper.py", f"WIDTH = {width}\n", header=False)
        write(folder, "m.py", "from gs_shared_helper import WIDTH\nmodel = nn.Linear(WIDTH, 1)\n")
    assert load(str(tmp_path / "d2" / "m.py")).module.in_features == 2
    assert load(str(tmp_path / "d5" / "m.py")).module.in_features == 5


def test_helper_with_a_module_getattr_is_forgotten_like_any_other(tmp_path: Path) -> None:
    """A helper whose module-level ``__getattr__`` answers every name (``__path__`` = 1 here) is read from its
    namespace, not asked: it used to turn every load of the file into an internal error."""
    write(tmp_path, "gs_lazy_helper.py", "WIDTH = 3\ndef __getattr__(name):\n    return 1\n", header=False)
    path = write(tmp_path, "m.py", "from gs_lazy_helper import WIDTH\nmodel = nn.Linear(WIDTH, 1)\n")
    assert load(path).module.in_features == 3
    assert "gs_lazy_helper" not in sys.modules


def test_argv_seen_by_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "m.py", "import sys\nSEEN = list(sys.argv)\nsys.argv.append('x')\n")
    monkeypatch.setattr(sys, "argv", ["gradscope", "scan", "--fix"])
    argv = sys.argv
    module = import_file(path)
    assert module.SEEN == [path]
    assert sys.argv is argv and argv == ["gradscope", "scan", "--fix"]


def test_dataclass_in_model_file(tmp_path: Path) -> None:
    # dataclasses look the defining module up in sys.modules while the class is created
    path = write(
        tmp_path,
        "m.py",
        """
        from __future__ import annotations
        from dataclasses import dataclass
        from torch import nn
        @dataclass
        class Cfg:
            width: int = 3
        def build_model():
            return nn.Linear(Cfg().width, 1)
    """,
        header=False,
    )
    assert load(path).module.in_features == 3


def test_main_guard_does_not_run(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.py",
        """
        model = nn.Linear(2, 2)
        if __name__ == "__main__":
            raise SystemExit("training would start here")
    """,
    )
    assert load(path).name == "model"


# -- hooks ---------------------------------------------------------------------------------------------------


def test_hooks_found(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.py",
        """
        model = nn.Linear(2, 2)
        def example_inputs():
            return torch.zeros(1, 2)
        def probe_batches(n, seed):
            return [torch.zeros(1, 2)] * n
        def loss_fn(output, batch):
            return output.sum()
        def dataset():
            return None
    """,
    )
    hooks = load(path).hooks
    assert hooks.source == path
    assert hooks.example_inputs is not None and tuple(hooks.example_inputs().shape) == (1, 2)
    assert hooks.probe_batches is not None and len(list(hooks.probe_batches(3, 0))) == 3
    assert hooks.loss_fn is not None and hooks.dataset is not None


def test_non_callable_hook_names_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "model = nn.Linear(2, 2)\ndataset = [1, 2]\n")
    hooks = load(path).hooks
    assert hooks == ModelFileHooks()


def test_probe_file_takes_precedence(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.py",
        """
        model = nn.Linear(2, 2)
        def example_inputs():
            return torch.zeros(1, 2)
        def loss_fn(output, batch):
            return output.sum()
    """,
    )
    probe = write(tmp_path, "probe.py", "def example_inputs():\n    return torch.ones(4, 2)\n")
    hooks = load(path, probe_file=probe).hooks
    assert hooks.example_inputs is not None and tuple(hooks.example_inputs().shape) == (4, 2)
    assert hooks.loss_fn is not None  # kept from the model file
    assert hooks.source is not None and probe in hooks.source


def test_probe_file_without_hooks(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "model = nn.Linear(2, 2)\n")
    probe = write(tmp_path, "probe.py", "x = 1\n")
    message = load_error(path, probe_file=probe)
    assert "--probe" in message and "example_inputs()" in message
