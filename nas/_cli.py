"""The ``nas`` command line: one command class per subcommand, registered in a dict."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from nas._errors import USER_ERRORS, SearchInterrupted
from nas._rundir_lock import RunDirLock

if TYPE_CHECKING:
    from nas._rundir import RunDir
    from nas._stage import RunContext

# the space ``nas profile`` measures by default (imported lazily with the command itself)
REFERENCE_SPACE_NAME = "mobilenet_elastic"

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2
# columns of the tables written to a log or a pipe (rich assumes 80, which folds the
# compression table's columns into a word per line); COLUMNS overrides it
LOG_COLUMNS = 160


class _Command(ABC):
    """A subcommand: its arguments and its action; ``take_action`` returns the exit status."""

    help = ""
    description = ""

    @abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Adds the subcommand's arguments to ``parser``."""

    @abstractmethod
    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        """Runs the subcommand; returns the exit status. Raises USER_ERRORS on bad input."""


def _prepare_resume(ctx: RunContext) -> None:
    """Readies a locked run directory for writing: checks its records, removes what killed
    writers left, and marks the report stale; then mends what is derived (see
    ``_mend_derived``).

    Raises:
        RunDirError: ``stages.json`` or ``environment.json`` is damaged.
    """
    run, console = ctx.run, ctx.console
    run.check_records()
    removed = run.remove_leftovers()
    if removed:
        console.print(f"[dim]removed {len(removed)} leftover files of an interrupted run[/]")
    _mend_derived(run, console, lambda: ctx.data.summary(), "latencies are measured again")
    run.mark_report_stale()


def _mend_derived(run: RunDir, console: Console, data_summary: Callable[[], dict[str, Any]],
                  after_cache: str) -> None:
    """Sets aside a damaged latency cache (a fresh one replaces it; ``after_cache`` says
    what follows) and writes a damaged ``data.json`` again from ``data_summary()`` (called
    only then), in a run directory whose lock is held.

    Raises:
        DataError, ConfigError: the run's data cannot be loaded to write ``data.json`` again.
    """
    aside = run.set_aside_damaged_cache()
    if aside is not None:
        console.print(f"[yellow]{escape(str(run.latency_cache))} was damaged: set aside as "
                      f"{escape(aside.name)}; {after_cache}[/]")
    if run.rewrite_damaged_data_info(data_summary):
        console.print(f"[yellow]{escape(str(run.data_info))} was damaged: written again from "
                      "the run's data[/]")


#: what SQLite says when the disk is full or the directory not writable
_SQLITE_WRITE_FAILURES = ("disk i/o error", "database or disk is full", "readonly database",
                          "unable to open database file")


@contextmanager
def _writing(run: RunDir) -> Iterator[None]:
    """Holds ``run``'s lock for the block and turns a database write the disk refused
    (full, read-only) into a ``RunDirError`` naming the run directory.

    Raises:
        RunDirError: another process writes ``run``, or its databases cannot be written.
    """
    from nas._errors import RunDirError

    with RunDirLock(run.root):
        try:
            yield
        except Exception as exc:
            cause: BaseException | None = exc
            seen: set[int] = set()  # a chain may loop back on itself: look at each once
            while cause is not None and id(cause) not in seen:
                seen.add(id(cause))
                text = str(cause).lower()
                if "operationalerror" in type(cause).__name__.lower() and any(
                        f in text for f in _SQLITE_WRITE_FAILURES):
                    raise RunDirError(
                        f"{run.root}: cannot write the run's databases (study.db, "
                        f"latency_cache.db): {str(cause).splitlines()[0][:160]}; free space "
                        "or make it writable, then run the same command again to resume"
                    ) from exc
                cause = cause.__cause__ or cause.__context__
            raise


def _report_lock(root: Path, output: Path) -> RunDirLock:
    """Returns ``root``'s lock, taken for a report written into it (``output``).

    Raises:
        WriteError: ``root`` cannot be written (read-only, full, no permission), naming
            ``output`` and the cause and suggesting ``-o``.
        RunDirError: another process writes ``root``.
    """
    from evaluators import WriteError
    from evaluators._io import WRITE_ERRNOS
    from nas._errors import RunDirError

    lock = RunDirLock(root)
    try:
        lock.acquire()
    except RunDirError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno in WRITE_ERRNOS:
            raise WriteError(cause.errno, f"cannot write {output}: {cause.strerror}; write the "
                             "report elsewhere with -o FILE") from exc
        raise
    return lock


def _data_summary(run: RunDir, console: Console) -> Callable[[], dict[str, Any]]:
    """Returns a function returning the summary of ``run``'s data (loaded from its
    ``config.yaml`` only when called)."""
    from nas._stage import RunContext

    return lambda: RunContext(spec=run.load_spec(), run=run, console=console).data.summary()


def _add_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """Adds the repeatable ``--set KEY=VALUE`` option."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


class _Search(_Command):
    help = "train a supernet and search its subnets for the accuracy/latency Pareto front"
    description = (
        "Runs the stages of an experiment into a run directory: supernet training, the "
        "multi-objective search (Ray Tune + Optuna, latency measured on the hardware profile) "
        "and the Pareto set. Running it again on the same run directory resumes: finished "
        "stages are skipped, finished trials kept, and the search continues to n_trials."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("config", type=Path, help="the experiment's YAML file")
        parser.add_argument(
            "--run-dir", type=Path, default=None,
            help="where results go (default: runs/<experiment.name>)",
        )
        _add_overrides(parser, "override a config key, validated like the file (repeatable), "
                       "e.g. --set search.n_trials=8")

    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        from nas._config import load_config
        from nas._pareto_stage import ParetoStage
        from nas._report_stage import ReportStage
        from nas._rundir import RunDir
        from nas._search_stage import SearchStage
        from nas._stage import RunContext, run_pipeline
        from nas._supernet_stage import SupernetStage

        spec = load_config(args.config, args.overrides)
        run = RunDir(args.run_dir or Path("runs") / spec.experiment.name)
        with _writing(run):
            run.prepare(spec, sys.argv)
            ctx = RunContext(spec=spec, run=run, console=console)
            _prepare_resume(ctx)
            console.print(f"run directory: {escape(str(run.root))}")
            stages = [SupernetStage(), SearchStage(), ParetoStage()]
            if spec.compress.enabled:
                from nas._compress_stage import CompressStage

                stages.append(CompressStage())
            stages.append(ReportStage())
            run_pipeline(ctx, stages)
        console.print(f"done: results in {escape(str(run.root))}")
        return EXIT_OK


class _Compress(_Command):
    help = "compress a finished search's Pareto models (prune, distill, INT8) and export them"
    description = (
        "Runs (or resumes) the compression of a run directory's Pareto models: fine-tuned "
        "baseline, structured pruning, distillation, INT8 calibration and ONNX export (and a "
        "TensorRT engine where TensorRT and a GPU exist). Writes models/<id>/, "
        "compression.parquet and deployed_pareto.csv."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", type=Path, help="a run directory written by `nas search`")
        _add_overrides(parser, "override a compress key, e.g. --set compress.top_k=0 (all Pareto models)")

    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        from nas._compress_stage import CompressStage
        from nas._report_stage import ReportStage
        from nas._rundir import RunDir
        from nas._stage import RunContext, run_pipeline

        run = RunDir(args.run_dir)
        spec = run.load_spec(args.overrides)
        with _writing(run):
            run.prepare(spec, sys.argv)
            ctx = RunContext(spec=spec, run=run, console=console)
            _prepare_resume(ctx)
            run_pipeline(ctx, [CompressStage(), ReportStage()])
        console.print(f"done: models in {escape(str(run.models))}")
        return EXIT_OK


class _Report(_Command):
    help = "write the HTML report of a run, or of several runs overlaid"
    description = (
        "Renders run directories into one self-contained HTML page that opens offline: "
        "summary and recommendation per latency budget, Pareto plot, hypervolume history, "
        "each Pareto model's architecture, compression waterfall and latency distribution, "
        "the tables of the Pareto set and of all trials, and the command that reproduces "
        "the run. With several run directories (e.g. one search on two hardware profiles, "
        "or two samplers) their trials and fronts are overlaid on one page."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                            help="run directories written by `nas search`")
        parser.add_argument(
            "-o", "--output", type=Path, default=None,
            help="the HTML file to write (default: RUN_DIR/report.html for one run, "
            "comparison.html beside the first run for several)",
        )

    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        from nas._rundir import RunDir
        from reports import report_path, write_report

        output = report_path(args.run_dirs, args.output)
        # a report written into a run directory is one of its writers
        written = [RunDir(root) for root in {Path(r).resolve() for r in args.run_dirs}
                   if output.resolve().parent == root and root.is_dir()]
        with ExitStack() as held:
            for run in written:
                held.callback(_report_lock(run.root, output).release)
                run.remove_leftovers()
                _mend_derived(run, console, _data_summary(run, console),
                              "the report shows no latency distributions until `nas search` "
                              "measures them again")
            path = write_report(args.run_dirs, output)
            for run in written:
                if path.resolve() == run.report:  # a fresh report replaces one marked stale
                    run.stale_report.unlink(missing_ok=True)
        console.print(f"report: {escape(str(path))} ({path.stat().st_size / 2**20:.1f} MB)")
        return EXIT_OK


class _Spaces(_Command):
    help = "list the registered search spaces and their choices"
    description = "Lists every registered search space with its default options and choices."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("filter", nargs="?", default="", help="fnmatch pattern, e.g. 'mobile*'")

    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        from search_spaces import get_search_space, list_search_spaces

        names = list_search_spaces(args.filter)
        if not names:
            console.print(f"no search space matches {escape(repr(args.filter))}")
            return EXIT_USAGE
        for name in names:
            space = get_search_space(name)
            console.rule(escape(name))
            console.print(space.describe(), markup=False)
            for choice, values in space.choices().items():
                console.print(f"  {choice}: {list(values)}", markup=False)
        return EXIT_OK


class _Profile(_Command):
    help = "show a hardware profile and the measured latency of a reference model"
    description = (
        "Loads a hardware profile (a name from hwprofiles/ or a YAML path), prints it, and "
        "measures the largest subnet of the default search space several times to show the "
        "latency and its noise floor on this machine: the coefficient of variation within a "
        "measurement and between the medians of repeated ones, which processes keep the cores "
        "busy, and whether this device is fit to measure on now."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("profile", help="profile name (e.g. cpu, cpu-torch, h200) or YAML path")
        parser.add_argument("--image-size", type=int, default=16, help="reference input size")
        parser.add_argument("--channels", type=int, default=1, help="reference input channels")
        parser.add_argument("--runs", type=int, default=5, help="independent measurements")
        parser.add_argument(
            "--build-latency-model", action="store_true",
            help="measure every block the space's subnets run once on this profile and fit a "
                 "latency model of the space (kept in --cache-dir), then check it on subnets "
                 "it was not fitted on")
        parser.add_argument("--space", default=REFERENCE_SPACE_NAME,
                            help=f"search space of the latency model (default {REFERENCE_SPACE_NAME})")
        parser.add_argument("--fit-archs", type=int, default=24,
                            help="whole subnets measured to fit the model's correction")
        parser.add_argument("--cache-dir", type=Path, default=None,
                            help="where block measurements and models are kept (default: "
                                 "$XDG_CACHE_HOME/hwnas or ~/.cache/hwnas)")

    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        from nas._profile_cmd import build_latency_model, show_profile

        if args.build_latency_model:
            return build_latency_model(args.profile, args.space, args.image_size, args.channels,
                                       args.fit_archs, args.cache_dir, console)
        return show_profile(args.profile, args.image_size, args.channels, args.runs, console)


class _Dashboard(_Command):
    help = "serve optuna-dashboard on a read-only view of a run's study"
    description = (
        "Serves optuna-dashboard for the study of a run directory (its study.db, or the "
        "search.storage of its config) on 127.0.0.1, during or after the search. The study "
        "is opened read-only: the dashboard shows trials, objectives and user attributes, and "
        "its buttons that would delete the study or change a trial fail."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", type=Path, help="a run directory written by `nas search`")
        parser.add_argument("--host", default="127.0.0.1",
                            help="address to listen on (default 127.0.0.1: this machine only)")
        parser.add_argument("--port", type=int, default=8080,
                            help="port (default 8080; a free one when it is busy)")

    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        from nas._dashboard_cmd import serve_dashboard

        return serve_dashboard(args.run_dir, args.host, args.port, console)


COMMANDS: dict[str, type[_Command]] = {
    "search": _Search, "compress": _Compress, "report": _Report, "dashboard": _Dashboard,
    "spaces": _Spaces,
    "profile": _Profile,
}


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of ``nas`` with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="nas",
        description="Hardware-aware neural architecture search and model compression: find "
        "the models on the accuracy/latency Pareto front measured on your target device.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command_cls in COMMANDS.items():
        command = command_cls()
        child = sub.add_parser(name, help=command.help, description=command.description)
        command.add_arguments(child)
        child.set_defaults(handler=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the ``nas`` command; returns 0 done, 2 bad input, 1 internal failure."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(emoji=False)  # a path or name such as "a:fire:b" is printed as it is
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=LOG_COLUMNS, emoji=False)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.DEBUG if args.debug else optuna.logging.WARNING)
    try:
        return int(args.handler.take_action(args, console))
    except USER_ERRORS as exc:
        if args.debug:
            traceback.print_exc()
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except (KeyboardInterrupt, SearchInterrupted) as exc:
        reason = f"{exc}; " if isinstance(exc, SearchInterrupted) else ""
        console.print(f"interrupted: {reason}run the same command again to resume", markup=False)
        return 130
    except Exception as exc:  # noqa: BLE001 - any internal failure: say so, and how to see more
        if args.debug:
            traceback.print_exc()
        else:
            console.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
                "(rerun with --debug for the traceback)",
                highlight=False,
            )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
