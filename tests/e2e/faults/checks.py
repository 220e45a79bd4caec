"""What a fault test asserts afterwards: every tenant landed once, nothing stuck."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import redis

PREFIX = "icc_ai_ops_srv:tenant_config:"
LIVE = {"PENDING", "RUNNING", "ROLLING_BACK"}


@dataclass
class Outcome:
    statuses: Counter[str] = field(default_factory=Counter)
    wrong_version: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    completed_twice: list[str] = field(default_factory=list)
    redriven: int = 0
    redeliveries: int = 0


def plan_events(r: redis.Redis, plan_id: str) -> list[dict[str, str]]:
    return [fields for _, fields in positioned_events(r, plan_id)]


def positioned_events(r: redis.Redis, plan_id: str) -> list[tuple[tuple[int, int], dict[str, str]]]:
    """The plan's events with their place in the one events stream: (ms, sequence) of the
    entry ID, which Redis assigns in the order it ran the scripts that emitted them. That
    order is the truth about what ran before what; an event's `ts` is the clock of the
    worker that sent the script, read before the script ran."""
    out = []
    last = "-"
    for _ in range(10_000):  # bounded paging through the events stream
        batch = r.xrange("deployer:events", min=last, max="+", count=5000)
        if last != "-":
            batch = batch[1:]
        if not batch:
            break
        out += [(_position(i), f) for i, f in batch if f.get("planId") == plan_id]
        last = batch[-1][0]
    return out


def _position(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def outcome(
    r: redis.Redis, plan_id: str, version: int, target: redis.Redis | None = None
) -> Outcome:
    """Check every task of `plan_id`; `target` holds the config hashes (default: `r`)."""
    target = target or r
    task_ids = r.lrange(f"deployer:plan:{plan_id}:tenants", 0, -1)
    out = Outcome()
    pipe = r.pipeline(transaction=False)
    for tid in task_ids:
        pipe.hmget(f"deployer:task:{tid}", "status", "tenantId", "redeliveries")
    rows = pipe.execute()
    inflight = set(r.zrange("deployer:inflight", 0, -1))
    for tid, (status, tenant, redeliveries) in zip(task_ids, rows, strict=True):
        out.statuses[status] += 1
        out.redeliveries += int(redeliveries or 0)
        if status in LIVE or tid in inflight:
            out.stuck.append(tid)
        meta = target.hget(PREFIX + tenant, "metadata")
        if meta is None or json.loads(meta) != {"version": version}:
            out.wrong_version.append(tenant)
    done = Counter(e["taskId"] for e in plan_events(r, plan_id) if e["type"] == "TASK_COMPLETED")
    out.completed_twice = [t for t, n in done.items() if n > 1]
    out.redriven = sum(1 for e in plan_events(r, plan_id) if e["type"] == "TASK_REDRIVEN")
    return out


def failures(r: redis.Redis, plan_id: str, limit: int = 5) -> list[tuple[str, str, str]]:
    """(task, status, lastError) of tasks that did not complete, for assertion messages."""
    out = []
    for tid in r.lrange(f"deployer:plan:{plan_id}:tenants", 0, -1):
        status, error = r.hmget(f"deployer:task:{tid}", "status", "lastError")
        if status != "COMPLETED":
            out.append((tid, status, error))
            if len(out) >= limit:
                break
    return out
