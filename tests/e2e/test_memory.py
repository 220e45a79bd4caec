"""Messages that cost a worker memory out of all proportion to their size are refused first.

On each broker a real `celery worker` (main process + 2 pool processes) receives:

- 13 MB of nested empty lists as a plan (under the depth and byte limits: 4.4 million
  lists) — before, the main process went to 1,012 MB and a pool process to 1,222 MB;
- an envelope whose ETA is ten years ahead — before, never acknowledged, restored by the
  Redis transport every visibility timeout (11 copies held after 36 minutes).

Both are dead-lettered; the peak resident memory (VmHWM, read from /proc) of every process
of the worker stays under 150 MB; nothing is left unacknowledged to come back later; and a
plan submitted with a lone surrogate in its planId gets a rejection its caller can read.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deployer import deadletter
from tests.e2e.conftest import Broker
from tests.e2e.test_armor import a_valid_plan_completes
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

LIMIT_MB = 150
#: The worker's own visibility timeout: a restored copy would be back well within the window.
VISIBILITY = 10


def peak_mb(pid: int) -> int:
    """The peak resident memory of a process so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no VmHWM for {pid}")


def worker_pids(main: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{main}/task").iterdir():
        children += [int(p) for p in (task / "children").read_text().split()]
    return [main, *children]


def peaks(main: int) -> dict[int, int]:
    return {pid: peak_mb(pid) for pid in worker_pids(main)}


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
@pytest.mark.timeout(300)
def test_nested_lists_and_far_etas_are_dead_lettered_in_bounded_memory(
    spawn_worker, broker: Broker, r: Any
) -> None:
    broker.clear()
    env = broker.worker_env(DEPLOYER_VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY))
    worker = spawn_worker("memory", concurrency=2, env=env)
    wait_for(lambda: len(worker_pids(worker.pid)) == 3, what="two pool processes")
    before = peaks(worker.pid)
    nested = b"[[" + b"[]," * 4_400_000 + b"[]], {}, {}]"  # 13.2 MB, depth 3
    ids = {
        broker.publish("deployer.submit_plan", nested): "more than 3000000 JSON values",
        broker.publish(
            "deployer.pause",
            json.dumps([[{"planId": "far"}], {}, None]).encode(),
            eta=(datetime.now(UTC) + timedelta(days=3650)).isoformat(),
        ): "s ahead, beyond the 60s horizon",
    }

    def refused() -> dict[str, str]:
        found = {f["id"]: f["reason"] for f in deadletter.read(r, 100)}
        return found if set(ids) <= set(found) else {}

    reasons = wait_for(refused, timeout=120, what="both dead-lettered")
    for task_id, expected in ids.items():
        assert expected in reasons[task_id], reasons
    wait_for(broker.drained, what="nothing left unacknowledged")
    after = peaks(worker.pid)
    print(f"\n{broker.name}: peak RSS MB before {before}, after {after}")
    assert all(mb < LIMIT_MB for mb in after.values()), after
    assert worker.poll() is None
    # Nothing comes back: past the visibility timeout and kombu's restore interval, no
    # copy was restored (it would be refused, and dead-lettered, a second time).
    letters = len(deadletter.read(r, 100))
    window = datetime.now(UTC) + timedelta(seconds=VISIBILITY + 12)
    wait_for(
        lambda: (len(deadletter.read(r, 100)) > letters) or datetime.now(UTC) > window,
        timeout=VISIBILITY + 30,
        interval=0.5,
        what="the restore window",
    )
    assert len(deadletter.read(r, 100)) == letters and broker.drained()
    if broker.rabbit is not None:  # RabbitMQ keeps both in its dead-letter queue
        assert broker.rabbit.ready("deployer.dead-letters") == len(ids)
    a_valid_plan_completes(r, broker.url)


def test_a_lone_surrogate_in_a_plan_id_gets_a_rejection_its_caller_reads(
    spawn_worker, broker: Broker, r: Any
) -> None:
    broker.clear()
    spawn_worker("surrogate", concurrency=2, env=broker.worker_env())
    plan_id = "p-\ud800-x"  # JSON can carry it (\ud800); UTF-8 cannot
    body = json.dumps([[{"planId": plan_id, "tenants": [{"tenantId": "t"}]}], {}, None])
    task_id = broker.publish("deployer.submit_plan", body.encode())
    escaped = json.dumps(plan_id)[1:-1]  # as JSON writes it: p-\ud800-x

    def rejection() -> dict[str, Any] | None:
        found = [f for _, f in r.xrange("deployer:rejections") if f["planId"] == escaped]
        return found[-1] if found else None

    entry = wait_for(rejection, what="the rejection under the planId, JSON-escaped")
    assert entry["code"] == "PLAN_INVALID"
    assert any(e["field"] == "planId" for e in json.loads(entry["errors"]))
    assert not any(f["id"] == task_id for f in deadletter.read(r, 100))  # ran, not refused
