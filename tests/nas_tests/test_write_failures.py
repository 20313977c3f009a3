"""Failed writes: a full disk (ENOSPC), a read-only file system (EROFS) and a run directory
this user may not write (EACCES).

Each exits 2 with a message naming the file (the run directory, for its SQLite databases) and
the cause. No temporary file stays behind, a report the run has outgrown is renamed
report.stale.html, and the same command resumes once the disk is writable again. A read-only
run directory still reports elsewhere (-o).

The disks are tmpfs mounts on directories these tests create (root only; skipped where
mounting is not permitted); the other user is a subprocess that cannot bypass permissions."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from evaluators import WriteError, atomic_write_text
from evaluators.latency import LatencyCache
from evaluators.latency._latency import Latency
from nas import RunDir
from nas._cli import _writing, main
from tests.nas_tests.conftest import QUICKSTART, ROOT, TINY_RUN, run_nas

pytestmark = pytest.mark.slow  # most tests copy the session's finished run

MIB = 2**20
NO_SPACE = "No space left on device"
READ_ONLY = "Read-only file system"
DENIED = "Permission denied"
#: what SQLite says of a full disk (its own words: it gives no errno)
SQLITE_FULL = "database or disk is full"


class Disk:
    """A tmpfs mounted on a directory of the test's own: filled, freed, remounted."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def free_bytes(self) -> int:
        """Returns the bytes still free on the disk."""
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Grows the filler file until at most ``leave`` bytes are free."""
        with open(self.filler, "ab", buffering=0) as handle:
            while (free := self.free_bytes()) > leave:
                try:
                    handle.write(b"\0" * min(free - leave, 4 * MIB))
                except OSError:  # full: tmpfs counts whole pages
                    break
        assert self.free_bytes() <= leave

    def free(self) -> None:
        """Removes the filler file."""
        self.filler.unlink()

    def remount(self, option: str) -> None:
        """Remounts the disk with ``option`` (``ro``, ``rw``)."""
        subprocess.run(["mount", "-o", f"remount,{option}", str(self.root)], check=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    """Returns a 96 MiB tmpfs mounted on ``tmp_path/disk`` (unmounted afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount(8) here to mount a tmpfs")
    root = tmp_path / "disk"
    root.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={96 * MIB}", "tmpfs",
                              str(root)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield Disk(root)
    finally:
        if subprocess.run(["umount", str(root)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(root)], check=False)  # busy: detach it


@pytest.fixture
def run_on_disk(finished_run: Path, disk: Disk) -> Path:
    """Returns a copy of the finished run on ``disk``."""
    target = disk.root / "run"
    shutil.copytree(finished_run, target, ignore=shutil.ignore_patterns(".lock"))
    return target


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long paths stay on one line of output."""
    monkeypatch.setenv("COLUMNS", "1000")


def _nas(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Returns the exit status of ``nas ARGV`` (run in this process) and what it printed."""
    status = main(argv)
    captured = capsys.readouterr()
    return status, " ".join((captured.out + captured.err).split())


def _search_argv(run: Path, *extra: str) -> list[str]:
    """Returns the arguments of ``nas search`` that resume the finished run in ``run``."""
    return ["search", str(QUICKSTART), "--run-dir", str(run), *TINY_RUN, *extra]


def _leftovers(run: Path) -> list[str]:
    """Returns the temporary files of atomic writes left in ``run``."""
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*.tmp"))


def _error_line(out: str) -> str:
    """Returns the ``error:`` message in ``out`` (the CLI's last word on a user error)."""
    assert "error: " in out, out
    return out[out.rindex("error: "):]


# -- a full disk ------------------------------------------------------------------------------


def test_an_atomic_write_to_a_full_disk_names_the_file_and_leaves_the_old_one(
    disk: Disk,
) -> None:
    target = disk.root / "stages.json"
    target.write_text("old")
    disk.fill()
    with pytest.raises(WriteError) as caught:
        atomic_write_text(target, "x" * 100_000)
    assert str(caught.value).startswith(f"cannot write {target}: {NO_SPACE};")
    assert target.read_text() == "old"
    assert _leftovers(disk.root) == []


def test_weights_saved_to_a_full_disk_name_the_file_and_leave_nothing(disk: Disk) -> None:
    run = RunDir(disk.root / "run")
    run.root.mkdir()
    disk.fill()
    with pytest.raises(WriteError) as caught:
        run.save_state_dict(run.supernet, {"weight": torch.zeros(64, 64)})
    assert str(caught.value).startswith(f"cannot write {run.supernet}: {NO_SPACE};")
    assert list(run.root.iterdir()) == []


def test_a_sound_latency_cache_on_a_full_disk_is_not_set_aside_as_damaged(disk: Disk) -> None:
    path = disk.root / "latency_cache.db"
    cache = LatencyCache(path)
    cache.put("arch", "fingerprint", (1, 1, 8, 8), Latency.from_samples([1.0, 1.2, 1.1]))
    cache.close()
    disk.fill()  # opening it in WAL mode cannot size its -shm file: "disk I/O error"
    assert LatencyCache.set_aside_if_damaged(path) is None
    assert path.exists() and not path.with_name(path.name + ".damaged").exists()


def test_a_full_disk_stops_compress_and_report_which_resume_once_freed(
    run_on_disk: Path, disk: Disk, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_on_disk
    report, stale = run / "report.html", run / "report.stale.html"
    old_report = report.read_bytes()
    assert len(old_report) > MIB  # the write that cannot fit in what is left
    disk.fill(leave=MIB // 2)

    status, out = _nas(["compress", str(run)], capsys)
    assert status == 2, out
    assert _error_line(out).startswith(f"error: cannot write {report}: {NO_SPACE}; "), out
    assert "run the same command again to resume" in out
    assert _leftovers(run) == []
    assert not report.exists(), "a report that no longer describes the run looks current"
    assert stale.read_bytes() == old_report
    assert (run / "latency_cache.db").exists()
    assert not list(run.glob("*.damaged"))

    status, out = _nas(["report", str(run)], capsys)  # still full
    assert status == 2, out
    assert _error_line(out).startswith(f"error: cannot write {report}: {NO_SPACE}; "), out
    assert _leftovers(run) == [] and not report.exists() and stale.exists()

    disk.free()
    status, out = _nas(["compress", str(run)], capsys)
    assert status == 0, out
    assert report.stat().st_size > MIB and not stale.exists()
    assert "compress" in json.loads((run / "stages.json").read_text())


def test_a_search_on_a_full_disk_exits_2_naming_the_file_and_resumes(
    run_on_disk: Path, disk: Disk, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_on_disk
    config = (run / "config.yaml").read_bytes()
    disk.fill()
    status, out = _nas(_search_argv(run), capsys)
    assert status == 2, out
    assert _error_line(out).startswith(
        f"error: cannot write {run / 'config.yaml'}: {NO_SPACE}; "), out
    assert (run / "config.yaml").read_bytes() == config
    assert _leftovers(run) == []

    disk.free()
    status, out = _nas(_search_argv(run), capsys)
    assert status == 0, out
    assert "supernet: already trained" in out and not (run / "report.stale.html").exists()


def test_a_disk_that_fills_during_the_search_exits_2_and_the_search_resumes(
    run_on_disk: Path, disk: Disk, tmp_path: Path
) -> None:
    run = run_on_disk
    more = ["--set", "search.n_trials=4", "--set", "compress.enabled=false"]
    disk.fill(leave=64 * 1024)  # the config fits; the trial's records (or the report) do not
    proc = run_nas(*_search_argv(run, *more), cwd=tmp_path)  # Ray: in a process of its own
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, out
    error = _error_line(" ".join(proc.stdout.split()))
    assert str(run) in error and (NO_SPACE in error or SQLITE_FULL in error), out
    assert "run the same command again to resume" in error
    assert _leftovers(run) == []
    assert not (run / "report.html").exists() and (run / "report.stale.html").exists()

    disk.free()
    proc = run_nas(*_search_argv(run, *more), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert RunDir(run).done_stages()["search"]["trials"] == 4
    assert (run / "report.html").exists() and not (run / "report.stale.html").exists()


def test_an_exception_chain_that_loops_back_is_reraised_not_walked_forever(
    tmp_path: Path,
) -> None:
    first, second = ValueError("first"), ValueError("second")
    first.__context__, second.__context__ = second, first
    raised: list[BaseException] = []

    def write() -> None:
        try:
            with _writing(RunDir(tmp_path / "run")):
                raise first
        except ValueError as exc:
            raised.append(exc)

    worker = threading.Thread(target=write, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the error handler loops over the exception chain"
    assert raised == [first]


# -- a read-only file system ------------------------------------------------------------------


def test_a_read_only_run_reports_elsewhere_and_refuses_writes_into_it(
    run_on_disk: Path, disk: Disk, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_on_disk
    before = sorted(p.name for p in run.iterdir())
    disk.remount("ro")
    try:
        elsewhere = tmp_path / "out" / "report.html"
        status, out = _nas(["report", str(run), "-o", str(elsewhere)], capsys)
        assert status == 0, out
        assert elsewhere.stat().st_size > MIB and str(elsewhere) in out

        status, out = _nas(["report", str(run)], capsys)
        assert status == 2, out
        assert _error_line(out) == (f"error: cannot write {run / 'report.html'}: {READ_ONLY}; "
                                    "write the report elsewhere with -o FILE"), out

        for argv in (["compress", str(run)], _search_argv(run)):
            status, out = _nas(argv, capsys)
            assert status == 2, out
            assert _error_line(out).startswith(f"error: {run / '.lock'}: cannot create the run "
                                               f"directory's lock ({READ_ONLY}); "), out
        assert sorted(p.name for p in run.iterdir()) == before
    finally:
        disk.remount("rw")


# -- a run directory this user may not write --------------------------------------------------

#: checks that a user can run the CLI and read ``argv[1]`` but not write into it
_PROBE = """
import sys
from pathlib import Path
import nas._cli
run = Path(sys.argv[1])
(run / "config.yaml").read_bytes()
try:
    (run / ".probe").write_text("x")
except PermissionError:
    print("denied")
"""


def _other_users() -> list[tuple[str, list[str]]]:
    """Returns ways to run a command as a user that file permissions apply to: ``nobody``,
    and root without the capabilities that bypass them."""
    found: list[tuple[str, list[str]]] = []
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        return found
    try:
        nobody = pwd.getpwnam("nobody")
        found.append(("nobody", ["setpriv", f"--reuid={nobody.pw_uid}",
                                 f"--regid={nobody.pw_gid}", "--clear-groups"]))
    except KeyError:
        pass
    found.append(("root without CAP_DAC_OVERRIDE",
                  ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]))
    return found


def _as_user(prefix: list[str], *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Returns the finished ``python ARGV`` run through ``prefix`` (another user)."""
    env = {**os.environ, "COLUMNS": "1000", "PYTHONPATH": str(ROOT)}
    return subprocess.run([*prefix, sys.executable, *argv], capture_output=True, text=True,
                          cwd=cwd, env=env, check=False, timeout=600)


@pytest.fixture
def unwritable_run(copy_run: Callable[[str], Path],
                   tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """Returns a copy of the finished run that a user can read but not write, and the command
    prefix that runs as that user (skips where no such user can run the CLI)."""
    run = copy_run("run")
    for path in [run, *run.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        reasons = []
        for who, prefix in _other_users():
            probe = _as_user(prefix, "-c", _PROBE, str(run), cwd=tmp_path)
            if probe.returncode == 0 and probe.stdout.strip() == "denied":
                yield run, prefix
                break
            reasons.append(f"{who}: {(probe.stderr.strip().splitlines() or ['?'])[-1]}")
        else:
            pytest.skip("no user bound by file permissions can run the CLI here "
                        f"({'; '.join(reasons) or 'not root, or no setpriv'})")
    finally:
        for path in [run, *run.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_a_run_directory_the_user_may_not_write_reports_elsewhere_and_exits_2_writing_it(
    unwritable_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    run, prefix = unwritable_run
    out_dir = tmp_path / "out"
    out_dir.mkdir(mode=0o777)
    out_dir.chmod(0o777)
    elsewhere = out_dir / "report.html"
    before = sorted(p.name for p in run.iterdir())

    proc = _as_user(prefix, "-m", "nas._cli", "report", str(run), "-o", str(elsewhere),
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert elsewhere.stat().st_size > MIB

    proc = _as_user(prefix, "-m", "nas._cli", "report", str(run), cwd=tmp_path)
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert _error_line(out) == (f"error: cannot write {run / 'report.html'}: {DENIED}; write "
                                "the report elsewhere with -o FILE"), out

    proc = _as_user(prefix, "-m", "nas._cli", "compress", str(run), cwd=tmp_path)
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert _error_line(out).startswith(f"error: {run / '.lock'}: cannot create the run "
                                       f"directory's lock ({DENIED}); "), out
    assert sorted(p.name for p in run.iterdir()) == before
