"""The read models' round trips to the state Redis: a fixed number per request, whatever the
plan's size (`deployer status` and the HTTP API read a plan on every request; the CLI's
answer should stay within 300 ms).

Counted on a private server through a connection that counts what it sends (each pipeline
is one send), so no other test's traffic blurs the figures. Before deployer/state/plans.py:
a plan view took 3, a plan page 3, an unfiltered task page 3, and a plan diff 2 + 2 per
tenant owned by another plan.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from deployer import views
from deployer.archive import views as history
from deployer.diff import diff_plan
from deployer.settings import get_settings
from deployer.state.store import Store
from tests.helpers import bg_tenant, plan, task_rows, unique


class CountingConnection(redis.Connection):
    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


@pytest.fixture()
def private() -> Iterator[redis.Redis]:
    from deployer.embedded import EmbeddedRedis

    with EmbeddedRedis() as server:
        pool = redis.ConnectionPool.from_url(
            server.url, decode_responses=True, connection_class=CountingConnection
        )
        client = redis.Redis(connection_pool=pool)
        client.ping()
        yield client
        client.close()


def round_trips(call: Any) -> int:
    call()  # scripts loaded, connection open
    before = CountingConnection.sent
    call()
    return CountingConnection.sent - before


def stored(store: Store, tenants: list[str], **extra: Any) -> str:
    plan_id, rows = task_rows(plan(unique(), [bg_tenant(t) for t in tenants], **extra),
                              store.settings)  # fmt: skip
    assert store.create_plan(plan_id, rows, 10, unique("run") + "-")
    return plan_id


@pytest.mark.parametrize("size", [3, 60])
def test_a_plan_and_its_pages_are_read_in_a_fixed_number_of_round_trips(private, size):
    store = Store(private, get_settings())
    plan_id = stored(store, [unique("rt") for _ in range(size)])
    assert round_trips(lambda: views.plan_view(store, plan_id)) == 2
    assert round_trips(lambda: history.plan_view(store, None, plan_id)) == 2
    assert round_trips(lambda: views.task_page(store, plan_id, limit=50)) == 2
    assert round_trips(lambda: views.task_page(store, plan_id, status="FAILED")) == 2
    assert round_trips(lambda: views.plans_page(store)) == 2
    assert round_trips(lambda: views.plan_view(store, "no-such-plan")) == 1


@pytest.mark.parametrize("size", [2, 40])
def test_a_plan_diff_reads_the_state_in_a_fixed_number_of_round_trips(private, size):
    """Each tenant's latest task belongs to another plan: its plan, status and age were read
    one tenant at a time."""
    store = Store(private, get_settings())
    tenants = [unique("rd") for _ in range(size)]
    stored(store, tenants)  # the other plan, owning every tenant
    payload = plan(unique(), [bg_tenant(t) for t in tenants])
    # the target is the same server here: its config read is one of the round trips
    answer = diff_plan(payload, store.settings, private, private)
    assert answer["summary"]["ownedElsewhere"] == size
    assert round_trips(lambda: diff_plan(payload, store.settings, private, private)) == 4
