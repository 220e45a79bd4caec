"""Worker-side machinery: the maintenance loop started with every worker (no beat needed).

`MaintenanceStep` is a bootstep of the worker blueprint, so it runs once per worker in the
main process (whatever the pool), starts with the worker and stops with it. It starts one
maintenance loop (deployer/maintenance.py) with this worker's duties, and the parking
thread beside it. Many workers run them at once: every claim is one atomic Lua script.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

from celery import bootsteps
from celery.signals import worker_init
from celery.worker import state as worker_state
from kombu.utils import json as kombu_json
from pydantic import ValidationError

from deployer import redis_client, tracing, worker_id
from deployer.context import TaskRuntimeContext
from deployer.failover import FailoverWatch
from deployer.liveness import Heartbeat, Liveness
from deployer.maintenance import Duty, MaintenanceLoop
from deployer.notify.sender import Notifier, describe
from deployer.parking import ParkingThread
from deployer.redis_client import client_for
from deployer.redrive import FailoverRedrive, OrphanReconciler, Reconciler
from deployer.retention import Retention
from deployer.rollout import GateRunner
from deployer.settings import Settings
from deployer.state.workers import count_duty_failure
from deployer.timers import POLL_SECONDS, PlanTimers
from stages import registry
from tasks import amqp, runtime
from tasks.app import app
from tasks.chains import stage_priority

log = logging.getLogger("deployer.maintenance")

#: A retention pass ends after this long (the rest waits for the next), so a stop is prompt.
RETENTION_PASS_SECONDS = 60.0


def build_reconciler() -> Reconciler:
    planner = runtime.planner()
    return Reconciler(runtime.store(), planner.launch, planner.dispatch)


def reconcile_duty(s: Settings) -> Duty:
    """Re-drive tasks whose lease expired (deployer/redrive.py), every
    DEPLOYER_RECONCILE_INTERVAL_SECONDS with jitter, so workers spread out; a sweep of
    thousands of tasks runs long, so on its own thread."""
    interval = s.reconcile_interval_seconds
    sweep = build_reconciler().sweep
    return Duty("reconciler", sweep, interval, first=interval, jitter=0.25, runs_long=True)


def plan_timers_duty() -> Duty:
    """Due wave steps and plan commands' slices (deployer/timers.py): due again at the next
    plan's time. A wave step may send a whole wave's chains, so on its own thread."""
    control = runtime.controller()
    timers = PlanTimers(runtime.store(), control.rollout.advance, control.plans.continue_jobs)
    return Duty("plan-timers", timers.tick, POLL_SECONDS, paced=True, runs_long=True)


def liveness_duty(s: Settings, node: str) -> Duty:
    """The heartbeat, the failover watch and the re-drive of dead workers' tasks
    (deployer/liveness.py), five times per DEPLOYER_WORKER_HEARTBEAT_SECONDS: on its own
    thread, so no other duty's pass makes a beat late (a late beat reads as a death). Its
    stop deletes the heartbeat: a clean stop is no death."""
    planner = runtime.planner()
    store = runtime.store()
    ttl = s.worker_heartbeat_seconds
    liveness = Liveness(
        Heartbeat(store.r, node, ttl, s.lease_ttl_seconds * 2),
        OrphanReconciler(store, planner.launch, planner.dispatch),
        ttl,
        held_stages,
        FailoverWatch(FailoverRedrive(store, planner.launch, planner.dispatch)),
    )
    return Duty("liveness", liveness.tick, liveness.interval, runs_long=True, stop=liveness.stop)


def notify_duty(s: Settings) -> Duty:
    """Deliver the notification outbox to the receivers of DEPLOYER_NOTIFY (deployer/notify):
    the claim on the loop's thread, at once and then every DEPLOYER_NOTIFY_INTERVAL_SECONDS
    (the first claim marks the outbox as delivered, so events are queued from the moment a
    worker starts); the calls on each receiver's own thread, never in a stage or a sweep."""
    notifier = Notifier(runtime.store().r, s)
    return Duty("notify", notifier.tick, s.notify_interval_seconds, stop=notifier.stop)


def retention_duty(s: Settings, stopped: threading.Event) -> Duty:
    """The retention pass (deployer/retention.py): finished plans older than
    DEPLOYER_RETENTION_SECONDS go to the archive and leave Redis; first after at most 5 s,
    then every DEPLOYER_RETENTION_INTERVAL_SECONDS; a pass runs up to a minute, so on its own
    thread, and ends early when the worker stops."""
    retention = Retention(runtime.store().r, s)

    def run_pass() -> None:
        try:
            report = retention.run_pass(
                deadline=time.monotonic() + RETENTION_PASS_SECONDS, stopped=stopped
            )
        except Exception:  # noqa: BLE001 - counted and logged once per streak by run_pass
            return  # (record_failure); the duty outlives any bad pass
        if report.archived:
            log.info("retention: %s", report.as_dict())

    interval = s.retention_interval_seconds
    return Duty("retention", run_pass, interval, first=min(interval, 5.0), runs_long=True)


def maintenance_duties(s: Settings, node: str, stopped: threading.Event) -> list[Duty]:
    """This worker's duties, as its settings enable them: DEPLOYER_WORKER_HEARTBEAT_SECONDS=0
    turns the heartbeat (and the failover watch) off, DEPLOYER_RETENTION_INTERVAL_SECONDS=0
    the retention pass; notifications are off without a receiver in DEPLOYER_NOTIFY. The
    liveness duty comes first: its stop hook (the heartbeat's removal) runs last."""
    duties = [liveness_duty(s, node)] if s.worker_heartbeat_seconds > 0 else []
    duties += [reconcile_duty(s), plan_timers_duty()]
    if s.notify:
        duties.append(notify_duty(s))
    if s.retention_interval_seconds > 0:
        duties.append(retention_duty(s, stopped))
    return duties


class MaintenanceStep(bootsteps.StartStopStep):
    """This worker's maintenance loop, its gate pool (deployer/rollout.py: gate calls run
    there, never in a stage, a command or the loop) and its parking thread, in the main
    process.

    The parking thread stays a thread of its own: it blocks on the acks subscription so an
    instance's ack sends the parked re-send at once; inside the loop it would either delay
    every other duty while it listens or poll, adding its period to every ack's latency. It
    stops first: a re-send it popped is sent before the heartbeat (and its record) goes."""

    label = "deployer maintenance"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.loop: MaintenanceLoop | None = None
        self.gates: GateRunner | None = None
        self.parking: ParkingThread | None = None

    def start(self, worker: Any) -> None:
        s = runtime.settings()
        node = worker_id.node_name(worker.hostname)
        rollout = runtime.controller().rollout
        self.gates = GateRunner(rollout.gate_answered, s, workers=s.gate_workers)
        rollout.gates = self.gates
        stopped = threading.Event()
        state = runtime.store().r
        self.loop = MaintenanceLoop(
            maintenance_duties(s, node, stopped),
            stopped,
            on_failure=lambda duty: count_duty_failure(state, duty),
        )
        self.loop.start()
        self.parking = ParkingThread(
            runtime.parking(), node, send_parked, client_for(s.target_url), s.acks_channel
        )
        self.parking.start()
        log.info(
            "maintenance of %s started: %s (gate pool of %d; parking acks on %s)",
            node, ", ".join(d.name for d in self.loop.duties), s.gate_workers, s.acks_channel,
        )  # fmt: skip
        if s.notify:
            log.info("notifications to %s", describe(s.notify))

    def stop(self, worker: Any) -> None:
        if self.parking is not None:
            self.parking.stop()
            self.parking = None
        if self.loop is not None:
            self.loop.stop()
            self.loop = None
        if self.gates is not None:
            runtime.controller().rollout.gates = None
            self.gates.shutdown()
            self.gates = None

    shutdown = stop


app.steps["worker"].add(MaintenanceStep)


class DeadLetterStep(bootsteps.StartStopStep):
    """RabbitMQ: declare the dead-letter exchange and queue (tasks/amqp.py) once the
    consumer is connected (again after every reconnect: declaring is idempotent). A step of
    the consumer blueprint, run on each connection: no periodic duty of the loop."""

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
    HealthCheck re-poll) or running. Read from the liveness duty's thread, while the consumer
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
