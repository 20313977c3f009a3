"""Stage 1: train the weight-sharing supernet once; ``supernet.pt`` marks it done."""

from __future__ import annotations

import time

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from evaluators import train_supernet
from evaluators.latency import DeviceLock
from nas._progress import epoch_line, log_line
from nas._stage import RunContext, Stage


class SupernetStage(Stage):
    """Trains the supernet with the sandwich rule and in-place distillation."""

    name = "supernet"

    def run(self, ctx: RunContext) -> None:
        """Trains and saves ``supernet.pt`` unless a finished one is already there."""
        run, spec = ctx.run, ctx.spec
        if self.name in run.done_stages():
            damaged = run.damaged_artifacts(self.name)
            if not run.supernet.exists() and run.supernet.name not in damaged:
                damaged.append(run.supernet.name)
            if not damaged:
                ctx.console.print(f"[dim]supernet: already trained ({run.supernet.name}), skipped[/]")
                return
            if run.study.exists() or run.trials.exists():
                raise run.changed_supernet(damaged[0],
                                           "the search's trials were evaluated with it")
            ctx.console.print(f"supernet: {escape(', '.join(damaged))} damaged or changed since "
                              "training; training again")
        data = ctx.data
        run.write_json(run.data_info, data.summary())
        start = time.perf_counter()
        config = spec.supernet
        lock = DeviceLock("cpu", lock_dir=spec.hardware.lock_dir)
        with Progress(
            TextColumn("supernet"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
            console=ctx.console, transient=False,
        ) as progress:
            task = progress.add_task("train", total=config.epochs, loss="-")

            epoch_start = [time.perf_counter()]

            def on_epoch(epoch: int, loss: float) -> None:
                progress.update(task, completed=epoch + 1, loss=f"{loss:.3f}")
                now = time.perf_counter()
                log_line(ctx.console, epoch_line(epoch, config.epochs, loss, now - epoch_start[0]))
                epoch_start[0] = now

            supernet, result = train_supernet(
                ctx.space,
                data,
                epochs=config.epochs,
                batch_size=spec.data.batch_size,
                optim=config.optim(),
                sandwich=config.sandwich(),
                seed=spec.experiment.seed,
                zero_init_residual=config.zero_init_residual,
                callbacks=[on_epoch],
                compute_guard=lock.compute,
            )
        seconds = time.perf_counter() - start
        run.save_state_dict(run.supernet, supernet.state_dict())
        info = {
            "seconds": seconds,
            "losses": result.losses,
            "max_subnet_val_accuracy": result.max_accuracy,
            "min_subnet_val_accuracy": result.min_accuracy,
        }
        run.write_json(run.supernet_info, info)
        run.mark_done(self.name, artifacts=[run.supernet], seconds=seconds)
        ctx.console.print(
            f"supernet: trained in {seconds:.0f} s; validation accuracy of the largest subnet "
            f"{result.max_accuracy:.3f}, of the smallest {result.min_accuracy:.3f}"
        )
