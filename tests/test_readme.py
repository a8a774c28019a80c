"""README's sample outputs are what the code prints now (``scripts/readme_samples.py`` regenerates them)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import ROOT, cli_env


@pytest.mark.slow  # runs a scan and a short trial in subprocesses
def test_readme_samples_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "readme_samples.py"), "--check"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
