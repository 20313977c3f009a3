"""Progress that reads on a terminal and in a log file.

On a terminal the stages draw rich progress bars. A bar is drawn live only there: under
``nohup``, CI or Slurm (output to a file or a pipe, or a dumb terminal) rich prints it
once, when it ends, so a long run would write nothing between its start and its end.
There the stages print one plain line per step instead: per supernet epoch, per finished
trial and per compression stage.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Protocol

from rich.console import Console


def logs_progress(console: Console) -> bool:
    """Returns True when ``console`` cannot draw a live bar (a file, a pipe or a dumb
    terminal), so progress goes there as one line per step."""
    return not console.is_terminal or console.is_dumb_terminal


def log_line(console: Console, text: str) -> None:
    """Prints ``text`` as one plain line where ``console`` logs progress; does nothing on a
    terminal, whose progress bar shows the same.

    The text is printed verbatim: rich markup, emoji codes and highlighting are off, so the
    user's strings in it (error messages, names) print as they are.
    """
    if logs_progress(console):
        console.print(text, markup=False, emoji=False, highlight=False, soft_wrap=True)


def fmt_number(value: float | None) -> str:
    """Returns ``value`` with 4 significant digits (whole above 1000), ``-`` when missing."""
    if _missing(value):
        return "-"
    assert value is not None
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def epoch_line(epoch: int, epochs: int, loss: float, seconds: float) -> str:
    """Returns the log line of supernet epoch ``epoch`` (from 0) of ``epochs``, e.g.
    ``supernet epoch 3/30 loss 1.234 (4.1 s)``."""
    return f"supernet epoch {epoch + 1}/{epochs} loss {loss:.4f} ({seconds:.1f} s)"


def trial_line(
    number: int, state: str, values: Mapping[str, float], seconds: float, *,
    done: str = "", reason: str = "",
) -> str:
    """Returns the log line of a finished trial, e.g.
    ``trial 12 COMPLETE accuracy=0.9812 latency_ms=0.0523 (3.1 s) [13/40 done]``.

    Args:
        number: The trial number.
        state: Its state's name (``COMPLETE``, ``FAIL``, ``PRUNED``).
        values: The objectives by name (empty unless COMPLETE).
        seconds: How long it took (NaN when unknown).
        done: The search's progress, shown in brackets.
        reason: Why it is not COMPLETE, after a colon, on the same line.
    """
    parts = [f"trial {number} {state}"]
    parts += [f"{name}={fmt_number(value)}" for name, value in values.items()]
    parts.append("" if _missing(seconds) else f"({seconds:.1f} s)")
    parts.append(f"[{done}]" if done else "")
    line = " ".join(p for p in parts if p)
    return f"{line}: {_one_line(reason)}" if reason else line


def stage_line(
    model_id: str, stage: str, status: str, *, accuracy: float, latency_ms: float,
    baseline_ms: float, seconds: float, reason: str = "",
) -> str:
    """Returns the log line of one compression stage, e.g. ``compress trial_12 pruned ok
    accuracy=0.9512 latency_ms=0.0412 speedup=1.27x (8.0 s)``: the speed-up is
    ``baseline_ms`` over ``latency_ms``, and ``reason`` follows a colon for a stage that is
    not ``ok``."""
    known = not (_missing(baseline_ms) or _missing(latency_ms)) and latency_ms > 0
    speedup = f"{baseline_ms / latency_ms:.2f}x" if known else "-"
    line = (f"compress {model_id} {stage} {status} accuracy={fmt_number(accuracy)} "
            f"latency_ms={fmt_number(latency_ms)} speedup={speedup} ({seconds:.1f} s)")
    return f"{line}: {_one_line(reason)}" if reason and status != "ok" else line


class _Stage(Protocol):
    @property
    def stage(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def accuracy(self) -> float: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def reason(self) -> str: ...


class StageLog:
    """Logs each compression stage of one model as it ends (``stage_line``), with the time
    since the previous one and the speed-up over the model's baseline stage."""

    def __init__(self, console: Console, model_id: str) -> None:
        self.console, self.model_id = console, model_id
        self.baseline_ms = math.nan
        self._last = time.perf_counter()

    def __call__(self, record: _Stage) -> None:
        """Prints the line of ``record`` (a ``compress.StageRecord``) where progress is logged."""
        now = time.perf_counter()
        if record.stage == "baseline":
            self.baseline_ms = record.latency_ms
        log_line(self.console, stage_line(
            self.model_id, record.stage, record.status, accuracy=record.accuracy,
            latency_ms=record.latency_ms, baseline_ms=self.baseline_ms,
            seconds=now - self._last, reason=record.reason))
        self._last = now


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _one_line(text: str) -> str:
    return " ".join(text.split())
