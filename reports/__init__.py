"""The HTML report of a run directory (plots, tables, recommendation). It only reads run
directories; it computes no new results (its Pareto math is the ``pareto`` package's)."""

from __future__ import annotations

from reports._html import render_report, report_path, write_report
from reports._run import ReportError, RunData, load_run, load_runs

__all__ = ["ReportError", "RunData", "load_run", "load_runs", "render_report", "report_path",
           "write_report"]
