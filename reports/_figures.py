"""The report's plotly figures: Pareto plot, hypervolume history, compression waterfall and
latency distributions. Every string shown in a figure is HTML-escaped here, because plotly
renders a subset of HTML in hover labels and titles."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pareto import front_candidates, hypervolume_fraction, pareto_mask
from reports._run import RunData

#: Colour per run (plotly's default qualitative palette).
RUN_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
#: Colour (single run) and marker symbol (several runs) per trial outcome.
STATE_STYLE = {
    "feasible": ("#1f77b4", "circle"),
    "infeasible": ("#ff7f0e", "x"),
    "unreliable": ("#9467bd", "diamond-open"),
    "PRUNED": ("#7f7f7f", "triangle-up"),
    "FAIL": ("#d62728", "square"),
}
STAGE_ORDER = ("baseline", "pruned", "distilled", "int8", "tensorrt")
STATUS_COLOUR = {"ok": "#2ca02c", "rejected": "#d62728", "slower": "#ff7f0e",
                 "unconfirmed": "#9467bd", "skipped": "#c7c7c7"}
LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 50, "b": 50}, "font": {"size": 12}}

ArchText = Callable[[RunData, str], str]


def _fmt(value: object, digits: int = 4) -> str:
    if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool):
        number = float(value)
        if not math.isfinite(number):
            return "–"
        if abs(number) >= 1000:
            return f"{number:,.0f}"
        return f"{number:.{digits}g}"
    return escape(str(value))


def trial_hover(run: RunData, row: pd.Series, arch_text: ArchText) -> str:
    """Returns a trial's hover label: number, state, arch and every metric, escaped."""
    metrics = ["accuracy", "latency_ms", "latency_cv", "latency_p90_ms", "params", "macs"]
    names = list(dict.fromkeys([*run.names, *metrics]))
    parts = [f"{n} {_fmt(row[n])}" for n in names if n in row.index and pd.notna(row[n])]
    header = f"<b>{escape(run.label)} · trial {int(row['number'])}</b> · {escape(str(row['state']))}"
    arch = escape(arch_text(run, str(row.get("arch", ""))))
    lines = [header, arch, " · ".join(parts[:4]), " · ".join(parts[4:])]
    if not bool(row.get("latency_reliable", True)):
        lines.append(f"latency unreliable: {escape(str(row.get('latency_note', '')))}")
    return "<br>".join(lines)


def _outcome(row: pd.Series) -> str:
    if row["state"] == "COMPLETE":
        if not bool(row.get("latency_reliable", True)):
            return "unreliable"
        return "feasible" if bool(row.get("feasible", True)) else "infeasible"
    return str(row["state"])


def _axis_pairs(names: Sequence[str], directions: Mapping[str, str]) -> list[tuple[str, str]]:
    """Returns the objective pairs as (x, y): a cost on x and a gain on y where possible."""
    pairs = []
    for a, b in itertools.combinations(names, 2):
        pairs.append((a, b) if directions[a] == "min" or directions[b] == "max" else (b, a))
    return pairs


def pareto_figure(runs: Sequence[RunData], arch_text: ArchText) -> tuple[go.Figure, dict[str, int]]:
    """Returns the Pareto plot of ``runs`` and ``{trace name: points}`` of its trial traces.

    Every trial with a value of every objective is a point, coloured by outcome (feasible,
    violating a constraint, pruned, failed); the search front and the deployed front
    (after compression, measured on the test split) are drawn over them; constraints on
    the plotted objectives are dashed lines. With more than two objectives a menu picks
    the pair.
    """
    names = runs[0].names
    directions = dict(runs[0].objectives)
    pairs = _axis_pairs(names, directions) or [("number", names[0])]  # one objective: by trial
    x0, y0 = pairs[0]
    fig = go.Figure()
    columns: list[dict[str, list[float]]] = []  # per trace: objective -> values
    points: dict[str, int] = {}
    many = len(runs) > 1
    for r, run in enumerate(runs):
        colour = RUN_COLOURS[r % len(RUN_COLOURS)]
        prefix = f"{run.label}: " if many else ""
        frame = run.valued
        outcomes = frame.apply(_outcome, axis=1) if not frame.empty else pd.Series(dtype=str)
        for outcome, (state_colour, symbol) in STATE_STYLE.items():
            rows = frame[outcomes == outcome] if not frame.empty else frame
            if rows.empty:
                continue
            label = {"feasible": "trials", "infeasible": "trials violating a constraint",
                     "unreliable": "latency not measured reliably (off the front)",
                     "PRUNED": "pruned trials", "FAIL": "failed trials"}[outcome]
            name = f"{prefix}{label}"
            points[name] = len(rows)
            fig.add_trace(go.Scatter(
                x=rows[x0].tolist(), y=rows[y0].tolist(), mode="markers", name=name,
                meta="trials",
                marker={"color": colour if many else state_colour, "symbol": symbol if many else "circle",
                            "size": 8, "opacity": 0.75, "line": {"width": 0.5, "color": "white"}},
                text=[trial_hover(run, row, arch_text) for _, row in rows.iterrows()],
                hovertemplate="%{text}<extra></extra>",
            ))
            columns.append({n: rows[n].astype(float).tolist() for n in names})
        if run.pareto is not None and not run.pareto.empty:
            front = run.pareto.sort_values(x0)
            fig.add_trace(go.Scatter(
                x=front[x0].tolist(), y=front[y0].tolist(), name=f"{prefix}search front",
                mode="lines+markers" if len(names) == 2 else "markers", meta="front",
                line={"color": colour if many else "#08306b", "shape": "hv", "width": 2},
                marker={"size": 11, "symbol": "circle-open", "color": colour if many else "#08306b",
                            "line": {"width": 2}},
                hoverinfo="skip",
            ))
            columns.append({n: front[n].astype(float).tolist() for n in names})
        if run.deployed is not None and not run.deployed.empty and all(
            n in run.deployed.columns for n in (x0, y0)
        ):
            deployed = run.deployed.sort_values(x0)
            fig.add_trace(go.Scatter(
                x=deployed[x0].tolist(), y=deployed[y0].tolist(),
                name=f"{prefix}deployed front (after compression, test split)",
                mode="lines+markers", meta="deployed",
                line={"color": colour if many else "#2ca02c", "dash": "dot", "shape": "hv"},
                marker={"size": 12, "symbol": "diamond", "color": colour if many else "#2ca02c",
                            "line": {"width": 1, "color": "black"}},
                text=[
                    f"<b>{escape(run.label)} · {escape(str(d.model_id))} · {escape(str(d.stage))}</b><br>"
                    f"test accuracy {_fmt(d.accuracy)} · latency_ms {_fmt(d.latency_ms)}<br>"
                    f"{escape(str(d.artifact))}"
                    for d in deployed.itertuples()
                ],
                hovertemplate="%{text}<extra></extra>",
            ))
            columns.append({n: deployed[n].astype(float).tolist() if n in deployed.columns else []
                            for n in names})
    notes = _constraint_marks(fig, runs[0], x0, y0)
    fig.update_layout(
        **LAYOUT, height=520, title="Trials and Pareto fronts",
        xaxis_title=_axis_title(x0, directions), yaxis_title=_axis_title(y0, directions),
        legend={"orientation": "h", "y": -0.18}, hovermode="closest",
    )
    if notes:
        fig.add_annotation(text=escape("; ".join(notes)), xref="paper", yref="paper", x=0, y=1.06,
                           showarrow=False, font={"size": 11, "color": "#555"}, xanchor="left")
    if len(pairs) > 1:
        fig.update_layout(updatemenus=[{
            "type": "dropdown", "x": 1.0, "y": 1.15, "xanchor": "right", "showactive": True,
            "buttons": [{
                "label": escape(f"{y} vs {x}"), "method": "update",
                "args": [{"x": [c.get(x, []) for c in columns], "y": [c.get(y, []) for c in columns]},
                      {"xaxis.title.text": _axis_title(x, directions),
                       "yaxis.title.text": _axis_title(y, directions), "shapes": []}],
            } for x, y in pairs],
        }])
    return fig, points


def _axis_title(name: str, directions: Mapping[str, str]) -> str:
    if name not in directions:
        return "trial number"
    better = "higher" if directions.get(name) == "max" else "lower"
    return escape(f"{name} ({better} is better)")


def _constraint_marks(fig: go.Figure, run: RunData, x: str, y: str) -> list[str]:
    """Draws each constraint on a plotted objective inside the data's range as a dashed
    line; returns notes for those that lie far outside it (every trial meets them)."""
    values = run.valued
    notes = []
    for name, bound in run.constraints.items():
        if name not in (x, y):
            notes.append(f"constraint {name} <= {bound:g} (not on these axes)")
            continue
        if values.empty:
            continue
        column = values[name].astype(float)
        lo, hi = float(column.min()), float(column.max())
        if bound > hi + 0.5 * (hi - lo or abs(hi)):
            notes.append(f"constraint {name} <= {bound:g} is off the scale: every trial meets it")
            continue
        line = {"type": "line", "line": {"color": "#d62728", "dash": "dash", "width": 1.5}}
        if name == x:
            fig.add_shape(**line, x0=bound, x1=bound, yref="paper", y0=0, y1=1)
        else:
            fig.add_shape(**line, y0=bound, y1=bound, xref="paper", x0=0, x1=1)
        fig.add_annotation(x=bound if name == x else 1, y=1 if name == x else bound,
                           xref="x" if name == x else "paper", yref="paper" if name == x else "y",
                           text=escape(f"{name} <= {bound:g}"), showarrow=False,
                           font={"color": "#d62728", "size": 11}, xanchor="left")
    return notes


def hypervolume_history(runs: Sequence[RunData]) -> dict[str, pd.DataFrame]:
    """Returns per run label a table of ``number, minutes, hypervolume`` after each finished
    trial. The hypervolume is the search progress bar's: the fraction of the box between
    the ideal point and the run's reference point that the feasible front dominates
    (``pareto.hypervolume_fraction``), so runs on different devices share one scale."""
    histories: dict[str, pd.DataFrame] = {}
    for run in runs:
        names = run.names
        directions = [run.objectives[n] for n in names]
        ok = front_candidates(run.valued)
        if ok.empty:
            continue
        trials = run.trials[run.trials["state"].isin(["COMPLETE", "PRUNED", "FAIL"])]
        trials = trials.sort_values("finished_at" if "finished_at" in trials else "number")
        start = float(run.trials["started_at"].min()) if "started_at" in run.trials else math.nan
        values = ok[names].to_numpy(dtype=float)
        index = {int(n): i for i, n in enumerate(ok["number"])}
        rows, seen = [], []
        for t in trials.itertuples():
            if int(t.number) in index:
                seen.append(index[int(t.number)])
            front = values[seen]
            front = front[pareto_mask(front, directions)] if len(front) else front
            hv = hypervolume_fraction(front, directions, run.reference_point)
            finished = float(getattr(t, "finished_at", math.nan))
            rows.append({"number": int(t.number), "minutes": (finished - start) / 60.0, "hypervolume": hv})
        histories[run.label] = pd.DataFrame(rows)
    return histories


def hypervolume_figure(runs: Sequence[RunData]) -> go.Figure | None:
    """Returns hypervolume against trial number and against wall time, or ``None`` when no
    run has a feasible trial."""
    histories = hypervolume_history(runs)
    if not histories:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("against trials finished",
                                                        "against wall time"),
                        horizontal_spacing=0.1)
    for r, (label, history) in enumerate(histories.items()):
        colour = RUN_COLOURS[r % len(RUN_COLOURS)]
        common = {"mode": "lines+markers", "line": {"color": colour, "shape": "hv"}, "marker": {"size": 4},
                      "name": escape(label), "legendgroup": escape(label)}
        fig.add_trace(go.Scatter(x=list(range(1, len(history) + 1)), y=history["hypervolume"].tolist(),
                                 hovertemplate="trial %{customdata}: %{y:.4f}<extra></extra>",
                                 customdata=history["number"].tolist(), **common), row=1, col=1)
        timed = history.dropna(subset=["minutes"])
        if not timed.empty:
            fig.add_trace(go.Scatter(x=timed["minutes"].tolist(), y=timed["hypervolume"].tolist(),
                                     showlegend=False, hovertemplate="%{x:.1f} min: %{y:.4f}<extra></extra>",
                                     **common), row=1, col=2)
    if all(h["minutes"].isna().all() for h in histories.values()):
        fig.add_annotation(text="no trial timestamps in trials.parquet (written by an older version)",
                           xref="x2 domain", yref="y2 domain", x=0.5, y=0.5, showarrow=False)
    fig.update_xaxes(title_text="trials finished", row=1, col=1)
    fig.update_xaxes(title_text="minutes since the search started", row=1, col=2)
    fig.update_yaxes(title_text="hypervolume (fraction of the reference box)", row=1, col=1)
    fig.update_layout(**LAYOUT, height=360, showlegend=len(histories) > 1)
    return fig


def waterfall_figure(rows: pd.DataFrame, label: str) -> go.Figure:
    """Returns a model's compression waterfall: test accuracy and latency after each stage,
    rejected stages in red, slower ones in orange and ones the device could not compare
    reliably (unconfirmed) in purple, each with its reason on hover, skipped stages named, and
    the shipped stage outlined in black."""
    rows = rows.assign(order=rows["stage"].map({s: i for i, s in enumerate(STAGE_ORDER)}))
    rows = rows.sort_values("order")
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
                            escape(f"{label}: test accuracy after each stage"),
                            "latency ms (median) and speed-up over the baseline"),
                        horizontal_spacing=0.12)
    stages = [escape(str(s)) for s in rows["stage"]]
    reasons = [escape(str(r or "")) for r in rows["reason"]]
    colours = [STATUS_COLOUR.get(str(s), "#7f7f7f") for s in rows["status"]]
    shipped = (rows["deployed"].astype(bool).tolist() if "deployed" in rows.columns
               else [False] * len(rows))
    for col, metric in ((1, "accuracy"), (2, "latency_ms")):
        values = rows[metric].astype(float)
        first = values.dropna().iloc[0] if values.notna().any() else math.nan
        text = []
        for value, status, ships in zip(values, rows["status"], shipped):
            if ships and math.isfinite(value) and metric == "latency_ms":
                text.append(f"{value:.4f} ({first / value:.2f}x) shipped")
            elif status == "skipped" or not math.isfinite(value):
                text.append(str(status))
            elif status in ("slower", "unconfirmed") and metric == "latency_ms":
                text.append(f"{value:.4f} ({first / value:.2f}x, {status})")
            elif metric == "accuracy":
                text.append(f"{value:.4f} ({100 * (value - first):+.2f} pt)")
            else:
                text.append(f"{value:.4f} ({first / value:.2f}x)" if value > 0 else f"{value:.4f}")
        fig.add_trace(go.Bar(
            x=stages, y=[v if math.isfinite(v) else 0 for v in values], marker_color=colours,
            marker_line={"color": ["black" if d else "rgba(0,0,0,0)" for d in shipped],
                         "width": [3 if d else 0 for d in shipped]},
            text=text, textposition="outside", cliponaxis=False, showlegend=False,
            customdata=[[escape(str(s)), r] for s, r in zip(rows["status"], reasons)],
            hovertemplate="%{x}: %{customdata[0]}<br>%{customdata[1]}<extra></extra>",
        ), row=1, col=col)
    accuracy = rows["accuracy"].astype(float).dropna()
    if not accuracy.empty:
        lo = max(0.0, float(accuracy.min()) - 0.02)
        fig.update_yaxes(range=[lo, min(1.0, float(accuracy.max()) + 0.01) + 0.005], row=1, col=1)
    fig.update_layout(**LAYOUT, height=300)
    fig.update_annotations(font_size=13)
    return fig


def latency_figure(search_samples: Sequence[float], rows: pd.DataFrame | None, label: str) -> go.Figure | None:
    """Returns box plots of a model's timed runs: the search measurement and every
    compression stage that kept its samples; ``None`` when none were recorded."""
    series: list[tuple[str, list[float]]] = []
    if search_samples:
        series.append(("search (fp32 subnet)", list(search_samples)))
    if rows is not None and "latency_samples_ms" in rows.columns:
        for row in rows.itertuples():
            samples = json.loads(str(row.latency_samples_ms or "[]"))
            if samples:
                series.append((f"{row.stage} ({row.status})", [float(s) for s in samples]))
    if not series:
        return None
    fig = go.Figure()
    for name, samples in series:
        fig.add_trace(go.Box(x=samples, name=escape(name), boxpoints="all", jitter=0.4, pointpos=0,
                             marker={"size": 3, "opacity": 0.5}, line={"width": 1.5},
                             hovertemplate="%{x:.4f} ms<extra></extra>", orientation="h"))
    fig.update_layout(**LAYOUT, height=110 + 45 * len(series), showlegend=False,
                      title=escape(f"{label}: latency of each timed run"), xaxis_title="ms")
    return fig
