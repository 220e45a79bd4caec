"""No message makes a worker publish what its sender chose: relays are dead-lettered.

A valid `deployer.pause` whose envelope embeds a `chain` of 51 `billing.refund_all`
signatures on queue `billing`, callbacks and errbacks naming `celery.chord_unlock` on
`celery`, and a stage message whose chain hides a foreign task, are sent with a bare kombu
producer on each broker. Each is dead-lettered; afterwards no queue but deployer's holds or
ever received a message (Redis: no new list; RabbitMQ: the queues declared beforehand are
empty and no other queue appeared), and deployer's own multi-stage chains still run.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue

from deployer import deadletter
from tests.e2e.conftest import Broker
from tests.e2e.test_armor import a_valid_plan_completes, bare_send
from tests.helpers import bg_tenant, plan, unique, wait_for

pytestmark = pytest.mark.e2e

FOREIGN = ("billing", "celery")


def signature(task: str, queue: str, **options: Any) -> dict[str, Any]:
    return {
        "task": task,
        "args": [],
        "kwargs": {},
        "options": {"queue": queue, **options},
        "subtask_type": None,
        "immutable": False,
    }


def stage_spec() -> dict[str, Any]:
    return {"name": "blue-green-gateway", "service": "blue-green-gateway", "steps": []}


def relays() -> list[tuple[str, str, list[Any]]]:
    """(task, queue, body) of every relay tried."""
    refund = signature("billing.refund_all", "billing")
    unlock = signature("celery.chord_unlock", "celery")
    target = [{"planId": unique()}]
    own_stage = signature("deployer.run_stage", "deployer.stages") | {"args": [stage_spec()]}
    ctx = {"planId": "p", "taskId": "task-p:t", "tenantId": "t", "runId": "r"}
    return [
        ("deployer.pause", "deployer.control", [target, {}, {"chain": [refund] * 51}]),
        ("deployer.pause", "deployer.control", [target, {}, {"callbacks": [unlock]}]),
        ("deployer.cancel", "deployer.control", [target, {}, {"errbacks": [unlock]}]),
        ("deployer.pause", "deployer.control", [target, {}, {"chain": [own_stage]}]),
        ("deployer.run_stage", "deployer.stages", [[ctx, stage_spec()], {}, {"chain": [refund]}]),
        (
            "deployer.run_stage",
            "deployer.stages",
            [
                [ctx, stage_spec()],
                {},
                {
                    "chain": [
                        own_stage,
                        own_stage | {"options": {"queue": "deployer.stages", "link": [unlock]}},
                    ]
                },
            ],
        ),  # fmt: skip
        (
            "deployer.run_stage",
            "deployer.stages",
            [[ctx, stage_spec()], {}, {"chain": [own_stage], "callbacks": [unlock]}],
        ),
        (
            "deployer.run_stage",
            "deployer.stages",
            [[ctx, stage_spec()], {}, {"chain": [own_stage | {"options": {"queue": "celery"}}]}],
        ),
    ]


def send_raw(url: str, task: str, queue: str, body: list[Any]) -> str:
    """A protocol-2 message with exactly this body, from a bare kombu producer."""
    task_id = str(uuid.uuid4())
    with Connection(url) as conn:
        producer = conn.Producer(serializer="json")
        producer.publish(
            body,
            exchange="",
            routing_key=queue,
            headers={"lang": "py", "task": task, "id": task_id},
            declare=[Queue(queue, Exchange(queue, type="direct"), routing_key=queue)],
        )
    return task_id


def lists(broker: Broker) -> set[str]:
    # filtered by the server: the session's Redis holds every earlier test's keys, and one
    # TYPE round trip per key took longer than the test's whole budget on a slow machine
    return set(broker.r.scan_iter(count=5000, _type="LIST"))


def test_relays_in_an_envelope_publish_nothing_anywhere(spawn_worker, broker: Broker, r):
    broker.clear()
    if broker.rabbit is not None:  # would receive what a relay sends
        with Connection(broker.url) as conn:
            for name in FOREIGN:
                Queue(name, Exchange(name, type="direct"), routing_key=name)(conn).declare()
        queues_before = set(broker.rabbit.unsettled())
    else:
        r.delete(*FOREIGN)
    lists_before = lists(broker)
    worker = spawn_worker("relays", concurrency=2, env=broker.worker_env())
    sent = {send_raw(broker.url, task, queue, body): task for task, queue, body in relays()}

    def refused() -> dict[str, str]:
        found = {f["id"]: f["reason"] for f in deadletter.read(r, 1000)}
        return found if set(sent) <= set(found) else {}

    reasons = wait_for(refused, what="every relay dead-lettered")
    assert all(reason.startswith("embed.") for reason in reasons.values()), reasons
    wait_for(broker.drained, what="nothing queued or unacked")
    # deployer's own chains (two stages: the first carries the second) still run
    plan_id = unique()
    tenant = bg_tenant(f"{plan_id}-t0", serviceNames=["blue-green-gateway", "ob-service"])
    bare_send(broker.url, "deployer.submit_plan", [plan(plan_id, [tenant])])
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED", timeout=60)
    a_valid_plan_completes(r, broker.url)
    if broker.rabbit is not None:
        counts = broker.rabbit.unsettled()
        assert {q: counts[q] for q in FOREIGN} == {q: (0, 0) for q in FOREIGN}
        created = {
            q for q in set(counts) - queues_before
            if not q.startswith("deployer.") and not q.endswith(".celery.pidbox")
        }  # fmt: skip
        assert not created, created  # no queue declared for a relay either
    else:
        assert not r.exists(*FOREIGN)
        ours = ("deployer:", "deployer.control", "deployer.stages")  # state, our queues
        created = {k for k in lists(broker) - lists_before if not k.startswith(ours)}
        assert not created, created  # no list for a relay's queue either
    assert worker.poll() is None
    log = worker.log.read_text()
    assert "billing.refund_all[" not in log and "celery.chord_unlock[" not in log
    print(f"\nrelays over {broker.name}: {len(sent)} dead-lettered, nothing published")
