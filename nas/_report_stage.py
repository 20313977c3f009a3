"""The last stage: the run's ``report.html``, rendered from what the run directory holds."""

from __future__ import annotations

from rich.markup import escape

from nas._stage import RunContext, Stage
from reports import write_report


class ReportStage(Stage):
    """Writes ``report.html`` (always again: it is cheap and shows the latest results)."""

    name = "report"

    def run(self, ctx: RunContext) -> None:
        """Renders the run directory into ``report.html``."""
        path = write_report([ctx.run.root], ctx.run.report)
        ctx.run.stale_report.unlink(missing_ok=True)
        size = path.stat().st_size / 2**20
        ctx.console.print(f"report: {escape(str(path))} ({size:.1f} MB, opens offline in any "
                          "browser)")
