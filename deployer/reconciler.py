"""The reconciler: re-drives tasks whose lease expired while they ran, from their checkpoint.

A worker killed with `kill -9`, a lost message or a stalled broker leaves a task RUNNING with
nobody renewing its tenant lease. Every worker runs a `Reconciler` on a timer; its claim is
one Lua script (deployer/lua/reconcile_claim.lua), so with many workers each stuck task is
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
from importlib import resources

import redis

from deployer import keys
from deployer.models import Run, TaskRuntimeContext
from deployer.store import Dispatch, Store, now_ms

log = logging.getLogger("deployer.reconciler")

#: Tasks claimed per round trip; a sweep repeats while batches come back full.
BATCH = 200
#: Round trips per sweep at most (bounded loop): 200 * 50 = 10,000 tasks per tick.
MAX_BATCHES = 50


def _script_text(name: str) -> str:
    root = resources.files("deployer")
    prelude = root.joinpath("lua/_prelude.lua").read_text()
    return prelude + "\n" + root.joinpath(f"lua/{name}.lua").read_text()


@dataclass
class SweepResult:
    redriven: list[Dispatch] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (task_id, plan_id)
    invalid: list[str] = field(default_factory=list)  # task ids whose stored run is unreadable


class Reconciler:
    """Finds and re-drives stuck tasks; `send` sends chains, `refill` fills a plan's slots."""

    def __init__(
        self,
        store: Store,
        send: Callable[[list[Dispatch]], None],
        refill: Callable[[str], object],
    ) -> None:
        self.store = store
        self.send = send
        self.refill = refill
        self._claim = store.r.register_script(_script_text("reconcile_claim"))

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
            ],
        )
        result = SweepResult()
        for i in range(0, len(raw), 6):
            kind, task_id, plan_id, token, run_json, ctx_json = raw[i : i + 6]
            if kind == "F":
                result.failed.append((task_id, plan_id))
                continue
            try:
                run = Run.model_validate_json(run_json)
                ctx = TaskRuntimeContext.model_validate_json(ctx_json)
            except ValueError:
                # Cannot happen for tasks we wrote; never let one bad record stop a sweep.
                result.invalid.append(task_id)
                continue
            ctx.token = token
            result.redriven.append(Dispatch(task_id, token, run, ctx))
        return result

    def sweep(self) -> SweepResult:
        """Claim every overdue task (bounded), re-send their chains, refill failed plans."""
        total = SweepResult()
        for _ in range(MAX_BATCHES):
            part = self.claim()
            if part.redriven:
                self.send(part.redriven)
            for _task_id, plan_id in part.failed:
                self.refill(plan_id)
            total.redriven += part.redriven
            total.failed += part.failed
            total.invalid += part.invalid
            if len(part.redriven) + len(part.failed) + len(part.invalid) < BATCH:
                break
        for d in total.redriven:
            log.warning(
                "re-driving task %s (tenant %s) from stage %d with token %s: its lease expired",
                d.task_id,
                d.context.tenant_id,
                d.context.stage_index,
                d.token,
            )
        for task_id, _plan_id in total.failed:
            log.error("task %s FAILED: lease expired more than the redelivery cap", task_id)
        for task_id in total.invalid:
            log.error("task %s: stored run unreadable; left for an operator", task_id)
        return total


class ReconcilerThread(threading.Thread):
    """Runs `sweep` every `interval` seconds (with jitter, so workers spread out) until stopped."""

    def __init__(self, reconciler: Reconciler, interval: float) -> None:
        super().__init__(name="deployer-reconciler", daemon=True)
        self.reconciler = reconciler
        self.interval = interval
        self.stopped = threading.Event()
        self.sweeps = 0

    def run(self) -> None:
        while not self.stopped.wait(self.interval * random.uniform(0.75, 1.25)):
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
