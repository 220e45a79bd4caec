"""A notification survives its worker: killed (kill -9) while the event's delivery is in
flight, the worker that comes back delivers it, under the same idempotency key."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from deployer.client import DeployerClient
from tests.e2e.faults.conftest import FAST_ENV, Supervisor
from tests.helpers import bg_tenant, plan, unique, wait_for, worker_env
from tests.notify_receiver import Receiver, Request

pytestmark = pytest.mark.faults


def test_a_worker_killed_between_event_and_delivery_delivers_after_restart(tmp_path: Path, r):
    release = threading.Event()
    held = threading.Event()

    plan_id = unique("notify-kill")

    def answer(request: Request, n: int) -> int:
        if request.body.get("planId") == plan_id and n == 0:
            held.set()  # the worker is inside the call now
            release.wait(60)
            return 503  # (to a dead sender: whatever this says, it never counts as delivered)
        return 200

    receiver = Receiver(answer)

    def mine() -> list[Request]:
        return [q for q in receiver.accepted("PLAN_COMPLETED") if q.body["planId"] == plan_id]

    env = worker_env(
        **FAST_ENV,
        DEPLOYER_NOTIFY=json.dumps({"ops": {"url": receiver.url, "events": ["PLAN_COMPLETED"]}}),
        DEPLOYER_NOTIFY_TIMEOUT_SECONDS="5",
        DEPLOYER_NOTIFY_INTERVAL_SECONDS="0.2",
    )
    sup = Supervisor(tmp_path, env, concurrency=1)
    try:
        sup.start("nk")
        wait_for(lambda: r.exists("deployer:notify:active"), what="the worker delivers")
        DeployerClient().submit(plan(plan_id, [bg_tenant(f"{plan_id}-t")]))
        wait_for(held.is_set, timeout=40, what="the completion notification in flight")
        sup.kill("nk")  # kill -9 of the worker (main process and pool) mid-delivery
        release.set()
        assert not mine()  # nothing was delivered

        sup.start("nk")  # the restarted worker (any worker) picks it up once the claim lapses
        wait_for(mine, timeout=30, what="completion delivered after the restart")
        attempts = [q for q in receiver.seen() if q.body.get("planId") == plan_id]
        assert len({q.key for q in attempts}) == 1
        assert [q.headers["x-deployer-attempt"] for q in attempts] == ["1", "2"]
        assert len(mine()) == 1
        assert r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED"
    finally:
        release.set()
        sup.stop()
        receiver.close()
