"""`nas search` on a real multi-node Ray cluster on this machine (Ray's own multi-node harness:
a head and worker nodes, each a raylet of its own): trials spread over the worker nodes, a
profile's custom resource pins them to the node that has it, a trial worker killed (evaluating
or timing) or a worker node removed mid-search costs no trial, and a killed driver's run
resumes exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.nas_tests.conftest import CPU_QUICK, QUICKSTART, TINY_RUN
from tests.nas_tests.worker_killer import killer, runs_trial

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[object]:
    """A head node that runs no trial (0 CPUs) and two worker nodes of one CPU each; the
    second alone has the custom resource ``hw_cpu``."""
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": 100 * 2**20})
    nodes.workers = [  # type: ignore[attr-defined]
        nodes.add_node(num_cpus=1, object_store_memory=100 * 2**20),
        nodes.add_node(num_cpus=1, resources={"hw_cpu": 1}, object_store_memory=100 * 2**20)]
    nodes.wait_for_nodes()
    try:
        yield nodes
    finally:
        nodes.shutdown()


def workers(cluster: object) -> list[object]:
    """Returns the cluster's worker nodes (the head excluded), in the order they were added."""
    return list(cluster.workers)  # type: ignore[attr-defined]


def search(tmp_path: Path, address: str, *extra: str) -> subprocess.Popen[str]:
    """Starts `nas search` (a driver of its own) on the cluster at ``address``."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "nas._cli", "search", str(QUICKSTART), "--run-dir",
         str(tmp_path / "run"), *TINY_RUN, "--set", f"ray.address={address}",
         "--set", "compress.enabled=false", *extra],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str]) -> str:
    out = proc.communicate(timeout=1200)[0]
    assert proc.returncode == 0, out[-5000:]
    return out


def test_trials_run_on_more_than_one_node(cluster: object, tmp_path: Path) -> None:
    out = finish(search(tmp_path, cluster.address,  # type: ignore[attr-defined]
                        "--set", "search.n_trials=6"))
    frame = pd.read_parquet(tmp_path / "run" / "trials.parquet")
    assert (frame["state"] == "COMPLETE").all(), frame[["state", "error"]]
    per_node = frame["node"].value_counts()
    ids = {node.node_id: f"worker {i + 1}" for i, node in enumerate(workers(cluster))}
    assert set(per_node.index) <= set(ids), "a trial ran on the head, which has no CPU for it"
    assert len(per_node) == 2, per_node
    print({ids[n]: int(c) for n, c in per_node.items()}, out[-300:])


def test_a_custom_resource_pins_every_measurement_to_its_node(cluster: object,
                                                               tmp_path: Path) -> None:
    profile = yaml.safe_load(CPU_QUICK.read_text())
    profile.update(name="cpu-hw-node", resources={"CPU": 1, "hw_cpu": 1})
    path = tmp_path / "cpu-hw-node.yaml"
    path.write_text(yaml.safe_dump(profile))
    finish(search(tmp_path, cluster.address,  # type: ignore[attr-defined]
                  "--set", f"hardware.profile={path}", "--set", "search.n_trials=4"))
    frame = pd.read_parquet(tmp_path / "run" / "trials.parquet")
    assert (frame["state"] == "COMPLETE").all(), frame[["state", "error"]]
    hw_node = workers(cluster)[1].node_id  # type: ignore[attr-defined]
    assert set(frame["node"]) == {hw_node}


def test_a_worker_node_removed_mid_search_costs_no_trial(cluster: object, tmp_path: Path) -> None:
    """The node running trial 2 is removed while it evaluates: the trial runs again on the
    node left, and the search ends with every trial COMPLETE."""
    import psutil

    proc = search(tmp_path, cluster.address,  # type: ignore[attr-defined]
                  "--set", "search.n_trials=5")
    removed: list[str] = []

    def remove_the_node_of_trial_2() -> None:
        deadline = time.monotonic() + 900
        while not removed and proc.poll() is None and time.monotonic() < deadline:
            for node in workers(cluster):
                raylet = node.all_processes.get("raylet")  # type: ignore[attr-defined]
                if not raylet:
                    continue
                try:
                    tree = psutil.Process(raylet[0].process.pid).children(recursive=True)
                except psutil.Error:
                    continue
                if any(runs_trial(" ".join(p.cmdline()), "trial_2") for p in tree
                       if p.is_running()):
                    removed.append(node.node_id)  # type: ignore[attr-defined]
                    cluster.remove_node(node, allow_graceful=False)  # type: ignore[attr-defined]
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=remove_the_node_of_trial_2, daemon=True)
    thread.start()
    try:
        out = finish(proc)
    finally:
        thread.join(timeout=5)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    assert removed, f"trial 2 was never seen running on a worker node\n{out[-3000:]}"
    frame = pd.read_parquet(tmp_path / "run" / "trials.parquet").set_index("number")
    assert len(frame) == 5 and (frame["state"] == "COMPLETE").all(), frame[["state", "error"]]
    assert frame.loc[2, "retries"] >= 1 and frame.loc[2, "node"] != removed[0]
    assert "trial 2: its worker process or node died" in " ".join(out.split())


def test_a_killed_trial_worker_on_a_cluster_is_run_again(cluster: object,
                                                         copy_run: Callable[[str], Path]) -> None:
    """Trial 3's worker killed while it evaluates, trial 4's while its latency is timed: both
    run again and the search ends with every trial COMPLETE."""
    run = copy_run("run")  # 3 trials done
    with killer({"trial_3": "compute", "trial_4": "latency"}) as killed:
        out = finish(search(run.parent, cluster.address,  # type: ignore[attr-defined]
                            "--set", "search.n_trials=5"))
    assert killed["trial_3"] and killed["trial_4"], f"no worker was killed: {killed}\n{out[-3000:]}"
    frame = pd.read_parquet(run / "trials.parquet").set_index("number")
    assert len(frame) == 5 and (frame["state"] == "COMPLETE").all(), frame[["state", "error"]]
    assert frame.loc[3, "retries"] == 1 and frame.loc[4, "retries"] == 1
    assert "trial 4: its worker process or node died" in " ".join(out.split())


def test_a_killed_driver_on_a_cluster_resumes_exactly(cluster: object,
                                                      copy_run: Callable[[str], Path]) -> None:
    """The driver SIGKILLed while trial 3 runs on a worker node: run again, the finished trials
    are kept as they were, trial 3 is closed as interrupted (it does not count), and the search
    goes on to n_trials."""
    import psutil

    from nas._study import INTERRUPTED

    run = copy_run("run")
    before = pd.read_parquet(run / "trials.parquet")
    proc = search(run.parent, cluster.address,  # type: ignore[attr-defined]
                  "--set", "search.n_trials=5", "--set", "search.max_concurrent=1")
    deadline = time.monotonic() + 900
    while proc.poll() is None and time.monotonic() < deadline:
        if any(runs_trial(" ".join(p.info["cmdline"] or []), "trial_3")
               for p in psutil.process_iter(["cmdline"])):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == -signal.SIGKILL, f"trial 3 was never seen running\n{out[-3000:]}"

    again = finish(search(run.parent, cluster.address,  # type: ignore[attr-defined]
                          "--set", "search.n_trials=5", "--set", "search.max_concurrent=1"))
    assert "3 trials kept" in again, again[-3000:]
    frame = pd.read_parquet(run / "trials.parquet")
    assert frame.loc[3, "state"] == "FAIL" and frame.loc[3, "error"] == INTERRUPTED
    counted = frame[frame["error"] != INTERRUPTED]
    assert len(counted) == 5 and (counted["state"] == "COMPLETE").all(), frame[["state", "error"]]
    columns = ["number", "state", "accuracy", "latency_ms", "arch"]
    pd.testing.assert_frame_equal(frame.iloc[:3][columns], before[columns])
