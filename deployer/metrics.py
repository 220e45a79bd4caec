"""Prometheus metrics derived from deployer's Redis state (no worker changes needed).

Scraped on demand by `deployer metrics`: each scrape reads the plan hashes (their
counters), the inflight watch list and the new part of the `deployer:events` stream.

Each metric and what it means is listed in docs/operators.md ("Metrics"): tasks by
status per plan (plan counters `c:<STATUS>`), stage durations (STAGE_STARTED to
STAGE_COMPLETED events), task transitions, rollbacks, lease re-drives, inflight tasks.

HealthCheck attempts and lease conflicts are the plan hash counters
`m:healthCheckAttempts` / `m:leaseConflicts` (lua/stage_begin.lua keeps them).
"""

from __future__ import annotations

import time
from collections import Counter as Counter_
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from deployer import keys
from deployer.lifecycle import ENDED
from deployer.models import TaskStatus
from deployer.record import Field
from deployer.store import read_tasks
from deployer.waves import WAVE_STATES, waves_of

STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: A task in one of these has no stage open (its open stage timings are dropped).
TERMINAL_TASK = ENDED | {TaskStatus.PAUSED}


class EventFollower:
    """Reads `deployer:events` incrementally and turns it into counters and a histogram."""

    def __init__(self, r: redis.Redis, batch: int = 10_000, max_batches: int = 20) -> None:
        self.r = r
        self.last_id = "0-0"
        self.batch, self.max_batches = batch, max_batches
        self._open: OrderedDict[str, dict[str, tuple[str, int]]] = OrderedDict()
        self.stage_seconds = Histogram(
            "deployer_stage_duration_seconds",
            "Seconds from STAGE_STARTED to STAGE_COMPLETED of one stage (polls included).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=None,
        )
        self.transitions = Counter(
            "deployer_task_transitions",
            "Task status changes seen in deployer:events (TASK_<STATUS>).",
            ["status"],
            registry=None,
        )
        self.rollbacks = Counter(
            "deployer_rollbacks",
            "Rollbacks by outcome: started, rolled_back, failed.",
            ["outcome"],
            registry=None,
        )
        self.redrives = Counter(
            "deployer_lease_redrives",
            "Tenants re-driven by the reconciler after their lease expired.",
            registry=None,
        )
        self.read = Counter("deployer_events_read", "Events read by this exporter.", registry=None)

    def poll(self) -> None:
        for _ in range(self.max_batches):
            entries: list[tuple[str, dict[str, str]]] = self.r.xrange(  # type: ignore[assignment]
                keys.EVENTS, min=f"({self.last_id}", max="+", count=self.batch
            )
            for entry_id, fields in entries:
                self.observe(fields)
                self.last_id = entry_id
            self.read.inc(len(entries))
            if len(entries) < self.batch:
                return

    def observe(self, e: dict[str, str]) -> None:
        kind, task_id = e.get("type", ""), e.get("taskId", "")
        if kind == "STAGE_STARTED":
            self._open.setdefault(task_id, {})[e.get("stageIndex", "")] = (
                e.get("stage", ""),
                int(e.get("ts", 0)),
            )
            self._open.move_to_end(task_id)
            while len(self._open) > 200_000:  # runs that never finished: forget the oldest
                self._open.popitem(last=False)
        elif kind == "STAGE_COMPLETED":
            started = self._open.get(task_id, {}).pop(e.get("stageIndex", ""), None)
            if started is not None:
                stage, ts = started
                self.stage_seconds.labels(stage).observe(max(0, int(e.get("ts", 0)) - ts) / 1000)
        elif kind == "TASK_REDRIVEN":
            self.redrives.inc()
        elif kind.startswith("TASK_"):
            status = kind[5:]
            self.transitions.labels(status).inc()
            if status == "ROLLING_BACK":
                self.rollbacks.labels("started").inc()
            elif status in ("ROLLED_BACK", "ROLLBACK_FAILED"):
                self.rollbacks.labels("rolled_back" if status == "ROLLED_BACK" else "failed").inc()
            if status in TERMINAL_TASK:
                self._open.pop(task_id, None)

    def collect(self) -> Iterator[Metric]:
        for m in (self.stage_seconds, self.transitions, self.rollbacks, self.redrives, self.read):
            yield from m.collect()


class DeployerCollector(Collector):
    """Everything in the module docstring, read from Redis at each scrape."""

    def __init__(self, r: redis.Redis, recent_plans: int = 50, inflight_sample: int = 5000) -> None:
        self.r = r
        self.recent_plans = recent_plans
        self.inflight_sample = inflight_sample
        self.events = EventFollower(r)

    def collect(self) -> Iterable[Metric]:
        self.events.poll()
        yield from self._plans()
        yield from self._inflight()
        yield from self.events.collect()

    def _plans(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            "deployer_plan_tasks", "Tasks of a plan by status.", labels=["plan_id", "status"]
        )
        info = GaugeMetricFamily(
            "deployer_plan_info",
            "1 per recent plan, with its status.",
            labels=["plan_id", "status"],
        )
        conc = GaugeMetricFamily(
            "deployer_plan_max_concurrency", "Chains a plan may run at once.", labels=["plan_id"]
        )
        conflicts = CounterMetricFamily(
            "deployer_lease_conflicts",
            "Stage starts refused because another run held the tenant lease.",
            labels=["plan_id"],
        )
        attempts = CounterMetricFamily(
            "deployer_plan_healthcheck_attempts",
            "HealthCheck polls of a plan after the first (plan counter m:healthCheckAttempts).",
            labels=["plan_id"],
        )
        waves = GaugeMetricFamily(
            "deployer_plan_waves",
            "Waves of a plan with a strategy by state (PENDING, RUNNING, PAUSED, BAKING, "
            "AWAITING_APPROVAL, AWAITING_WINDOW, AWAITING_GATE, DONE, HALTED).",
            labels=["plan_id", "state"],
        )
        plan_ids = [str(p) for p in self.r.zrevrange(keys.PLANS, 0, self.recent_plans - 1)]
        pipe = self.r.pipeline(transaction=False)
        for plan_id in plan_ids:
            pipe.hgetall(keys.plan(plan_id))
        for plan_id, plan in zip(plan_ids, pipe.execute(), strict=True):
            if not plan:
                continue
            info.add_metric([plan_id, plan.get("status", "")], 1)
            conc.add_metric([plan_id], float(plan.get("maxConcurrency", 0) or 0))
            for status in TaskStatus:
                tasks.add_metric([plan_id, status.value], float(plan.get(f"c:{status.value}", 0)))
            conflicts.add_metric([plan_id], float(plan.get("m:leaseConflicts", 0) or 0))
            attempts.add_metric([plan_id], float(plan.get("m:healthCheckAttempts", 0) or 0))
            if plan.get("strategy"):
                states = Counter_(w["state"] for w in waves_of(plan))
                for state in WAVE_STATES:
                    waves.add_metric([plan_id, state], float(states.get(state, 0)))
        yield from (tasks, info, conc, conflicts, attempts, waves)

    def _inflight(self) -> Iterator[Metric]:
        ids = [str(t) for t in self.r.zrange(keys.INFLIGHT, 0, self.inflight_sample - 1)]
        cursors = [t.cursor for t in read_tasks(self.r, ids, [Field.CURSOR])]
        waiting = sum(1 for c in cursors if c is not None and c.attempt > 0)
        yield GaugeMetricFamily(
            "deployer_inflight_tasks", "Tasks holding a concurrency slot.", value=len(ids)
        )
        yield GaugeMetricFamily(
            "deployer_healthcheck_waiting_tasks",
            "Inflight tasks between two HealthCheck attempts.",
            value=waiting,
        )


def registry_for(r: redis.Redis, recent_plans: int = 50) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DeployerCollector(r, recent_plans))
    return registry


def serve(r: redis.Redis, address: str, port: int, recent_plans: int = 50) -> Any:
    """Start the HTTP endpoint (a daemon thread); returns (server, thread)."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=address, registry=registry_for(r, recent_plans))


def run_forever() -> None:  # pragma: no cover - the CLI's loop
    while True:
        time.sleep(3600)
