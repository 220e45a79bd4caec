"""The maintenance loop with real threads: each duty on its own schedule, a failing duty
counted and never stopping the others, a long duty never holding up the short ones, and a
clean stop that runs the stop hooks last duty first."""

from __future__ import annotations

import threading

import pytest

from deployer.maintenance import Duty, MaintenanceLoop
from tests.helpers import wait_for


def test_a_failing_duty_is_counted_and_the_others_keep_running() -> None:
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("a bad pass")

    loop = MaintenanceLoop([
        Duty("broken", broken, 0.01),
        Duty("healthy", lambda: ran.append("healthy"), 0.01),
    ])  # fmt: skip
    loop.start()
    try:
        wait_for(lambda: loop.failures["broken"] >= 3 and len(ran) >= 3, what="both go on")
    finally:
        loop.stop()
    assert loop.failures["healthy"] == 0
    assert loop.runs["broken"] >= loop.failures["broken"]
    assert not loop.is_alive()


def test_a_long_duty_runs_on_its_own_thread_while_the_short_ones_go_on() -> None:
    release = threading.Event()
    threads: set[str] = set()
    short_runs: list[int] = []

    def long_pass() -> None:
        threads.add(threading.current_thread().name)
        release.wait(10)

    loop = MaintenanceLoop([
        Duty("sweep", long_pass, 0.01, runs_long=True),
        Duty("tick", lambda: short_runs.append(1), 0.01),
    ])  # fmt: skip
    loop.start()
    try:
        wait_for(lambda: loop.runs["tick"] >= 20, what="short passes while the long one runs")
        assert loop.runs["sweep"] == 0  # its first pass has not ended: never started twice
        assert threads == {"deployer-sweep"}
        release.set()
        wait_for(lambda: loop.runs["sweep"] >= 2, what="the long duty due again after its end")
    finally:
        release.set()
        loop.stop()


def test_a_paced_duty_is_due_again_when_it_says_the_others_after_their_period() -> None:
    stamps: list[int] = []

    def paced() -> float:
        stamps.append(1)
        return 0.0 if len(stamps) < 5 else 3600.0  # soon, soon, ..., then in an hour

    loop = MaintenanceLoop([
        Duty("paced", paced, 3600.0, paced=True),
        Duty("later", lambda: stamps.append(2), 1.0, first=3600.0),
        Duty("counted", lambda: 0, 3600.0),  # a count it answers is no time
    ])  # fmt: skip
    loop.start()
    try:
        wait_for(lambda: loop.runs["paced"] == 5, what="five passes it asked for")
    finally:
        loop.stop()
    assert loop.runs["paced"] == 5 and loop.runs["later"] == 0 and loop.runs["counted"] == 1


def test_stop_ends_the_passes_then_runs_the_stop_hooks_last_duty_first() -> None:
    stopped: list[str] = []
    began = threading.Event()
    event = threading.Event()

    def long_pass() -> None:
        began.set()
        event.wait(10)  # ends when the loop stops (the event it was given)

    loop = MaintenanceLoop(
        [
            Duty("first", lambda: None, 0.01, stop=lambda: stopped.append("first")),
            Duty("long", long_pass, 0.01, runs_long=True, stop=lambda: stopped.append("long")),
        ],
        stopped=event,
    )
    loop.start()
    began.wait(10)
    loop.stop()
    assert stopped == ["long", "first"]
    assert not loop.is_alive()
    assert not any(t.name == "deployer-long" and t.is_alive() for t in threading.enumerate())


def test_duty_names_are_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        MaintenanceLoop([Duty("a", lambda: None, 1.0), Duty("a", lambda: None, 1.0)])
