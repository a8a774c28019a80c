"""GitHub Actions workflow annotations (``::error title=...::message``) for ``gradscope check --github``.

One annotation per group of checks (rule × outcome), not per layer: GitHub shows at most 10 errors and 10
warnings per step, and one line naming 22 layers reads better than 22 lines. Failing checks are ``::error``,
checks below ``--fail-on`` are ``::warning`` (severity warning) or ``::notice`` (info), checks the baseline already
had are ``::notice``; ignored ones are left out. Improvements are one ``::notice``.

Escaping follows the runner's rules (actions/toolkit ``command.ts``): in the message ``%``, CR and LF become
``%25``, ``%0D``, ``%0A``; in property values (``title``, ``file``) also ``:`` → ``%3A`` and ``,`` → ``%2C``. With
newlines escaped, nothing in a layer name or message can start a workflow command of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..ci.policy import BASELINE_RULE, CheckResult, State, group
from ..util import displayed
from ..vocab import Severity
from . import fmt


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(level: str, message: str, *, title: str | None = None, file: str | None = None) -> str:
    props = []
    if file:
        props.append(f"file={escape_property(file)}")
    if title:
        props.append(f"title={escape_property(title)}")
    head = f"::{level}" + (" " + ",".join(props) if props else "")
    return f"{head}::{escape_data(message)}"


def target_file(target: str) -> str | None:
    """The model file a target names (``path/model.py[:NAME]``), relative to the workspace, if it is one."""
    path = target.rsplit(":", 1)[0] if target.count(":") and not Path(target).exists() else target
    if not path.endswith(".py") or not Path(path).is_file():
        return None
    workspace = os.environ.get("GITHUB_WORKSPACE")
    resolved = Path(path).resolve()
    if workspace:
        try:
            return resolved.relative_to(Path(workspace).resolve()).as_posix()
        except ValueError:
            pass
    return Path(path).as_posix()


def render_github(result: CheckResult) -> str:
    file = target_file(result.report.model.target)
    result = displayed(result)  # control characters shown as escapes, like every renderer (the runner's own
    lines: list[str] = []  # escaping below then keeps each annotation one line)
    for (rule, state, severity), checks in group(result.checks):
        if state is State.IGNORED:
            continue
        layers = [c.layer for c in checks]
        first = checks[0]
        if state is State.FAIL:
            level = "error"
        elif state is State.KNOWN or severity is Severity.INFO:
            level = "notice"
        else:
            level = "warning"
        suffix = " (known in the baseline)" if state is State.KNOWN else ""
        title = f"gradscope {rule}{suffix}"
        if rule == BASELINE_RULE:
            detail = "; ".join(f"'{c.layer}': {c.message}" for c in checks[:5])
            more = f"; and {len(checks) - 5} more" if len(checks) > 5 else ""
            message = f"{fmt.plural(len(checks), 'layer')} moved beyond the baseline factor: {detail}{more}"
        else:
            evidence = ", ".join(f"{k}={fmt.num(v)}" for k, v in list(first.evidence.items())[:6])
            message = f"{first.message} [layers: {fmt.layer_list(layers)}; {evidence}]"
        lines.append(annotation(level, message, title=title, file=file))
    comparison = result.comparison
    if comparison is not None and comparison.improvements:
        names = [d.name for d in comparison.improvements]
        lines.append(
            annotation(
                "notice",
                f"improved since the baseline: {fmt.layer_list(names)}",
                title="gradscope improvements",
                file=file,
            )
        )
    return "\n".join(lines) + ("\n" if lines else "")
