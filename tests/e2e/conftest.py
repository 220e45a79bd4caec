"""Both brokers for end-to-end tests: the session's Redis, and a RabbitMQ vhost of the
session's own (tests/rabbit.py; skipped loudly when there is none). State, configs and dead
letters stay in the session's Redis either way, as in a deployment on RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from tests.helpers import worker_env
from tests.rabbit import DEAD_LETTERS, QUEUES, Rabbit

#: Redis keys of kombu's Redis transport that hold messages not yet acknowledged.
UNACKED = ("unacked", "unacked_index", "unacked_mutex")


@dataclass
class Broker:
    """Where the workers under test take their messages from."""

    name: str
    url: str
    r: redis.Redis  # the state Redis
    rabbit: Rabbit | None = None

    def worker_env(self, **extra: str) -> dict[str, str]:
        return worker_env(DEPLOYER_BROKER_URL=self.url, **extra)

    def clear(self) -> None:
        """No dead letters and no queued or unacknowledged message: an earlier test's killed
        worker may have left one (restored later), which is not this test's to drain."""
        self.r.delete("deployer:dead-letters")
        if self.rabbit is not None:
            self.rabbit.purge(*QUEUES, DEAD_LETTERS)
            return
        self.r.delete(*UNACKED)
        for q in QUEUES:
            for key in self.r.scan_iter(match=f"{q}*"):
                self.r.delete(key)

    def publish(
        self, task: str, body: bytes, queue: str = "deployer.control", **headers: Any
    ) -> str:
        """A protocol-2 message with exactly this JSON `body` (bytes, sent as they are) and
        headers, from a bare kombu producer: what any client can send. Answers its id."""
        task_id = str(uuid.uuid4())
        with Connection(self.url) as conn:
            conn.Producer().publish(
                body,
                exchange="",
                routing_key=queue,
                content_type="application/json",
                content_encoding="utf-8",
                headers={"lang": "py", "task": task, "id": task_id, **headers},
                declare=[Queue(queue, Exchange(queue, type="direct"), routing_key=queue)],
            )
        return task_id

    def drained(self) -> bool:
        """Nothing waiting on our queues (any priority) and nothing unacknowledged."""
        if self.rabbit is not None:
            counts = self.rabbit.unsettled(*QUEUES)
            return all(counts.get(q, (0, 0)) == (0, 0) for q in QUEUES)
        waiting = sum(self.r.llen(k) for q in QUEUES for k in self.r.scan_iter(match=f"{q}*"))
        return waiting == 0 and self.r.hlen("unacked") == 0


@pytest.fixture(params=["redis", "amqp"])
def broker(request: Any, redis_url: str, r: redis.Redis) -> Iterator[Broker]:
    """Each test that takes it runs once per broker."""
    if request.param == "amqp":
        rabbit: Rabbit = request.getfixturevalue("rabbit")
        yield Broker("amqp", rabbit.url, r, rabbit)
    else:
        yield Broker("redis", redis_url, r)


@pytest.fixture()
def redis_broker(redis_url: str, r: redis.Redis) -> Broker:
    """The session's Redis as the broker (tests of Redis envelopes)."""
    return Broker("redis", redis_url, r)


@pytest.fixture()
def amqp_broker(rabbit: Rabbit, r: redis.Redis) -> Broker:
    """RabbitMQ as the broker (tests of AMQP frames)."""
    return Broker("amqp", rabbit.url, r, rabbit)
