"""Process titles name what a process is doing, and are restored afterwards."""

from __future__ import annotations

import setproctitle

from evaluators import process_title


def test_title_is_set_inside_the_block_and_restored_after() -> None:
    before = setproctitle.getproctitle()
    with process_title("trial_3") as title:
        assert setproctitle.getproctitle() == title == "trial_3"
        with process_title("latency meter [cpu]", append=True):
            assert setproctitle.getproctitle() == "trial_3 · latency meter [cpu]"
        assert setproctitle.getproctitle() == "trial_3"
    assert setproctitle.getproctitle() == before


def test_a_ray_worker_keeps_its_prefix() -> None:
    before = setproctitle.getproctitle()
    setproctitle.setproctitle("ray::IDLE")
    try:
        with process_title("trial_3"):
            assert setproctitle.getproctitle() == "ray::trial_3"
    finally:
        setproctitle.setproctitle(before)
