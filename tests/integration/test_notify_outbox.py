"""The notification outbox on a real Redis: an event that notifies is queued by the script
that writes it; claims fan it out per receiver and lease it; settling retries with backoff,
gives up after the attempts allowed, and counts and records each failure."""

from __future__ import annotations

import pytest

from deployer import audit
from deployer.notify.outbox import MARGIN_MS, Attempt, Outbox
from deployer.settings import NotifyReceiver, Settings
from tests.helpers import unique

NOW = 1_900_000_000_000


@pytest.fixture()
def settings() -> Settings:
    return Settings(notify_max_attempts=3, notify_backoff_seconds=1.0, notify_timeout_seconds=5)


def receivers(**events: list[str]) -> dict[str, NotifyReceiver]:
    return {name: NotifyReceiver(url="http://127.0.0.1:9/x", events=tuple(e))
            for name, e in events.items()}  # fmt: skip


def drain(r) -> None:
    """An empty outbox, marked as delivered (what a worker's first claim does)."""
    for key in r.scan_iter("deployer:notify:*"):
        r.delete(key)
    Outbox(r, Settings()).claim({}, [])


def mine(deliveries, *event_ids):
    """The claims of these events (a plan of another test may end meanwhile)."""
    return [d for d in deliveries if d.event_id in event_ids]


def test_an_event_that_notifies_is_queued_with_the_plans_counts(r, settings):
    drain(r)
    plan_id = unique("ob")
    r.hset(f"deployer:plan:{plan_id}", mapping={"status": "PAUSED", "total": 5, "c:FAILED": 2,
                                                 "stopReason": "budget"})  # fmt: skip
    event_id = audit.record(r, {"type": "BUDGET_EXCEEDED", "planId": plan_id, "wave": 1}, settings)
    other = audit.record(r, {"type": "WAVE_STARTED", "planId": plan_id, "wave": 1}, settings)
    queued = r.zrange("deployer:notify:outbox", 0, -1)
    assert event_id in queued and other not in queued  # WAVE_STARTED does not notify
    stored = r.hgetall(f"deployer:notify:event:{event_id}")
    assert stored["type"] == "BUDGET_EXCEEDED" and stored["plan.c:FAILED"] == "2"
    assert stored["plan.stopReason"] == "budget" and stored["plan.total"] == "5"
    ttl = r.pttl(f"deployer:notify:event:{event_id}")
    assert 0 < ttl <= settings.notify_retention_seconds * 1000


def test_claims_fan_out_per_receiver_and_lease_what_they_take(r, settings):
    drain(r)
    plan_id = unique("ob")
    event_id = audit.record(r, {"type": "PLAN_COMPLETED", "planId": plan_id}, settings)
    outbox = Outbox(r, settings)
    rx = receivers(ops=["PLAN_COMPLETED"], chat=["PLAN_COMPLETED"], quiet=["PLAN_FAILED"])
    got = mine(outbox.claim(rx, ready=["ops"], now=NOW), event_id)
    assert [(d.receiver, d.event_id, d.attempt) for d in got] == [("ops", event_id, 1)]
    assert got[0].fields["planId"] == plan_id
    assert r.zcard("deployer:notify:outbox") == 0  # handed to the receivers' queues
    assert r.zscore("deployer:notify:due:ops", event_id) == NOW + 5000 + MARGIN_MS  # leased
    assert r.zscore("deployer:notify:due:chat", event_id) == NOW  # due, not claimed (busy)
    assert r.zcard("deployer:notify:due:quiet") == 0  # not its event
    assert mine(outbox.claim(rx, ready=["ops"], now=NOW + 1000), event_id) == []  # leased
    again = mine(outbox.claim(rx, ready=["ops"], now=NOW + 7001), event_id)  # lapsed: died
    assert [(d.receiver, d.attempt) for d in again] == [("ops", 2)]


def test_failures_back_off_then_give_up_counted_and_recorded(r, settings):
    drain(r)
    plan_id = unique("ob")
    event_id = audit.record(r, {"type": "PLAN_FAILED", "planId": plan_id}, settings)
    outbox = Outbox(r, settings)
    rx = receivers(ops=["PLAN_FAILED"])
    before = int(r.hget("deployer:stats", "nt|ops|PLAN_FAILED|failed") or 0)
    now = NOW
    for attempt in (1, 2):
        (d,) = mine(outbox.claim(rx, ready=["ops"], now=now), event_id)
        assert d.attempt == attempt
        assert outbox.settle([Attempt(d, False, "HTTP 500")], now=now) == 1
        delay = 1000 * 2 ** (attempt - 1)
        assert r.zscore("deployer:notify:due:ops", event_id) == now + delay
        assert mine(outbox.claim(rx, ready=["ops"], now=now + delay - 1), event_id) == []
        now += delay
    (d,) = mine(outbox.claim(rx, ready=["ops"], now=now), event_id)
    outbox.settle([Attempt(d, False, "timed out after 5s")], now=now)  # the 3rd: given up
    assert r.zscore("deployer:notify:due:ops", event_id) is None
    assert int(r.hget("deployer:stats", "nt|ops|PLAN_FAILED|failed")) == before + 3
    assert int(r.hget("deployer:stats", "nt|ops|PLAN_FAILED|dropped")) >= 1
    history = [f for _, f in r.xrange(f"deployer:events:plan:{plan_id}")]
    kinds = [f["type"] for f in history]
    assert kinds.count("NOTIFICATION_FAILED") == 2 and kinds[-1] == "NOTIFICATION_DROPPED"
    assert history[-1]["error"] == "timed out after 5s" and history[-1]["receiver"] == "ops"


def test_a_delivery_settles_once_and_an_expired_event_is_dropped(r, settings):
    drain(r)
    outbox = Outbox(r, settings)
    rx = receivers(ops=["PLAN_CANCELLED"])
    delivered = audit.record(r, {"type": "PLAN_CANCELLED", "planId": unique("ob")}, settings)
    expired = audit.record(r, {"type": "PLAN_CANCELLED", "planId": unique("ob")}, settings)
    outbox.claim(rx, ready=[], now=NOW)  # fan out only
    r.delete(f"deployer:notify:event:{expired}")  # its retention passed
    (d,) = mine(outbox.claim(rx, ready=["ops"], now=NOW), delivered, expired)
    assert d.event_id == delivered
    assert outbox.settle([Attempt(d, True, "HTTP 204")], now=NOW) == 1
    assert outbox.settle([Attempt(d, True, "HTTP 204")], now=NOW) == 0  # another worker's late
    assert r.zscore("deployer:notify:due:ops", delivered) is None
    assert r.zscore("deployer:notify:due:ops", expired) is None


def test_nothing_is_queued_while_no_worker_delivers_notifications(r, settings):
    """A Redis whose workers have no receivers keeps no outbox (and enabling receivers
    later does not replay old events); a delivering worker's claim turns queueing on."""
    drain(r)
    r.delete("deployer:notify:active")
    quiet = audit.record(r, {"type": "PLAN_COMPLETED", "planId": unique("ob")}, settings)
    assert r.zscore("deployer:notify:outbox", quiet) is None
    assert not r.exists(f"deployer:notify:event:{quiet}")
    Outbox(r, settings).claim(receivers(ops=["PLAN_COMPLETED"]), ready=[])
    assert 0 < r.pttl("deployer:notify:active") <= 3_600_000
    heard = audit.record(r, {"type": "PLAN_COMPLETED", "planId": unique("ob")}, settings)
    assert r.zscore("deployer:notify:outbox", heard) is not None
