"""Prometheus metrics read from deployer's Redis state at each scrape, in three round trips.

Nothing here reads the event stream or scans tasks: the counters are kept in the hash
`deployer:stats` by the code that writes what they count, in the same round trip (the Lua
prelude's `observe` for every event, failures by stage and code, stage durations and
re-drives; `Store.reject` for rejections; `DeadLetters.record`; the notification scripts),
so a scrape costs the same with 10 plans or 100,000 tenants, and the counters survive an
exporter restart. Per-plan series come from the newest plans' hashes (their counters).
What is read, and how, is deployer/state/stats.py (one `Snapshot` a scrape); here is what
Prometheus is shown of it.

Each metric and what it answers is listed in docs/operators.md ("Metrics"); deploy/grafana
and deploy/prometheus use them (a test under tests/deploy checks every name they use).
"""

from __future__ import annotations

import time
from collections import Counter as Counter_
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from deployer.models import TaskStatus
from deployer.state import stats as state
from deployer.state.plans import PlanCounter, PlanRecord
from deployer.state.record import TaskRecord
from deployer.waves import WAVE_STATES, Rollout

#: Stage duration buckets in seconds: the Lua prelude's STAGE_BUCKETS_MS (tested equal).
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: Plans whose approval wait is shown at most (the zset holds only plans waiting now).
MAX_AWAITING = 1000

#: Every metric family this module exports (name without `_total`; docs and deploy/ use them).
METRIC_NAMES = (
    "deployer_plan_tasks",
    "deployer_plan_info",
    "deployer_plan_max_concurrency",
    "deployer_plan_waves",
    "deployer_plan_budget_exceeded",
    "deployer_plan_healthcheck_attempts",
    "deployer_lease_conflicts",
    "deployer_plan_awaiting_approval_seconds",
    "deployer_plans_awaiting_approval",
    "deployer_inflight_tasks",
    "deployer_healthcheck_waiting_tasks",
    "deployer_parked_tasks",
    "deployer_parked_overdue_seconds",
    "deployer_workers_alive",
    "deployer_worker_last_heartbeat_timestamp_seconds",
    "deployer_events",
    "deployer_task_transitions",
    "deployer_rollbacks",
    "deployer_lease_redrives",
    "deployer_redrives",
    "deployer_task_failures",
    "deployer_rejections",
    "deployer_dead_letters",
    "deployer_maintenance_failures",
    "deployer_gate_answers",
    "deployer_notifications",
    "deployer_notifications_queued",
    "deployer_stage_duration_seconds",
)


class StatsCollector(Collector):
    """The counters of `deployer:stats` (one HGETALL) and the cheap gauges (cardinalities
    and extremes of the zsets the workers keep), in one pipeline."""

    def __init__(self, r: redis.Redis, receivers: Iterable[str] = (), heartbeat_s: float = 5.0):
        self.r = r
        self.receivers = tuple(receivers)
        self.heartbeat_ms = int(heartbeat_s * 1000)

    def collect(self) -> Iterator[Metric]:
        now = int(time.time() * 1000)
        yield from self.families(state.read_gauges(self.r, self.receivers, self.heartbeat_ms, now))

    @staticmethod
    def families(g: state.Gauges) -> Iterator[Metric]:
        """The counters' and the gauges' families of one reading."""
        yield from counters(g.stats)
        yield GaugeMetricFamily(
            "deployer_parked_tasks", "HealthChecks parked in Redis (acks expected).", value=g.parked
        )
        oldest = g.oldest_parked_due_ms
        overdue = max(0.0, (g.now_ms - oldest) / 1000) if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "deployer_parked_overdue_seconds",
            "How long the most overdue parked re-send is past its due time (0: none overdue).",
            value=overdue,
        )
        yield GaugeMetricFamily(
            "deployer_workers_alive",
            "Workers whose heartbeat is fresher than DEPLOYER_WORKER_HEARTBEAT_SECONDS.",
            value=g.workers_alive,
        )
        last = GaugeMetricFamily(
            "deployer_worker_last_heartbeat_timestamp_seconds",
            "Unix time of the newest worker heartbeat (absent: no worker ever beat).",
        )
        if g.newest_heartbeat_ms is not None:
            last.add_metric([], g.newest_heartbeat_ms / 1000)
        yield last
        pending = GaugeMetricFamily(
            "deployer_notifications_queued",
            "Notifications waiting: the outbox (receiver '-') and each receiver's queue.",
            labels=["receiver"],
        )
        pending.add_metric(["-"], g.outbox)
        for name, n in g.queued.items():
            pending.add_metric([name], n)
        yield pending


def _family(
    name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], int]]
) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, n in rows:
        family.add_metric(values, n)
    return family


#: Task events that are rollback outcomes (deployer_rollbacks_total) and gate answers.
ROLLBACK_EVENTS = {"TASK_ROLLING_BACK": "started", "TASK_ROLLED_BACK": "rolled_back",
                   "TASK_ROLLBACK_FAILED": "failed"}  # fmt: skip
GATE_EVENTS = {"WAVE_GATE_PASSED": "passed", "GATE_REFUSED": "refused"}


def counters(stats: Mapping[str, str]) -> Iterator[Metric]:
    """The metric families of the `deployer:stats` hash (its field names: the Lua prelude)."""
    g = state.grouped(stats)
    events = dict(g["ev"])
    yield _family("deployer_events", "Events written to deployer:events, by type.", ["type"],
                  (([t], n) for t, n in events.items()))  # fmt: skip
    yield _family(
        "deployer_task_transitions",
        "Task status changes (TASK_<STATUS> events).",
        ["status"],
        (([t[5:]], n) for t, n in events.items() if t.startswith("TASK_") and t != "TASK_REDRIVEN"),
    )
    yield _family(
        "deployer_rollbacks",
        "Rollbacks by outcome: started, rolled_back, failed.",
        ["outcome"],
        (([o], events.get(t, 0)) for t, o in ROLLBACK_EVENTS.items()),
    )
    yield _family(
        "deployer_lease_redrives",
        "Tenants re-driven by a reconciler (every reason).",
        [],
        [([], events.get("TASK_REDRIVEN", 0))],
    )
    yield _family(
        "deployer_redrives",
        "Tenants re-driven by a reconciler: lease_expired, worker_lost, failover.",
        ["reason"],
        (([r], n) for r, n in g["rd"]),
    )
    yield _family(
        "deployer_task_failures",
        "Runs that failed (FAILED, ROLLBACK_FAILED), by stage and failure code.",
        ["stage", "code"],
        (([*rest.rpartition("|")[::2]], n) for rest, n in g["fail"]),
    )
    yield _family(
        "deployer_rejections",
        "Refused submissions (deployer:rejections), by code.",
        ["code"],
        (([c], n) for c, n in g["rej"]),
    )
    yield _family(
        "deployer_dead_letters",
        "Broker messages refused and dead-lettered (deployer:dead-letters), by kind.",
        ["kind"],
        (([k], n) for k, n in g["dl"]),
    )
    yield _family(
        "deployer_maintenance_failures",
        "Failed passes of the workers' maintenance duties (reconcile, plan-timers, liveness, "
        "notify, retention), by duty: each is retried at its next period.",
        ["duty"],
        (([d], n) for d, n in g["mf"]),
    )
    yield _family(
        "deployer_gate_answers",
        "Gate webhook answers: passed, refused.",
        ["answer"],
        (([a], events.get(t, 0)) for t, a in GATE_EVENTS.items()),
    )
    yield _family(
        "deployer_notifications",
        "Notification deliveries by receiver, event and outcome: delivered, failed (an "
        "attempt refused or unanswered; retried), dropped (given up).",
        ["receiver", "event", "outcome"],
        (((rest.split("|") + ["", "", ""])[:3], n) for rest, n in g["nt"]),
    )
    yield from _retention(g)
    buckets: dict[str, dict[str, int]] = defaultdict(dict)
    for rest, n in g["sd"]:
        stage, _, le = rest.rpartition("|")
        buckets[stage][le] = n
    yield _durations(buckets, {stage: n / 1000 for stage, n in g["sds"]})


def _retention(g: dict[str, list[tuple[str, int]]]) -> Iterator[Metric]:
    """Retention's passes (deployer/retention.py keeps `ret|…`, `retfail|…`, `retok|…`): an
    archive database that is down shows as failures rising and the last success ageing."""
    done = dict(g["ret"])
    yield _family("deployer_retention_archived", "Plans retention archived and removed from "
                  "Redis (each tenant's newest task kept live).", [],
                  [([], done.get("archived", 0))])  # fmt: skip
    yield _family("deployer_retention_tasks_archived", "Tasks written to the archive by "
                  "retention passes.", [], [([], done.get("tasks", 0))])  # fmt: skip
    yield _family("deployer_retention_failures", "Retention passes that failed, by reason: "
                  "archive (its database refused or is unreachable), redis, error.",
                  ["reason"], (([r], n) for r, n in g["retfail"]))  # fmt: skip
    ok = dict(g["retok"])
    last = GaugeMetricFamily(
        "deployer_retention_last_success_timestamp_seconds",
        "Unix time the last retention pass ended without error (absent: none yet).",
    )
    if ok.get("ms"):
        last.add_metric([], ok["ms"] / 1000)
    yield last
    yield GaugeMetricFamily(
        "deployer_retention_failing_passes",
        "Retention passes failed in a row since the last success (0: healthy).",
        value=ok.get("streak", 0),
    )


def _durations(buckets: dict[str, dict[str, int]], sums: dict[str, float]) -> Metric:
    family = HistogramMetricFamily(
        "deployer_stage_duration_seconds",
        "Seconds from a stage's start to its checkpoint (HealthCheck waits included).",
        labels=["stage"],
    )
    for stage, counts in sorted(buckets.items()):
        cumulative, rows = 0, []
        for b in STAGE_BUCKETS:
            cumulative += counts.get(str(int(b * 1000)), 0)
            rows.append((repr(b), cumulative))
        cumulative += counts.get("inf", 0)
        rows.append(("+Inf", cumulative))
        family.add_metric([stage], rows, sum_value=sums.get(stage, 0.0))
    return family


class DeployerCollector(Collector):
    """Per-plan series of the newest plans, the inflight and approval gauges, and the
    counters (`StatsCollector`)."""

    def __init__(
        self,
        r: redis.Redis,
        recent_plans: int = 50,
        inflight_sample: int = 5000,
        receivers: Iterable[str] = (),
        heartbeat_s: float = 5.0,
    ) -> None:
        self.r = r
        self.recent_plans = recent_plans
        self.inflight_sample = inflight_sample
        self.stats = StatsCollector(r, receivers, heartbeat_s)

    def collect(self) -> Iterable[Metric]:
        snapshot = state.read_snapshot(
            self.r,
            recent_plans=self.recent_plans,
            awaiting_limit=MAX_AWAITING,
            inflight_sample=self.inflight_sample,
            receivers=self.stats.receivers,
            heartbeat_ms=self.stats.heartbeat_ms,
            now_ms=int(time.time() * 1000),
        )
        yield from self._plans(snapshot.plans)
        yield from self._awaiting(snapshot.awaiting)
        yield from self._inflight(snapshot.inflight)
        yield from self.stats.families(snapshot.gauges)

    def _plans(self, plans: list[tuple[str, PlanRecord]]) -> Iterator[Metric]:
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
        budget = GaugeMetricFamily(
            "deployer_plan_budget_exceeded",
            "1 when a plan's failure budget is exceeded (plans with a budget only).",
            labels=["plan_id"],
        )
        for plan_id, plan in plans:
            info.add_metric([plan_id, plan.status], 1)
            conc.add_metric([plan_id], float(plan.max_concurrency or 0))
            for status in TaskStatus:
                tasks.add_metric([plan_id, status.value], float(plan.count(status)))
            conflicts.add_metric([plan_id], float(plan.counter(PlanCounter.LEASE_CONFLICTS)))
            attempts.add_metric([plan_id], float(plan.counter(PlanCounter.HEALTH_CHECK_ATTEMPTS)))
            rollout = Rollout.from_hash(plan)
            if rollout is not None:
                states = Counter_(w.state for w in rollout.waves)
                for state in WAVE_STATES:
                    waves.add_metric([plan_id, state], float(states.get(state, 0)))
                b = rollout.budget()
                if b is not None:
                    budget.add_metric([plan_id], 1.0 if b["exceeded"] else 0.0)
        yield from (tasks, info, conc, conflicts, attempts, waves, budget)

    def _awaiting(self, waiting: list[state.Awaiting]) -> Iterator[Metric]:
        """Plans whose wave waits for approval, and since when (the prelude adds a plan at
        WAVE_AWAITING_APPROVAL and removes it at WAVE_APPROVED / WAVE_HALTED; one that moved
        on otherwise — cancelled, expired — is dropped here)."""
        gone = [w.plan_id for w in waiting if w.wave_state != "AWAITING_APPROVAL"]
        state.forget_awaiting(self.r, gone)
        now = time.time()
        seconds = GaugeMetricFamily(
            "deployer_plan_awaiting_approval_seconds",
            "How long a plan's current wave has waited for `deployer approve`.",
            labels=["plan_id"],
        )
        count = 0
        for w in waiting:
            if w.wave_state == "AWAITING_APPROVAL":
                seconds.add_metric([w.plan_id], max(0.0, now - w.since_ms / 1000))
                count += 1
        yield seconds
        yield GaugeMetricFamily(
            "deployer_plans_awaiting_approval", "Plans whose wave waits for approval.", count
        )

    def _inflight(self, sample: list[TaskRecord]) -> Iterator[Metric]:
        cursors = [t.cursor for t in sample]
        waiting = sum(1 for c in cursors if c is not None and c.attempt > 0)
        yield GaugeMetricFamily(
            "deployer_inflight_tasks", "Tasks holding a concurrency slot.", value=len(sample)
        )
        yield GaugeMetricFamily(
            "deployer_healthcheck_waiting_tasks",
            "Inflight tasks between two HealthCheck attempts.",
            value=waiting,
        )


def registry_for(
    r: redis.Redis,
    recent_plans: int = 50,
    receivers: Iterable[str] = (),
    heartbeat_s: float = 5.0,
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DeployerCollector(r, recent_plans, 5000, receivers, heartbeat_s))
    return registry


def registry_from_settings(r: redis.Redis, recent_plans: int = 50) -> CollectorRegistry:
    """The registry with the receivers and heartbeat of this process's settings."""
    from deployer.settings import get_settings

    s = get_settings()
    return registry_for(r, recent_plans, s.notify, s.worker_heartbeat_seconds or 5.0)


def serve(r: redis.Redis, address: str, port: int, recent_plans: int = 50) -> Any:
    """Start the HTTP endpoint (a daemon thread); returns (server, thread)."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=address, registry=registry_from_settings(r, recent_plans))


def run_forever() -> None:  # pragma: no cover - the CLI's loop
    while True:
        time.sleep(3600)
