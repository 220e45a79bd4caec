"""Every Redis key deployer owns, as templates in one place (the public ones are marked)."""

from __future__ import annotations

PLAN = "deployer:plan:{plan_id}"  # public: field `status`
PLAN_TENANTS = "deployer:plan:{plan_id}:tenants"  # list of task ids, submission order
PLAN_QUEUE = "deployer:plan:{plan_id}:queue"  # task ids waiting for a concurrency slot
PLAN_CLAIM = "deployer:plan:{plan_id}:creating"  # token of the creator of a big plan, TTL
PLANS = "deployer:plans"  # zset plan id -> created ms
TASK = (
    "deployer:task:{task_id}"  # hash: its fields are deployer/state/record.py (TaskRecord, Field)
)
TENANT = "deployer:tenant:{tenant_id}"  # latest task id of the tenant
LEASE = "deployer:lease:{tenant_id}"  # token of the run that owns the tenant, with TTL
LEASE_EPOCH = "deployer:lease-epoch:{tenant_id}"  # how many times any run took the tenant
#: "createdAtMs|taskId" of the last task that took the tenant to write: an older task's
#: forward or retry run then ends SUPERSEDED instead of regressing the config.
APPLIED = "deployer:applied:{tenant_id}"
FENCE = "deployer:fence:{tenant_id}"  # in the target Redis when it is another server
INFLIGHT = "deployer:inflight"  # zset task id -> deadline ms; the reconciler's watch list
EVENTS = "deployer:events"  # stream, bounded
# Per-plan and per-tenant history, trimmed by age (deployer/audit.py). The Lua `emit` builds
# them as EVENTS .. ':plan:' .. planId etc. (keep the two in step).
EVENTS_PLAN = "deployer:events:plan:{plan_id}"  # stream: the plan's events, same ids
EVENTS_TENANT = "deployer:events:tenant:{tenant_id}"  # list of 'entryId planId' references
EVENTS_TENANT_TRIMMED = "deployer:events:tenant:{tenant_id}:trimmed"  # set when refs were dropped
#: The first reference the tenant's history ever had (never expires): history older than the
#: oldest kept reference is gone when this one is older.
EVENTS_TENANT_BEGAN = "deployer:events:tenant:{tenant_id}:began"
REJECTIONS = "deployer:rejections"  # public stream of rejected submissions, bounded
WORKER = "deployer:worker:{node}"  # heartbeat of a live worker (node = hostname:main pid:start id)
WORKER_HOLDS = "deployer:worker-holds:{node}"  # hash task id -> token of messages it holds
DEAD_LETTERS = "deployer:dead-letters"  # public stream of refused broker messages, bounded
WORKERS = "deployer:workers"  # zset node -> last heartbeat ms: the workers expected alive
#: `run_id` of the server the state Redis was on when a worker last looked (deployer/failover.py).
REDIS_RUN_ID = "deployer:redis-run-id"
#: Counters the exporter reads (deployer/metrics.py), kept by the scripts that write the
#: events (the Lua prelude's `observe`) and by the rejection and dead-letter writers.
STATS = "deployer:stats"
#: zset plan id -> ms since its current wave waits for approval (the prelude keeps it).
AWAITING_APPROVAL = "deployer:awaiting-approval"


def plan(plan_id: str) -> str:
    return PLAN.format(plan_id=plan_id)


def plan_tenants(plan_id: str) -> str:
    return PLAN_TENANTS.format(plan_id=plan_id)


def plan_queue(plan_id: str) -> str:
    return PLAN_QUEUE.format(plan_id=plan_id)


def plan_claim(plan_id: str) -> str:
    return PLAN_CLAIM.format(plan_id=plan_id)


def task(task_id: str) -> str:
    return TASK.format(task_id=task_id)


def tenant(tenant_id: str) -> str:
    return TENANT.format(tenant_id=tenant_id)


def lease(tenant_id: str) -> str:
    return LEASE.format(tenant_id=tenant_id)


def lease_epoch(tenant_id: str) -> str:
    return LEASE_EPOCH.format(tenant_id=tenant_id)


def applied(tenant_id: str) -> str:
    return APPLIED.format(tenant_id=tenant_id)


def fence(tenant_id: str) -> str:
    return FENCE.format(tenant_id=tenant_id)


def events_plan(plan_id: str) -> str:
    return EVENTS_PLAN.format(plan_id=plan_id)


def events_tenant(tenant_id: str) -> str:
    return EVENTS_TENANT.format(tenant_id=tenant_id)


def worker(node: str) -> str:
    return WORKER.format(node=node)


def worker_holds(node: str) -> str:
    return WORKER_HOLDS.format(node=node)


#: Parked HealthChecks (deployer/parking.py). zset task id -> ms when its re-send is due:
PARKED = "deployer:parked"
PARK = "deployer:park:{task_id}"  # hash: the re-send (sig), token, tenant, what it waits for
PARK_TENANT = "deployer:park-tenant:{tenant_id}"  # task id parked last for the tenant, TTL
PARK_ACKS = "deployer:park-acks:{tenant_id}"  # hash "service|instance" -> acked version, TTL
#: hash task id -> position of the re-sends a worker popped and is sending (liveness reads it)
WORKER_SENDS = "deployer:worker-sends:{node}"


def worker_sends(node: str) -> str:
    return WORKER_SENDS.format(node=node)


#: Progressive rollout (a plan's `strategy`). A wave's task ids, fixed at submit:
PLAN_WAVE = "deployer:plan:{plan_id}:wave:{index}"
#: zset plan id -> ms when its wave step is due (bake end, gate re-check, wave finished).
#: Durable: any worker's reconciler advances a due plan, whichever wrote the timer.
PLAN_TIMERS = "deployer:plan-timers"


def plan_wave(plan_id: str, index: int | str) -> str:
    return PLAN_WAVE.format(plan_id=plan_id, index=index)


#: A plan command working through the plan's tasks in slices (deployer/plan_commands.py):
PLAN_JOB = "deployer:plan:{plan_id}:job"  # hash: command, gen, cursors, counts so far
PLAN_JOB_ORDER = "deployer:plan:{plan_id}:job:order"  # zset task id -> startedAt (rollback)
PLAN_JOB_LOCK = "deployer:plan:{plan_id}:job:lock"  # token of whoever runs a slice now, TTL
PLAN_JOBS = "deployer:plan-jobs"  # zset plan id -> ms: plans whose command is not done yet


def plan_job(plan_id: str) -> str:
    return PLAN_JOB.format(plan_id=plan_id)


def plan_job_order(plan_id: str) -> str:
    return PLAN_JOB_ORDER.format(plan_id=plan_id)


def plan_job_lock(plan_id: str) -> str:
    return PLAN_JOB_LOCK.format(plan_id=plan_id)


#: Notifications (deployer/notify). zset event id -> ms: events queued by the Lua prelude in
#: the script that wrote them, not yet handed to the receivers' queues:
NOTIFY_OUTBOX = "deployer:notify:outbox"
#: Set by every claim of a worker that delivers notifications, with a TTL: the outbox is
#: kept only while it exists (no receivers anywhere: nothing queued, nothing replayed later).
NOTIFY_ACTIVE = "deployer:notify:active"
NOTIFY_EVENT = "deployer:notify:event:{event_id}"  # hash: the event's fields, plan snapshot
#: zset event id -> ms when its next delivery to that receiver is due (or its claim lapses)
NOTIFY_DUE = "deployer:notify:due:{receiver}"


def notify_event(event_id: str) -> str:
    return NOTIFY_EVENT.format(event_id=event_id)


def notify_due(receiver: str) -> str:
    return NOTIFY_DUE.format(receiver=receiver)


#: Retention (deployer/retention.py): the token of the worker archiving the plan, with a TTL.
PLAN_ARCHIVING = "deployer:plan:{plan_id}:archiving"
#: Task ids of an archived plan that stay live (each its tenant's newest task), while the
#: rest of the plan's tasks are removed slice by slice.
PLAN_KEPT = "deployer:plan:{plan_id}:kept"


def plan_archiving(plan_id: str) -> str:
    return PLAN_ARCHIVING.format(plan_id=plan_id)


def plan_kept(plan_id: str) -> str:
    return PLAN_KEPT.format(plan_id=plan_id)
