"""Every worker's plan-timer loop: wave steps when they are due, and plan commands' slices.

A plan waits on a time only in Redis (zset `deployer:plan-timers`: a bake's end, a window's
opening, a gate's re-check): this loop, in each worker's main process, sleeps until the
earliest due time (at most `POLL_SECONDS`, so a time another worker wrote is seen soon) and
runs the wave step of every plan that is due, so a bake ends within a second of its time,
not at the next reconciler tick. It never calls a gate itself (the rollout service hands
gate calls to its own pool) and never does more than a bounded slice of a plan command's
job between two looks at the timers. Any number of workers run it at once: a wave step is
one atomic script, a job's slice is taken under a lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from deployer.state import keys
from deployer.state.store import Store, now_ms

log = logging.getLogger("deployer.timers")

#: The longest sleep between two looks at the timers.
POLL_SECONDS = 0.5
#: The shortest (a due time just passed, or a job with slices left).
MIN_SLEEP = 0.02
#: Time given to plan commands' slices per turn of the loop.
JOB_SECONDS = 0.2


class PlanTimers(threading.Thread):
    """Runs `advance(plan_id)` for every due plan and `jobs(seconds)` (plan commands'
    slices) in a loop, until stopped."""

    def __init__(
        self,
        store: Store,
        advance: Callable[[str], object],
        jobs: Callable[[float], int],
        poll: float = POLL_SECONDS,
    ) -> None:
        super().__init__(name="deployer-plan-timers", daemon=True)
        self.store = store
        self.advance = advance
        self.jobs = jobs
        self.poll = poll
        self.stopped = threading.Event()
        self.turns = 0

    def run(self) -> None:
        wait = 0.0
        while not self.stopped.wait(wait):
            try:
                busy = self.turn()
                wait = MIN_SLEEP if busy else self._until_next()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("plan timers: state store unavailable (%s); retrying", exc)
                wait = self.poll
            except Exception:  # the loop must outlive any one bad turn
                log.exception("plan timers: turn failed; retrying")
                wait = self.poll
            self.turns += 1

    def turn(self) -> bool:
        """One look: due wave steps, then a little of the plan commands' jobs. True when
        there is more to do right away."""
        due = self.store.due_plans()
        for plan_id in due:
            try:
                self.advance(plan_id)
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except Exception:  # one plan's bad step must not stop the others'
                log.exception("wave step of plan %s failed; retried when due", plan_id)
        if self.store.r.zcard(keys.PLAN_JOBS):
            self.jobs(JOB_SECONDS)
            return bool(self.store.r.zcard(keys.PLAN_JOBS))
        return len(due) >= 100

    def _until_next(self) -> float:
        nxt = self.store.next_due()
        if nxt is None:
            return self.poll
        return min(self.poll, max(MIN_SLEEP, (nxt - now_ms()) / 1000))

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout)
