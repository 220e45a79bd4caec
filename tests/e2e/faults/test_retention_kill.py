"""kill -9 of a worker in the middle of archiving a 10,000-tenant plan: after a restart the
archive holds every task and event of it exactly once, and Redis no longer holds the plan.

The plan is written by the batch create path (Store.create_plan, in slices) and its tasks are
ended by the same Lua the stages use (the prelude's change_status), with one event each: a
finished 10,000-tenant plan without running 10,000 tenants. A second plan on the same tenants
is their newest, so nothing of the first one stays live. Killed twice: once while the archive
copy is being written, once while Redis is being emptied."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from deployer.models import task_id_for
from deployer.settings import get_settings
from deployer.state import keys
from deployer.state.store import Store, TaskRow
from tests.helpers import unique, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

TENANTS = 10_000
END = """
local now = tonumber(ARGV[4])
change_status(KEYS[1], KEYS[2], 'COMPLETED', now)
redis.call('HSET', KEYS[1], 'endedAt', now, 'startedAt', now - 5, 'runKind', 'FORWARD')
emit('deployer:events', 100000, {'type', 'TASK_COMPLETED', 'planId', ARGV[1], 'taskId', ARGV[2],
  'tenantId', ARGV[3], 'stage', 'blue-green-gateway', 'ts', now})
return 1
"""


def finished_plan(r: Any, store: Store, tenants: list[str], version: int) -> str:
    plan_id = unique("big")
    rows = [TaskRow(t, 1, json.dumps({"tenantId": t, "planVersion": version})) for t in tenants]
    assert store.create_plan(plan_id, rows, 10, f"{plan_id}-")
    return plan_id


def end_all(r: Any, plan_id: str, tenants: list[str]) -> None:
    prelude = resources.files("deployer.state").joinpath("lua/_prelude.lua").read_text()
    script = r.register_script(prelude + END)
    for start in range(0, len(tenants), 1000):
        pipe = r.pipeline(transaction=False)
        for t in tenants[start : start + 1000]:
            task_id = task_id_for(plan_id, t)
            script(keys=[keys.task(task_id), keys.plan(plan_id)],
                   args=[plan_id, task_id, t, 1_000_000], client=pipe)  # fmt: skip
        pipe.execute()


def archived_counts(url: str, plan_id: str) -> tuple[int, int, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:

            def count(sql: str) -> int:
                return int(conn.execute(text(sql), {"p": plan_id}).scalar() or 0)

            return (count("SELECT count(*) FROM tasks WHERE plan_id = :p"),
                    count("SELECT count(DISTINCT task_id) FROM tasks WHERE plan_id = :p"),
                    count("SELECT count(*) FROM events WHERE plan_id = :p"))  # fmt: skip
    except Exception:  # noqa: BLE001 - tables not created yet
        return (0, 0, 0)
    finally:
        engine.dispose()


@pytest.mark.parametrize("phase", ["copy", "remove"])
def test_a_worker_killed_mid_archiving_a_big_plan_loses_and_duplicates_nothing(
    supervisor, r, tmp_path, phase
):
    url = f"sqlite:///{tmp_path / 'archive.sqlite3'}"
    store = Store(r, get_settings())
    tenants = [f"{unique('k')}" for _ in range(TENANTS)]
    old = finished_plan(r, store, tenants, 1)
    newer = finished_plan(r, store, tenants, 2)  # the tenants' newest: the old plan goes whole
    end_all(r, old, tenants)
    assert r.hget(keys.plan(old), "status") == "COMPLETED"
    events_before = r.xlen(keys.events_plan(old))
    supervisor.env.update({
        "DEPLOYER_ARCHIVE_URL": url,
        "DEPLOYER_RETENTION_SECONDS": "1",
        "DEPLOYER_RETENTION_INTERVAL_SECONDS": "1",
        "DEPLOYER_RETENTION_LOCK_SECONDS": "3",
        "DEPLOYER_RETENTION_SLICE": "20",  # many short slices: the kill lands between two
    })  # fmt: skip
    supervisor.start("w1")
    lock = keys.plan_archiving(old)
    if phase == "copy":
        wait_for(lambda: 0 < archived_counts(url, old)[0] < TENANTS, timeout=60, interval=0.02,
                 what="the archive copy half written")  # fmt: skip
    else:
        wait_for(lambda: r.hget(keys.plan(old), "archiving") == "1"
                 and 0 < r.llen(keys.plan_tenants(old)) < TENANTS - 100,
                 timeout=90, interval=0.01, what="Redis half emptied")  # fmt: skip
    supervisor.kill("w1")
    assert r.exists(lock)  # the dead worker's lock: nobody else archives the plan until it lapses
    if phase == "copy":
        assert r.llen(keys.plan_tenants(old)) == TENANTS  # nothing removed before the copy
    supervisor.start("w1")
    wait_for(lambda: not r.exists(keys.plan(old)), timeout=120, what="old plan gone from Redis")
    tasks, distinct, events = archived_counts(url, old)
    assert tasks == distinct == TENANTS
    assert events == events_before
    left = list(r.scan_iter(f"deployer:task:{task_id_for(old, '')}*", count=5000))
    assert left == [] and not r.exists(keys.events_plan(old))
    assert not any(True for _ in r.scan_iter(f"deployer:plan:{old}*"))
    # the tenants' newest tasks (the other plan) are untouched
    assert r.llen(keys.plan_tenants(newer)) == TENANTS
    assert r.get(keys.tenant(tenants[0])) == task_id_for(newer, tenants[0])
    end_all(r, newer, tenants)  # leave a finished plan, not 10,000 pending tasks
