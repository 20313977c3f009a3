"""Renders runs into one self-contained HTML page: plotly.js, styles, scripts and data all
inline, nothing fetched, every string escaped by the template engine."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import jinja2
import plotly.io as pio
from plotly.offline import get_plotlyjs

from evaluators import atomic_write_text
from reports import _content as content
from reports._figures import hypervolume_figure, pareto_figure
from reports._run import RunData, load_runs


def _script_json(value: str) -> str:
    """Returns JSON text safe inside a ``<script>`` element (no ``</script>`` can close it)."""
    return value.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


class _Figures:
    """Collects figures as escaped JSON, each under an id the page refers to."""

    def __init__(self) -> None:
        self.items: dict[str, str] = {}

    def add(self, figure: object) -> str:
        key = f"fig-{len(self.items)}"
        self.items[key] = _script_json(pio.to_json(figure, validate=False, pretty=False))
        return key


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )


def render_report(runs: Sequence[RunData], output: Path) -> str:
    """Returns the HTML page for ``runs`` (one run, or several overlaid), with links
    relative to ``output``'s folder."""
    out_dir = output.resolve().parent
    figures = _Figures()
    names = content.ArchNames()
    pareto, points = pareto_figure(runs, names)
    hv = hypervolume_figure(runs)
    recommendations = []
    for run in runs:
        rows, source = content.recommendations(run, out_dir)
        recommendations.append({"run": run.label, "rows": rows, "source": source})
    title = " vs ".join(run.experiment for run in runs)
    page = _environment().get_template("report.html.j2").render(
        title=title,
        runs=[{
            "label": run.label, "experiment": run.experiment,
            "summary": content.summary(run), "stages": content.stage_times(run),
            "command": content.reproduce_command(run), "config": content.resolved_config(run),
            "links": content.artifact_links(run, out_dir),
        } for run in runs],
        many=len(runs) > 1,
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        recommendations=recommendations,
        pareto_figure=figures.add(pareto), pareto_points=json.dumps(points),
        trial_count=sum(points.values()),
        valueless=sum(len(run.trials) - len(run.valued) for run in runs),
        hv_figure=figures.add(hv) if hv is not None else None,
        models=[s for run in runs for s in content.model_sections(run, names, out_dir, figures.add)],
        pareto_rows=[r for run in runs for r in content.pareto_rows(run, names)],
        trial_rows=[r for run in runs for r in content.trial_rows(run, names)],
        states=sorted({str(s) for run in runs for s in run.trials["state"]}),
        notes=content.missing_notes(runs),
        objectives=runs[0].names,
        fmt=content.fmt,
        figures=figures.items,
        plotly_js=get_plotlyjs(),
        style=resources.files("reports").joinpath("templates/report.css").read_text(),
        script=resources.files("reports").joinpath("templates/report.js").read_text(),
    )
    return page


def report_path(run_dirs: Sequence[Path], output: Path | None = None) -> Path:
    """Returns where the report of ``run_dirs`` goes: ``output`` when given, else
    ``report.html`` in the one run directory, or ``comparison.html`` beside several."""
    if output is not None:
        return Path(output)
    first = Path(run_dirs[0]).resolve()
    return first / "report.html" if len(run_dirs) == 1 else first.parent / "comparison.html"


def write_report(run_dirs: Sequence[Path], output: Path | None = None) -> Path:
    """Writes the report of ``run_dirs`` atomically and returns its path: by default
    ``report.html`` in the run directory, or ``comparison.html`` beside the runs when
    several are overlaid.

    Raises:
        ReportError: a path is not a run directory with trials.
    """
    runs = load_runs(list(run_dirs))
    output = report_path(run_dirs, output)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, render_report(runs, output))
    return output
