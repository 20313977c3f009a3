"""``nas dashboard``: optuna-dashboard over a read-only view of a run's study."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from nas._errors import RunDirError
from nas._ports import free_port, port_is_free
from nas._rundir import RunDir
from nas._storage import open_storage, redacted


def serve_dashboard(run_dir: Path, host: str, port: int, console: Console) -> int:
    """Serves optuna-dashboard for the study of ``run_dir`` on ``host:port`` (a free port
    when that one is busy) until interrupted; returns the exit status.

    The study is opened read-only (see ``open_storage``): the dashboard's buttons that
    would delete a study or change a trial fail, and the study stays as the search wrote it.

    Raises:
        RunDirError: ``run_dir`` holds no run, or its study does not exist yet.
        StorageError: the study's storage cannot be opened.
    """
    import optuna_dashboard

    run = RunDir(run_dir)
    spec = run.load_spec()
    url = spec.search.storage or run.storage_url()
    if spec.search.storage is None and not run.study.exists():
        raise RunDirError(f"{run.study}: no study yet; start `nas search` on this run directory")
    storage = open_storage(url, read_only=True)
    if not port_is_free(host, port):
        chosen = free_port(host)
        console.print(f"[yellow]port {port} on {escape(host)} is in use: serving on {chosen} "
                      "instead (choose one with --port)[/]")
        port = chosen
    console.print(f"optuna-dashboard of {escape(redacted(url))} (read-only): "
                  f"http://{escape(host)}:{port}  (Ctrl-C stops it)")
    try:
        optuna_dashboard.run_server(storage, host=host, port=port)
    except KeyboardInterrupt:
        pass
    return 0
