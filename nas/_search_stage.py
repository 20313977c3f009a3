"""Stage 2: the multi-objective search over subnets, on Ray Tune, resumable from the study."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

from optuna.trial import TrialState
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from evaluators import SupernetEvaluator, TrialEvaluator
from evaluators.latency import DeviceLock, busy_device_warning
from evaluators.latency._lockwatch import ForeignHolderWatch
from hwprofiles import describe_environment
from nas._config import DEVICE_METRICS
from nas._driver import run_search
from nas._errors import SearchInterrupted
from nas._overhead import trial_overhead
from nas._progress import log_line, logs_progress, trial_line
from nas._ray_backend import ray_session
from nas._stage import RunContext, Stage
from nas._storage import is_shared
from nas._study import Objectives, StudyAdapter, cheap_objectives, make_sampler, open_study
from pareto import reference_point

logger = logging.getLogger(__name__)


class SearchStage(Stage):
    """Evaluates ``search.n_trials`` subnets proposed by the Optuna sampler."""

    name = "search"

    def run(self, ctx: RunContext) -> None:
        """Runs the trials still missing; finished ones are kept, interrupted ones closed FAIL."""
        run, spec = ctx.run, ctx.spec
        objectives = ctx.objectives
        if not spec.search.storage:
            run.check_study()
        storage = spec.search.storage or run.storage_url()
        study = open_study(storage, spec.experiment.name, objectives)
        # another driver may share a study kept elsewhere: close only its abandoned trials
        adapter = StudyAdapter(study, ctx.space, objectives, exclusive=not is_shared(storage))
        adapter.close_interrupted()
        done = adapter.finished_count()
        remaining = spec.search.n_trials - done
        if remaining <= 0 and not adapter.to_remeasure(spec.search.remeasure):
            run.write_frame(run.trials, adapter.frame())
            ctx.console.print(f"[dim]search: {done} trials already finished, skipped[/]")
            reference = study.user_attrs.get("reference_point")
            run.mark_done(self.name, trials=done, reference_point=reference)
            return
        # only now, with trials to run: the evaluator loads the supernet
        evaluator = self._evaluator(ctx)
        study.sampler = make_sampler(
            spec.search.sampler.name,
            seed=spec.experiment.seed,
            objectives=objectives,
            space=ctx.space,
            known=cheap_objectives(evaluator, ctx.space, objectives),
            max_concurrent=spec.search.max_concurrent,
            **spec.search.sampler.options(),
        )
        run.record_environment(self.name, describe_environment(ctx.profile))
        profile = ctx.profile
        if profile.device == "cpu":
            busy = busy_device_warning(profile.pin_cores, threads=profile.threads or 1,
                                       max_load=profile.max_load)
            if busy:
                ctx.console.print(f"[yellow]warning: {escape(busy)}[/]")
        adapter.reference_point = self._reference_point(ctx, study, evaluator, objectives)
        if done:
            ctx.console.print(f"search: resuming, {done} trials kept, {max(0, remaining)} to go")
        ray_start = time.perf_counter()
        with ray_session(spec.ray) as session, Progress(
            TextColumn("search"), BarColumn(), MofNCompleteColumn(), TextColumn("trials"),
            TextColumn("front {task.fields[front]}  hypervolume {task.fields[hv]}"),
            TimeElapsedColumn(), console=ctx.console,
        ) as progress:
            if session.note:
                ctx.console.print(f"[yellow]{escape(session.note)}[/]")
            ctx.console.print(session.login_hint(), markup=False)
            ray_start_seconds = time.perf_counter() - ray_start
            size, hv = adapter.front_size_and_hypervolume()
            task = progress.add_task("trials", total=spec.search.n_trials, completed=done,
                                     front=size, hv=f"{hv:.4g}")

            def on_trial_end(number: int, state: TrialState) -> None:
                frame = adapter.frame()
                run.write_frame(run.trials, frame)
                size, hv = adapter.front_size_and_hypervolume(frame)
                progress.update(task, completed=adapter.finished_count(), front=size, hv=f"{hv:.4g}")
                row = frame.loc[frame["number"] == number].iloc[0]
                complete = state == TrialState.COMPLETE
                if logs_progress(ctx.console):  # no live bar: a line per trial tells the log
                    values = {name: row[name] for name in objectives.names} if complete else {}
                    log_line(ctx.console, trial_line(
                        number, state.name, values, row["seconds"],
                        done=f"{adapter.finished_count()}/{spec.search.n_trials} done, "
                        f"front {size}, hypervolume {hv:.4g}",
                        reason="" if complete else str(row["error"])))
                elif not complete:
                    progress.console.print(f"[yellow]trial {number} {state.name}: "
                                           f"{escape(str(row['error']))}[/]")
                if complete and not row["latency_reliable"]:
                    progress.console.print(
                        f"[yellow]trial {number}: latency not measured reliably, kept off the "
                        f"front until measured again: {escape(str(row['latency_note']))}[/]")

            segment = len(list(run.tune.glob("search-*"))) if run.tune.exists() else 0
            # the workers' waits on the device do not reach this console: say who holds it
            watch = ForeignHolderWatch(
                DeviceLock(profile.device, lock_dir=spec.hardware.lock_dir),
                lambda message: progress.console.print(f"[yellow]{escape(message)}[/]"))
            try:
                with watch:
                    outcome = run_search(
                        adapter,
                        evaluator,
                        n_trials=spec.search.n_trials,
                        max_concurrent=spec.search.max_concurrent,
                        resources=ctx.profile.resources,
                        tune_dir=run.tune,
                        name=f"search-{segment}",
                        on_trial_end=on_trial_end,
                        remeasure=spec.search.remeasure,
                        prefetch=spec.search.prefetch,
                        max_retries=spec.search.max_retries,
                        on_retry=lambda number, retry, cause: progress.console.print(
                            f"[yellow]trial {number}: its worker process or node died "
                            f"({escape(cause)}); running it again ({retry} of "
                            f"{spec.search.max_retries})[/]"),
                    )
            finally:
                run.write_frame(run.trials, adapter.frame())
        seconds = outcome.seconds
        frame = adapter.frame()
        finished = adapter.finished_count()
        new = frame[frame["number"] >= outcome.first_trial]
        evaluated = new["eval_seconds"].fillna(0) if "eval_seconds" in new else 0.0 * new["seconds"]
        # Orchestration overhead: trial-slot time not spent evaluating (Ray scheduling,
        # sending the evaluator, reporting, the sampler and the study), per trial.
        slots = min(spec.search.max_concurrent, max(1, len(new)))
        overhead = (seconds * slots - float(evaluated.sum())) / max(1, len(new))
        steady = trial_overhead(new, slots)
        info: dict[str, Any] = {
            "trials": finished,
            "seconds": seconds,
            "ray_start_seconds": ray_start_seconds,
            "trials_this_session": len(new),
            "eval_seconds_per_trial": float(evaluated.mean()) if len(new) else 0.0,
            "overhead_seconds_per_trial": overhead,
            "trial_seconds_outside_evaluation": float((new["seconds"] - evaluated).median()),
            "steady_overhead": asdict(steady) if steady else None,
            # the hypervolume box of the progress bar, the report and the benchmarks
            "reference_point": adapter.reference_point,
        }
        run.write_json(run.root / "search.json", info)
        if finished < spec.search.n_trials:
            raise SearchInterrupted(
                f"the search stopped after {finished} of {spec.search.n_trials} trials"
            )
        run.mark_done(self.name, **info)
        ctx.console.print(
            f"search: {len(new)} trials in {seconds:.0f} s (Ray started in "
            f"{ray_start_seconds:.0f} s); evaluation {info['eval_seconds_per_trial']:.2f} s and "
            f"orchestration overhead {overhead:.2f} s per trial"
            + (f" ({steady.inside_seconds + steady.between_seconds:.2f} s, {steady.share:.1%} of a "
               f"trial, once the workers ran; starting them took {steady.startup_seconds:.0f} s)"
               if steady else "")
        )

    def _evaluator(self, ctx: RunContext) -> TrialEvaluator:
        spec, run = ctx.spec, ctx.run
        return SupernetEvaluator(
            space_name=spec.search_space.name,
            space_options=spec.search_space.options(),
            state_dict=run.load_supernet("the search evaluates its trials with it"),
            data=ctx.data,
            profile=ctx.profile,
            latency_cache=run.latency_cache,
            lock_dir=spec.hardware.lock_dir,
            batch_size=spec.data.batch_size,
            recalibration_batches=spec.search.recalibration_batches,
            calibration_batches=spec.compress.calibration_batches,
            plugins=spec.plugins,
            device_metrics=tuple(name for name in DEVICE_METRICS
                                 if name in spec.search.objectives
                                 or name in spec.search.constraints),
            finetune_epochs=spec.search.finetune_epochs,
            seed=spec.experiment.seed,
        )

    def _reference_point(
        self, ctx: RunContext, study: object, evaluator: TrialEvaluator, objectives: Objectives
    ) -> list[float]:
        """Returns the hypervolume reference point, fixed for the whole study: 0 for
        accuracy, 1.1x the largest subnet's value for every cost objective
        (``pareto.reference_point``)."""
        attrs = getattr(study, "user_attrs", {})
        if "reference_point" in attrs:
            return [float(v) for v in attrs["reference_point"]]
        largest = evaluator(ctx.space.max_arch())
        reference = reference_point(largest, objectives.directions)
        study.set_user_attr("reference_point", reference)  # type: ignore[attr-defined]
        study.set_user_attr("largest_subnet", largest)  # type: ignore[attr-defined]
        return reference
