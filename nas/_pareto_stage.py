"""Stage 3: the Pareto set of the search, written to ``pareto.csv``."""

from __future__ import annotations

import time

import pandas as pd
from rich.markup import escape
from rich.table import Table

from nas._stage import RunContext, Stage
from nas._study import pareto_frame
from search_spaces import Arch, ChoiceSpace


class ParetoStage(Stage):
    """Selects the COMPLETE, feasible, non-dominated trials."""

    name = "pareto"

    def run(self, ctx: RunContext) -> None:
        """Writes ``pareto.csv`` from ``trials.parquet`` and prints it."""
        run = ctx.run
        start = time.perf_counter()
        trials = pd.read_parquet(run.trials)
        front = pareto_frame(trials, ctx.objectives)
        names = ctx.objectives.names
        front = front.sort_values(names[::-1]).reset_index(drop=True)
        run.write_frame(run.pareto, front)
        doubtful = unreliable_trials(trials)
        run.mark_done(self.name, artifacts=[run.pareto], models=len(front),
                      unreliable=len(doubtful),
                      seconds=time.perf_counter() - start)
        ctx.console.print(pareto_table(front, ctx.spec.search.constraints, ctx.space))
        if len(doubtful):
            ctx.console.print(unreliable_table(doubtful, ctx.space))


def unreliable_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Returns the COMPLETE trials whose latency stayed unreliable: flagged, and their arch
    never measured reliably by another trial (those are off the front)."""
    if "latency_reliable" not in trials.columns:
        return trials.iloc[0:0]
    complete = trials[trials["state"] == "COMPLETE"]
    reliable = complete["latency_reliable"].fillna(True).astype(bool)
    settled = set(complete.loc[reliable, "arch"])
    doubtful = complete[~reliable & ~complete["arch"].isin(settled)]
    return doubtful.drop_duplicates("arch", keep="last")


def unreliable_table(trials: pd.DataFrame, space: ChoiceSpace) -> Table:
    """Returns a rich table of the trials kept off the front for an unreliable latency."""
    table = Table(title="Kept off the front: latency the device could not measure reliably")
    for column in ("trial", "accuracy", "latency ms", "latency CV", "why", "arch"):
        table.add_column(column, justify="left" if column in ("why", "arch") else "right")
    for row in trials.itertuples():
        table.add_row(
            str(row.number), f"{row.accuracy:.4f}", f"{row.latency_ms:.4f}",
            f"{row.latency_cv:.3f}", escape(str(row.latency_note)),
            escape(space.summarize(Arch.from_json(str(row.arch)))),
        )
    return table


def pareto_table(front: pd.DataFrame, constraints: dict[str, float], space: ChoiceSpace) -> Table:
    """Returns a rich table of the Pareto set, archs in the space's compact form."""
    title = "Pareto set"
    if constraints:
        title += " (" + ", ".join(f"{k} <= {v:g}" for k, v in constraints.items()) + ")"
    table = Table(title=title)
    for column in ("trial", "accuracy", "latency ms", "latency CV", "params", "MMACs", "arch"):
        table.add_column(column, justify="left" if column == "arch" else "right")
    # a sampler may propose the same arch again: one line per arch, every trial named
    trials_of = front.groupby("arch", sort=False)["number"].agg(lambda n: ", ".join(map(str, n)))
    for row in front.drop_duplicates("arch").itertuples():
        table.add_row(
            trials_of[row.arch], f"{row.accuracy:.4f}", f"{row.latency_ms:.4f}",
            f"{row.latency_cv:.3f}", f"{int(row.params):,}", f"{row.macs / 1e6:.2f}",
            escape(space.summarize(Arch.from_json(str(row.arch)))),
        )
    return table
