"""Every Redis key deployer owns, as templates in one place (the public ones are marked)."""

from __future__ import annotations

PLAN = "deployer:plan:{plan_id}"  # public: field `status`
PLAN_TENANTS = "deployer:plan:{plan_id}:tenants"  # list of task ids, submission order
PLAN_QUEUE = "deployer:plan:{plan_id}:queue"  # task ids waiting for a concurrency slot
PLAN_CLAIM = "deployer:plan:{plan_id}:creating"  # token of the creator of a big plan, TTL
PLANS = "deployer:plans"  # zset plan id -> created ms
TASK = "deployer:task:{task_id}"
TENANT = "deployer:tenant:{tenant_id}"  # latest task id of the tenant
LEASE = "deployer:lease:{tenant_id}"  # token of the run that owns the tenant, with TTL
LEASE_EPOCH = "deployer:lease-epoch:{tenant_id}"  # how many times any run took the tenant
FENCE = "deployer:fence:{tenant_id}"  # in the target Redis when it is another server
INFLIGHT = "deployer:inflight"  # zset task id -> deadline ms; the reconciler's watch list
EVENTS = "deployer:events"  # stream, bounded
REJECTIONS = "deployer:rejections"  # public stream of rejected submissions, bounded


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


def fence(tenant_id: str) -> str:
    return FENCE.format(tenant_id=tenant_id)


def config_hash(prefix: str, tenant_id: str) -> str:
    """The tenant's config hash that the services read (contract)."""
    return f"{prefix}{tenant_id}"


#: Progressive rollout (issue 17). A wave's task ids, fixed at submit:
PLAN_WAVE = "deployer:plan:{plan_id}:wave:{index}"
#: zset plan id -> ms when its wave step is due (bake end, gate re-check, wave finished).
#: Durable: any worker's reconciler advances a due plan, whichever wrote the timer.
PLAN_TIMERS = "deployer:plan-timers"


def plan_wave(plan_id: str, index: int | str) -> str:
    return PLAN_WAVE.format(plan_id=plan_id, index=index)
