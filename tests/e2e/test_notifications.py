"""Notifications from a real worker to real HTTP receivers: a receiver that answers 500 to
every notification's first attempt gets each one again (same idempotency key) and accepts it
once; the JSON body names plan, wave, counts, stop reason and the dashboard link; a Slack
receiver gets its own format; failures are counted and recorded as events."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest

from deployer.client import DeployerClient
from tests.helpers import bg_tenant, plan, unique, wait_for, worker_env
from tests.notify_receiver import Receiver

pytestmark = pytest.mark.e2e


@pytest.fixture()
def flaky() -> Iterator[Receiver]:
    rec = Receiver(lambda request, n: 500 if n == 0 else 200)  # every key: 500, then 200
    yield rec
    rec.close()


@pytest.fixture()
def chat() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


def notify_env(receivers: dict[str, dict[str, object]]) -> dict[str, str]:
    return worker_env(
        DEPLOYER_NOTIFY=json.dumps(receivers),
        DEPLOYER_NOTIFY_BACKOFF_SECONDS="0.3",
        DEPLOYER_NOTIFY_INTERVAL_SECONDS="0.2",
        DEPLOYER_PUBLIC_URL="https://deployer.example/",
    )


def test_notifications_arrive_after_500s_once_per_event_key(spawn_worker, r, flaky, chat):
    env = notify_env({
        "ops": {"url": f"{flaky.url}/hook", "events": ["*"],
                "headers": {"Authorization": "Bearer s3cret"}},
        "chat": {"url": f"{chat.url}/slack", "events": ["PLAN_COMPLETED"], "format": "slack"},
    })  # fmt: skip
    spawn_worker("nw1", concurrency=2, env=env)
    wait_for(lambda: r.exists("deployer:notify:active"), what="a worker delivers notifications")
    client = DeployerClient()
    waiting = unique("notify-appr")
    strategy = {"waves": {"type": "linear", "size": 1}, "approval": "first"}
    client.submit(plan(waiting, [bg_tenant(f"{waiting}-a"), bg_tenant(f"{waiting}-b")],
                       strategy=strategy))  # fmt: skip
    done = unique("notify-done")
    client.submit(plan(done, [bg_tenant(f"{done}-{i}") for i in range(3)]))

    def delivered(event: str, plan_id: str) -> list:
        return [q for q in flaky.accepted(event) if q.body["planId"] == plan_id]

    wait_for(lambda: delivered("WAVE_AWAITING_APPROVAL", waiting), timeout=40,
             what="approval-waiting notification delivered")  # fmt: skip
    wait_for(lambda: delivered("PLAN_COMPLETED", done), timeout=40,
             what="completion notification delivered")  # fmt: skip

    for event, plan_id in (("WAVE_AWAITING_APPROVAL", waiting), ("PLAN_COMPLETED", done)):
        mine = [q for q in flaky.seen() if q.body.get("planId") == plan_id
                and q.body.get("event") == event]  # fmt: skip
        keys = Counter(q.key for q in mine)
        assert len(keys) == 1, keys  # one event, one key, on every attempt
        assert mine[0].answered == 500 and len(mine) >= 2
        assert [q.headers["x-deployer-attempt"] for q in mine[:2]] == ["1", "2"]
        assert len(delivered(event, plan_id)) == 1  # accepted once
        assert mine[0].headers["authorization"] == "Bearer s3cret"
        assert mine[0].path == "/hook"

    approval = delivered("WAVE_AWAITING_APPROVAL", waiting)[0].body
    assert approval["wave"] == 1 and approval["waves"] == 2
    assert approval["counts"] == {"COMPLETED": 1, "PENDING": 1} and approval["total"] == 2
    assert approval["link"] == f"https://deployer.example/plans/{waiting}"
    completion = delivered("PLAN_COMPLETED", done)[0].body
    assert completion["status"] == "COMPLETED" and completion["counts"] == {"COMPLETED": 3}
    assert completion["details"]["completed"] == "3"

    # a receiver of its own format and events, unaffected by the other's failures
    wait_for(lambda: [q for q in chat.seen() if done in q.body.get("text", "")], timeout=20,
             what="slack notification")  # fmt: skip
    slack = [q for q in chat.seen() if done in q.body.get("text", "")]
    assert len(slack) == 1 and slack[0].answered == 200
    assert "completed" in slack[0].body["text"] and "3 completed of 3" in slack[0].body["text"]
    assert all(waiting not in q.body.get("text", "") for q in chat.seen())  # not its event

    # visible: counted, and the failed attempts are events in the plan's history
    # the receiver answers before the worker counts the answer: wait for the count
    stats = wait_for(
        lambda: (s := r.hgetall("deployer:stats")).get("nt|ops|PLAN_COMPLETED|delivered") and s,
        timeout=20, what="the delivery counted",
    )  # fmt: skip
    assert int(stats["nt|ops|PLAN_COMPLETED|failed"]) >= 1
    assert int(stats["nt|ops|PLAN_COMPLETED|delivered"]) >= 1
    failed = [f for _, f in r.xrange(f"deployer:events:plan:{done}")
              if f["type"] == "NOTIFICATION_FAILED"]  # fmt: skip
    assert failed and failed[0]["receiver"] == "ops" and failed[0]["error"] == "HTTP 500"
    assert failed[0]["event"] == "PLAN_COMPLETED" and int(failed[0]["retryInMs"]) >= 300
