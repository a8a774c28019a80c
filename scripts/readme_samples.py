"""Regenerate (or check) the sample outputs captured in README.md.

Each sample is a ```text block right after a marker line ``<!-- sample: NAME -->``; ``SAMPLES`` says which command
prints it, at which width, and which table rows are cut for length. The commands run as a user runs them (a real
``python -m gradscope`` subprocess in the repository root, colour off, one torch thread), so README shows what the
code prints now.

    python scripts/readme_samples.py           # rewrite README.md's samples in place
    python scripts/readme_samples.py --check   # exit 1 and print a diff when README differs (tests/test_readme.py)
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- sample: (?P<name>[\w-]+) -->\n```text\n(?P<body>.*?)^```\n", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Sample:
    argv: tuple[str, ...]
    columns: int = 100
    cut: tuple[int, int] | None = None  # table rows (by their first column, a layer index) replaced by one line


SAMPLES = {
    "scan": Sample(("scan", "examples/deep_tanh.py"), cut=(7, 53)),
    "trial": Sample(("trial", "examples/deep_sigmoid.py", "--steps", "150", "--seeds", "2")),
}


def render(sample: Sample) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"FORCE_COLOR", "TTY_COMPATIBLE", "GITHUB_WORKSPACE"}}
    env |= {"NO_COLOR": "1", "COLUMNS": str(sample.columns), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "gradscope", *sample.argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode not in (0, 1):
        raise SystemExit(f"gradscope {' '.join(sample.argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return _cut(proc.stdout, sample.cut)


def _cut(text: str, rows: tuple[int, int] | None) -> str:
    if rows is None:
        return text
    first, last = rows
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        head = line.split(maxsplit=1)[0] if line.strip() else ""
        if head.isdigit() and first <= int(head) <= last:
            if int(head) == first:
                out.append(f"…      (rows {first}–{last} cut here)\n")
            continue
        out.append(line)
    return "".join(out)


def regenerate(readme: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in SAMPLES:
            raise SystemExit(f"README.md: unknown sample {name!r} (known: {', '.join(SAMPLES)})")
        return f"<!-- sample: {name} -->\n```text\n{render(SAMPLES[name])}```\n"

    return MARKER.sub(replace, readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of rewriting; exit 1 on a difference")
    args = parser.parse_args()
    current = README.read_text()
    found = {m["name"] for m in MARKER.finditer(current)}
    if found != set(SAMPLES):
        raise SystemExit(f"README.md has samples {sorted(found)}, this script knows {sorted(SAMPLES)}")
    fresh = regenerate(current)
    if args.check:
        if fresh != current:
            diff = difflib.unified_diff(current.splitlines(True), fresh.splitlines(True), "README.md", "now")
            sys.stdout.writelines(diff)
            print("README.md's samples are stale: run python scripts/readme_samples.py", file=sys.stderr)
            raise SystemExit(1)
        return
    tmp = README.with_suffix(".md.tmp")
    tmp.write_text(fresh)
    tmp.replace(README)


if __name__ == "__main__":
    main()
