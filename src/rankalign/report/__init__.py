"""Run reports: many runs in one Markdown file and one self-contained HTML page (``rankalign report``).

>>> from rankalign.report import ReportOptions, build_report
>>> build_report(["runs/dpo", "runs/seadpra"], ReportOptions(out="runs/report"))   # doctest: +SKIP

Names are imported on first use, so ``rankalign --help`` does not load numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ABLATION_RE": "build", "ablation_parts": "build", "build_report": "build", "build_sections": "build",
    "detect_sweeps": "build", "ReportOptions": "options", "Run": "runs", "load_run": "runs", "load_runs": "runs",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"rankalign.report.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'rankalign.report' has no attribute {name!r}")
