"""Every worker's plan timers: wave steps when they are due, and plan commands' slices.

A plan waits on a time only in Redis (the plan-timers zset: a bake's end, a window's
opening, a gate's re-check): this duty of each worker's maintenance loop
(deployer/maintenance.py) is due again at the earliest due time (at most `POLL_SECONDS`
away, so a time another worker wrote is seen soon) and runs the wave step of every plan
that is due, so a bake ends within a second of its time, not at the next reconciler tick.
It never calls a gate itself (the rollout service hands gate calls to its own pool) and
never does more than a bounded slice of a plan command's job per turn (`JOB_SECONDS`). A
wave step may send a wave's chains, so the loop runs it on a thread of its own. Any number
of workers run it at once: a wave step is one atomic script, a job's slice is taken under
a lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis

from deployer.state.store import Store, now_ms
from deployer.state.workers import plan_jobs_pending

log = logging.getLogger("deployer.timers")

#: The longest wait between two looks at the timers.
POLL_SECONDS = 0.5
#: The shortest (a due time just passed, or a job with slices left).
MIN_SLEEP = 0.02
#: Time given to plan commands' slices per turn.
JOB_SECONDS = 0.2


def advance_due(
    store: Store,
    advance: Callable[[str], object],
    now: int | None = None,
    *,
    logger: logging.Logger = log,
    failed: str = "wave step of plan %s failed; retried when due",
) -> list[str]:
    """Run `advance(plan_id)` for every plan whose due time passed, and say which were due.

    The one loop over due plans: the timers run it when a time is due, the reconciler's
    sweep (deployer/redrive.py `Reconciler.advance_due`) as the backstop for a timer that
    was missed. One plan's bad step is logged (`failed` on `logger`: each caller says who
    retries it) and never stops the others'; a lost connection stops the loop, whose
    caller's next turn retries."""
    due = store.due_plans(now)
    for plan_id in due:
        try:
            advance(plan_id)
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception:  # one plan's bad step must not stop the others'
            logger.exception(failed, plan_id)
    return due


class PlanTimers:
    """Runs `advance(plan_id)` for every due plan and `jobs(seconds)` (plan commands'
    slices); `tick` is one turn and says when the next is due."""

    def __init__(
        self,
        store: Store,
        advance: Callable[[str], object],
        jobs: Callable[[float], int],
        poll: float = POLL_SECONDS,
    ) -> None:
        self.store = store
        self.advance = advance
        self.jobs = jobs
        self.poll = poll

    def tick(self) -> float:
        """One turn; the seconds until the next (`poll` after a failed turn: the loop's)."""
        return MIN_SLEEP if self.turn() else self._until_next()

    def turn(self) -> bool:
        """One look: due wave steps, then a little of the plan commands' jobs. True when
        there is more to do right away."""
        due = advance_due(self.store, self.advance)
        if plan_jobs_pending(self.store.r):
            self.jobs(JOB_SECONDS)
            return plan_jobs_pending(self.store.r)
        return len(due) >= 100

    def _until_next(self) -> float:
        nxt = self.store.next_due()
        if nxt is None:
            return self.poll
        return min(self.poll, max(MIN_SLEEP, (nxt - now_ms()) / 1000))
