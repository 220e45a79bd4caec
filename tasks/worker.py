"""Worker-side machinery: the reconciler timer started with every worker (no beat needed).

`ReconcilerStep` is a bootstep of the worker blueprint, so it runs once per worker in the
main process (whatever the pool), starts with the worker and stops with it. Many workers may
run it at once: the claim is one atomic Lua script.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from celery import bootsteps
from celery.signals import worker_init
from celery.worker import state as worker_state
from kombu.utils import json as kombu_json
from pydantic import ValidationError

from deployer import redis_client, tracing, worker_id
from deployer.context import TaskRuntimeContext
from deployer.failover import FailoverWatch
from deployer.liveness import Heartbeat, LivenessThread, OrphanReconciler
from deployer.notify.sender import NotifyThread, describe
from deployer.parking import ParkingThread
from deployer.reconciler import Reconciler, ReconcilerThread
from deployer.redis_client import client_for
from deployer.retention import Retention, RetentionThread
from deployer.rollout import GateRunner
from deployer.timers import PlanTimers
from stages import registry
from tasks import amqp, runtime
from tasks.app import app
from tasks.chains import stage_priority

log = logging.getLogger("deployer.reconciler")


def build_reconciler() -> Reconciler:
    planner = runtime.planner()
    return Reconciler(runtime.store(), planner.launch, planner.dispatch)


class ReconcilerStep(bootsteps.StartStopStep):
    label = "deployer reconciler"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: ReconcilerThread | None = None

    def start(self, worker: Any) -> None:
        interval = runtime.settings().reconcile_interval_seconds
        self.thread = ReconcilerThread(build_reconciler(), interval)
        self.thread.start()
        log.info("reconciler started (every %.1fs)", interval)

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None

    shutdown = stop


app.steps["worker"].add(ReconcilerStep)


class PlanTimersStep(bootsteps.StartStopStep):
    """The plan-timer loop (deployer/timers.py: due wave steps, plan commands' slices) and
    the gate pool (deployer/rollout.py) of this worker, in the main process: gate calls run
    there, never in a stage, a command or the loop itself."""

    label = "deployer plan timers"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: PlanTimers | None = None
        self.gates: GateRunner | None = None

    def start(self, worker: Any) -> None:
        control = runtime.controller()
        rollout = control.rollout
        s = runtime.settings()
        self.gates = GateRunner(rollout.gate_answered, s, workers=s.gate_workers)
        rollout.gates = self.gates
        self.thread = PlanTimers(runtime.store(), rollout.advance, control.plans.continue_jobs)
        self.thread.start()
        log.info("plan timers started (gate pool of %d)", s.gate_workers)

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None
        if self.gates is not None:
            runtime.controller().rollout.gates = None
            self.gates.shutdown()
            self.gates = None

    shutdown = stop


app.steps["worker"].add(PlanTimersStep)


class LivenessStep(bootsteps.StartStopStep):
    """The worker's heartbeat and the re-driving of dead workers' tasks (deployer/liveness.py),
    in the main process; a clean stop deletes the heartbeat."""

    label = "deployer liveness"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: LivenessThread | None = None

    def start(self, worker: Any) -> None:
        ttl = runtime.settings().worker_heartbeat_seconds
        if ttl <= 0:
            return
        planner = runtime.planner()
        store = runtime.store()
        node = worker_id.node_name(worker.hostname)
        orphans = OrphanReconciler(store, planner.launch, planner.dispatch)
        heartbeat = Heartbeat(store.r, node, ttl, runtime.settings().lease_ttl_seconds * 2)
        failover = FailoverWatch(store, planner.launch, planner.dispatch)
        self.thread = LivenessThread(heartbeat, orphans, ttl, held_stages, failover)
        self.thread.start()
        log.info("heartbeat of %s started (ttl %.1fs)", node, ttl)

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None

    shutdown = stop


app.steps["worker"].add(LivenessStep)


class ParkingStep(bootsteps.StartStopStep):
    """Sends parked HealthCheck re-sends when due or woken by an instance's ack
    (deployer/parking.py), in the main process. Requires the liveness step, so it stops
    first: a re-send it popped is sent before the heartbeat (and its record) goes."""

    label = "deployer parking"
    requires = ("tasks.worker:LivenessStep",)  # started after it, so stopped before it

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: ParkingThread | None = None

    def start(self, worker: Any) -> None:
        s = runtime.settings()
        node = worker_id.node_name(worker.hostname)
        self.thread = ParkingThread(
            runtime.parking(), node, send_parked, client_for(s.target_url), s.acks_channel
        )
        self.thread.start()
        log.info("parking started (acks on %s)", s.acks_channel)

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None

    shutdown = stop


app.steps["worker"].add(ParkingStep)


class DeadLetterStep(bootsteps.StartStopStep):
    """RabbitMQ: declare the dead-letter exchange and queue (tasks/amqp.py) once the
    consumer is connected (again after every reconnect: declaring is idempotent)."""

    label = "deployer dead letters"
    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, c: Any) -> None:
        if not amqp.is_amqp(c.connection):
            return
        try:
            amqp.declare_dead_letters(c.connection, runtime.settings().dead_letters_maxlen)
        except Exception as exc:  # noqa: BLE001 - refused messages are still recorded
            log.warning("dead-letter queue not declared (%s): %s", type(exc).__name__, exc)


app.steps["consumer"].add(DeadLetterStep)


class NotifyStep(bootsteps.StartStopStep):
    """Delivers the notification outbox to the receivers of DEPLOYER_NOTIFY (deployer/notify),
    in the main process, on threads of its own: never in a stage, never in the reconciler's
    tick. Off when no receiver is configured."""

    label = "deployer notifications"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: NotifyThread | None = None

    def start(self, worker: Any) -> None:
        s = runtime.settings()
        if not s.notify:
            return
        self.thread = NotifyThread(runtime.store().r, s)
        self.thread.start()
        log.info("notifications to %s", describe(s.notify))

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None

    shutdown = stop


app.steps["worker"].add(NotifyStep)


class RetentionStep(bootsteps.StartStopStep):
    """The periodic retention pass (deployer/retention.py): finished plans older than
    DEPLOYER_RETENTION_SECONDS go to the archive and leave Redis, in the main process, on a
    thread of its own. Off when DEPLOYER_RETENTION_INTERVAL_SECONDS is 0."""

    label = "deployer retention"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: RetentionThread | None = None

    def start(self, worker: Any) -> None:
        s = runtime.settings()
        if s.retention_interval_seconds <= 0:
            return
        self.thread = RetentionThread(Retention(runtime.store().r, s),
                                      s.retention_interval_seconds)  # fmt: skip
        self.thread.start()
        log.info("retention every %.0fs (plans finished %.0fs ago leave Redis)",
                 s.retention_interval_seconds, s.retention_seconds)  # fmt: skip

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None

    shutdown = stop


app.steps["worker"].add(RetentionStep)


def send_parked(sig: str) -> None:
    """Send a parked stage re-send: the signature `retry` would have sent, at the first
    priority step (Redis broker): a poll that an ack woke, or a due one, is a tenant about
    to finish, so it overtakes stages that wait to start (tasks/chains.py: stage_priority),
    instead of queueing behind a whole burst of first stages."""
    resend = app.signature(kombu_json.loads(sig))
    if stage_priority(0) is not None:
        resend.options["priority"] = 0
    if not tracing.enabled():
        resend.apply_async()
        return
    try:  # the re-send joins its run's trace (its context says which)
        ctx = TaskRuntimeContext.from_wire(resend.args[0])
    except (ValidationError, IndexError, TypeError):
        resend.apply_async()
        return
    with tracing.run_context(ctx):
        resend.apply_async()


def held_stages() -> dict[str, str]:
    """Task id -> where the stage message this worker holds would start (`token:stage:step:
    attempt`, the task's `cursor` once begun): prefetched, waiting for its countdown (a
    HealthCheck re-poll) or running. Read from the liveness thread, while the consumer
    changes Celery's request sets."""
    out: dict[str, str] = {}
    held = [
        *_copy(worker_state.scheduled_requests),
        *_copy(worker_state.reserved_requests),
        *_copy(worker_state.active_requests),
    ]
    for req in held:
        if req.type != "deployer.run_stage":  # `name` is the label Flower shows
            continue
        try:
            ctx = req.args[0]
        except (IndexError, TypeError, ValueError):
            continue
        if isinstance(ctx, dict) and ctx.get("taskId") and ctx.get("token"):
            at = (ctx.get("stageIndex", 0), ctx.get("stepIndex", 0), ctx.get("attempt", 0))
            out[str(ctx["taskId"])] = ":".join(str(x) for x in (ctx["token"], *at))
    return out


def _copy(requests: Any) -> list[Any]:
    """A WeakSet another thread changes may raise while copied; a later try succeeds (and a
    beat that misses one only publishes it a beat later)."""
    for _ in range(5):
        try:
            return list(requests)
        except RuntimeError:
            continue
    return []


@worker_init.connect(weak=False)
def warm_up(**_: Any) -> None:
    """Load entry points, settings and scripts once in the main process, before the pool
    forks: every pool process (including one recycled after a big submit) starts warm."""
    worker_id.mark_main_process()
    registry.assemblers()
    registry.steps()
    runtime.store()
    redis_client.warm_up_tls(runtime.settings())  # before the pool forks: it says why
    # What is loaded now lives as long as the worker: out of the collector's sight, so a
    # full collection in a pool process does not walk (and copy-on-write) all of it.
    gc.freeze()
