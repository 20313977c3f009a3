"""The HTML report of a run directory (plots, tables, recommendation) and the Pareto math
behind it. It only reads run directories; it computes no new results."""

from __future__ import annotations

from reports._html import render_report, write_report
from reports._pareto import hypervolume, normalized, pareto_mask, to_loss
from reports._run import ReportError, RunData, load_run, load_runs

__all__ = [
    "ReportError", "RunData", "hypervolume", "load_run", "load_runs", "normalized",
    "pareto_mask", "render_report", "to_loss", "write_report",
]
