"""A worker's maintenance loop: every periodic duty of a worker process, on one schedule.

Each duty (the heartbeat, the reconciler, the plan timers, the notification claim, the
retention pass: tasks/worker.py lists them) has its own period and next-due time; the loop
sleeps until the earliest one is due, runs what is due, and sets each duty's next time from
its period (with jitter if it asks: workers then spread out) or, for a `paced` duty, from
what its pass answered (the plan timers know when the next bake ends). A duty that fails is
logged and counted (`failures`) and due again after its period; it never stops the others or
the loop.

A duty whose pass is short and bounded (one script call) runs on the loop's own thread. A
duty whose pass may run long — a reconcile sweep of thousands of overdue tasks, a wave step
that sends a wave's chains, a retention pass of up to a minute — or that must never wait
behind another (the heartbeat: a late beat reads as a death) is `runs_long`: it runs on a
thread of its own, started and timed by the loop, while the loop goes on with the others;
it is not started again before its pass ends. So no duty's pass delays another's more than
when each had a thread of its own: the loop only waits on the short ones.

`stop()` ends the loop and waits for the duties running (each sees `stopped` and returns
within its own bound), then runs the duties' `stop` hooks in reverse order (the heartbeat's
removes this worker from the registry last).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

log = logging.getLogger("deployer.maintenance")


@dataclass(frozen=True)
class Duty:
    """One periodic duty of the loop."""

    name: str
    #: One pass (what it answers is ignored unless the duty is `paced`).
    run: Callable[[], object]
    #: Seconds between two passes (and after a failed one).
    every: float
    #: `run` answers the seconds until it is due again (the plan timers know when the next
    #: bake ends); `every` only applies after a failed pass.
    paced: bool = False
    #: Seconds before its first pass.
    first: float = 0.0
    #: Each period is drawn from every * [1 - jitter, 1 + jitter] (workers spread out).
    jitter: float = 0.0
    #: Runs on a thread of its own, so its length never delays another duty.
    runs_long: bool = False
    #: Called once when the loop stops, after every pass ended (errors are logged).
    stop: Callable[[], None] | None = None


class _Runner(threading.Thread):
    """The thread of one `runs_long` duty: one pass each time the loop says go."""

    def __init__(self, loop: MaintenanceLoop, duty: Duty) -> None:
        super().__init__(name=f"deployer-{duty.name}", daemon=True)
        self.loop, self.duty = loop, duty
        self.go = threading.Event()
        self.busy = False

    def start_pass(self) -> None:
        self.busy = True
        self.go.set()

    def run(self) -> None:
        while True:
            self.go.wait()
            self.go.clear()
            if self.loop.stopped.is_set():
                return
            self.loop.run_pass(self.duty)
            self.busy = False
            self.loop.wake()


class MaintenanceLoop(threading.Thread):
    """Runs `duties` each when due, until `stop()`; `runs` and `failures` count passes."""

    def __init__(
        self,
        duties: Sequence[Duty],
        stopped: threading.Event | None = None,
        name: str = "deployer-maintenance",
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        names = [d.name for d in duties]
        if len(set(names)) != len(names):
            raise ValueError(f"duty names must be unique: {names}")
        self.duties = list(duties)
        #: Set by `stop()`; a duty that runs long may be given it to end its pass early.
        self.stopped = stopped or threading.Event()
        self.runs: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        #: Told the duty's name after each failed pass (the worker counts it in Redis for the
        #: exporter, so a duty failing on every worker shows as a metric and an alert).
        self.on_failure = on_failure
        self._woken = threading.Event()
        # A generator of its own: the module-level one is shared process state (and touching
        # it from a thread is what hypothesis flagged in the tests' worker process).
        self._random = random.Random()
        start = time.monotonic()
        self._due = {d.name: start + d.first for d in self.duties}
        self._runners = {d.name: _Runner(self, d) for d in self.duties if d.runs_long}

    def wake(self) -> None:
        """Look at the schedule now (a long duty's pass ended)."""
        self._woken.set()

    def run(self) -> None:
        for started in self._runners.values():
            started.start()
        while not self.stopped.is_set():
            for duty in self.duties:
                if self.stopped.is_set():
                    break
                if self._due[duty.name] > time.monotonic() or self._busy(duty):
                    continue
                runner = self._runners.get(duty.name)
                if runner is not None:
                    runner.start_pass()
                else:
                    self.run_pass(duty)
            self._woken.wait(self._until_next())
            self._woken.clear()

    def _busy(self, duty: Duty) -> bool:
        runner = self._runners.get(duty.name)
        return runner is not None and runner.busy

    def _until_next(self) -> float | None:
        waiting = [self._due[d.name] for d in self.duties if not self._busy(d)]
        if not waiting:
            return None  # every duty is running: a runner's end wakes the loop
        return max(0.0, min(waiting) - time.monotonic())

    def run_pass(self, duty: Duty) -> None:
        """One pass of `duty`, whatever it raises; its next due time set after it."""
        after: float | None = None
        try:
            answer = duty.run()
            if duty.paced and isinstance(answer, int | float):
                after = float(answer)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._failed(duty)
            log.warning("%s: state store unavailable (%s); retrying", duty.name, exc)
        except Exception:  # one bad pass must never stop this duty or the others
            self._failed(duty)
            log.exception("%s failed; retrying", duty.name)
        self.runs[duty.name] += 1
        self._due[duty.name] = time.monotonic() + (
            after if after is not None else self._period(duty)
        )

    def _failed(self, duty: Duty) -> None:
        self.failures[duty.name] += 1
        if self.on_failure is None:
            return
        try:
            self.on_failure(duty.name)
        except Exception as exc:  # the store that failed the pass may fail its count too
            log.debug("%s: failure not counted (%s)", duty.name, exc)

    def _period(self, duty: Duty) -> float:
        if not duty.jitter:
            return duty.every
        return duty.every * self._random.uniform(1 - duty.jitter, 1 + duty.jitter)

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop, wait (up to `timeout` each) for the passes running, then run the
        duties' stop hooks, last duty first."""
        self.stopped.set()
        self.wake()
        if self.is_alive():
            self.join(timeout)
        for runner in self._runners.values():
            runner.go.set()
            if runner.is_alive():
                runner.join(timeout)
        for duty in reversed(self.duties):
            if duty.stop is None:
                continue
            try:
                duty.stop()
            except Exception:  # noqa: BLE001 - a stop hook's failure must not skip the others
                log.warning("%s: stop failed", duty.name, exc_info=True)
