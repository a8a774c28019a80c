"""The JSON report: exactly ``Report.to_dict()`` (schema ``gradscope.report/1``) as one document."""

from __future__ import annotations

import json

from ..results import Report


def render_json(report: Report) -> str:
    # allow_nan=False: to_dict already writes non-finite values as null; one slipping through is a bug that
    # must fail here rather than emit "NaN", which strict JSON parsers reject.
    return json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"
