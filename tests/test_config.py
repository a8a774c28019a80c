"""Settings: configs/default.yaml *is* the built-in defaults, and the shipped configs load."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import CONFIGS

from gradscope.config import Config, load_config
from gradscope.errors import ConfigError


def test_default_yaml_is_the_builtin_defaults_whole() -> None:
    assert load_config(CONFIGS / "default.yaml") == Config()


@pytest.mark.parametrize("name", ["ci.yaml", "strict.yaml"])
def test_shipped_configs_load(name: str) -> None:
    assert isinstance(load_config(CONFIGS / name), Config)


def test_every_default_key_is_written_in_default_yaml() -> None:
    """Each setting has a line (and the comment above it gives the reason); no key exists only in code."""
    import dataclasses

    text = (CONFIGS / "default.yaml").read_text(encoding="utf-8")
    for section in dataclasses.fields(Config):
        for key in dataclasses.fields(
            section.type if isinstance(section.type, type) else getattr(Config(), section.name)
        ):
            assert f"\n  {key.name}:" in text, f"{section.name}.{key.name} is missing from configs/default.yaml"


@pytest.mark.parametrize(
    ("yaml", "needle"),
    [
        ("diagnose: {vanishing_warning: .nan}", "diagnose.vanishing_warning"),
        ("trial: {helps_accuracy: 2}", "trial.helps_accuracy"),
        ("suggest: {clip_max_norm: 0}", "suggest.clip_max_norm"),
        ("diagnose: {dead_units_error: 0.1}", "diagnose.dead_units_error"),
    ],
)
def test_a_bad_value_names_its_own_key(tmp_path: Path, yaml: str, needle: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml, encoding="utf-8")
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(path)
