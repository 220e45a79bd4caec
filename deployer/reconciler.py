"""The reconciler: re-drives tasks whose lease expired while they ran, from their checkpoint.

A worker killed with `kill -9`, a lost message or a stalled broker leaves a task RUNNING with
nobody renewing its tenant lease. Every worker runs a `Reconciler` on a timer; its claim is
one Lua script (deployer/state/lua/reconcile_claim.lua), so with many workers each stuck task is
claimed exactly once. A claim issues a new token, which fences off any straggler of the old
run, counts a redelivery (capped by `max_redeliveries`; beyond it the task goes FAILED with
the reason) and returns the stored checkpoint context for the caller to re-send.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from deployer.errors import Code, ScriptReplyError
from deployer.state import keys, scripts
from deployer.state.store import Dispatch, Slot, Store, now_ms

log = logging.getLogger("deployer.reconciler")

#: Tasks claimed per round trip; a sweep repeats while batches come back full.
BATCH = 200
#: Round trips per sweep at most (bounded loop): 200 * 50 = 10,000 tasks per tick.
MAX_BATCHES = 50


@dataclass(frozen=True)
class ClaimRecord:
    """One record of a claim script's reply (reconcile_claim.lua, orphan_claim.lua)."""

    #: 'R' re-drive the task from its checkpoint, 'F' it failed (redelivery cap reached).
    kind: str
    task_id: str
    plan_id: str
    #: R: the new token; the rest of an F record is ''.
    token: str
    run_id: str
    #: '' when the task's run was never stored (then built from config_json).
    run_json: str
    ctx_json: str
    config_json: str


@dataclass
class SweepResult:
    redriven: list[Slot] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (task_id, plan_id)

    @classmethod
    def from_reply(cls, raw: list[str]) -> SweepResult:
        """A claim script's reply (reconcile_claim.lua, orphan_claim.lua): `ClaimRecord`s."""
        result = cls()
        for r in scripts.records(ClaimRecord, raw, "claim"):
            if r.kind == "F":
                result.failed.append((r.task_id, r.plan_id))
            elif r.kind == "R":
                slot = Slot(r.task_id, r.plan_id, r.token, r.run_id, r.run_json, r.ctx_json,
                            r.config_json)  # fmt: skip
                result.redriven.append(slot)
            else:
                raise ScriptReplyError(f"claim script answered record kind {r.kind!r}")
        return result


class Reconciler:
    """Finds and re-drives stuck tasks; `launch` sends their chains (`Planner.launch`, which
    also builds a run never stored and fails a task whose record is unreadable), `refill`
    fills a plan's slots. `advance` (optional) also runs, at each sweep, the wave step of
    every plan whose due time in `deployer:plan-timers` passed; a worker leaves that to its
    plan-timer loop (deployer/timers.py), which wakes when a time is due instead of at the
    next sweep."""

    def __init__(
        self,
        store: Store,
        launch: Callable[[list[Slot]], list[Dispatch]],
        refill: Callable[[str], object],
        advance: Callable[[str], object] | None = None,
    ) -> None:
        self.store = store
        self.launch = launch
        self.refill = refill
        self.advance = advance
        self._claim = scripts.load(store.r, "reconcile_claim")

    def claim(self, now: int | None = None, batch: int = BATCH) -> SweepResult:
        """One atomic claim of up to `batch` overdue tasks (no messages sent)."""
        s = self.store.settings
        raw = self._claim(
            keys=[keys.INFLIGHT, keys.EVENTS],
            args=[
                now if now is not None else now_ms(),
                int(s.lease_ttl_seconds * 1000),
                s.max_redeliveries,
                keys.TASK.format(task_id=""),
                keys.LEASE.format(tenant_id=""),
                keys.PLAN.format(plan_id=""),
                batch,
                s.events_maxlen,
                int(s.pending_grace_seconds * 1000),
                Code.REDELIVERY_LIMIT_REACHED,
            ],
        )
        return SweepResult.from_reply(raw)

    def sweep(self, now: int | None = None) -> SweepResult:
        """Claim every overdue task (bounded), re-send their chains, refill failed plans."""
        total = SweepResult()
        sent: list[Dispatch] = []
        for _ in range(MAX_BATCHES):
            part = self.claim(now)
            if part.redriven:
                sent += self.launch(part.redriven)
            for _task_id, plan_id in part.failed:
                self._refill(plan_id)
            total.redriven += part.redriven
            total.failed += part.failed
            if len(part.redriven) + len(part.failed) < BATCH:
                break
        for d in sent:
            log.warning(
                "re-driving task %s (tenant %s) from stage %d: its lease expired",
                d.task_id,
                d.context.tenant_id,
                d.context.stage_index,
            )
        for task_id, _plan_id in total.failed:
            log.error("task %s FAILED: lease expired more than the redelivery cap", task_id)
        if self.advance is not None:
            self.advance_due(now)
        return total

    def _refill(self, plan_id: str) -> None:
        """One plan that cannot be refilled never stops the sweep for the others."""
        try:
            self.refill(plan_id)
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception:
            log.exception("reconciler: refilling plan %s failed; next sweep retries", plan_id)

    def advance_due(self, now: int | None = None) -> list[str]:
        """Run the wave step of every plan whose due time passed (durable waits: whichever
        worker wrote the due time, any live one acts on it)."""
        assert self.advance is not None
        due = self.store.due_plans(now)
        for plan_id in due:
            try:
                self.advance(plan_id)
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except Exception:  # one plan's bad step must not stop the others'
                log.exception("wave step of plan %s failed; next tick retries", plan_id)
        return due


class ReconcilerThread(threading.Thread):
    """Runs `sweep` every `interval` seconds (with jitter, so workers spread out) until stopped."""

    def __init__(self, reconciler: Reconciler, interval: float) -> None:
        super().__init__(name="deployer-reconciler", daemon=True)
        self.reconciler = reconciler
        self.interval = interval
        self.stopped = threading.Event()
        self.sweeps = 0

    def run(self) -> None:
        # A generator of its own: the module-level one is shared process state (and touching
        # it from this thread is what hypothesis flagged in the tests' worker process).
        jitter = random.Random()
        while not self.stopped.wait(self.interval * jitter.uniform(0.75, 1.25)):
            try:
                self.reconciler.sweep()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("reconciler: state store unavailable (%s); next tick retries", exc)
            except Exception:  # the timer must outlive any one bad sweep
                log.exception("reconciler sweep failed; next tick retries")
            self.sweeps += 1

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout)
