"""A worker's notifier, in a maintenance loop, on a real Redis with real HTTP receivers: a
receiver that hangs holds up only its own deliveries, each call ends at its deadline, and the
hanging one is retried later while the healthy one was served at once."""

from __future__ import annotations

import threading
from collections import Counter

from deployer import audit
from deployer.maintenance import Duty, MaintenanceLoop
from deployer.notify.outbox import Outbox
from deployer.notify.sender import Notifier
from deployer.settings import Settings
from tests.helpers import unique, wait_for
from tests.notify_receiver import Receiver


def test_a_hanging_receiver_holds_up_nothing_but_its_own_deliveries(r):
    release = threading.Event()
    hanging = Receiver(lambda request, n: (release.wait(10), 200)[1])
    healthy = Receiver()
    settings = Settings(
        notify={
            "slow": {"url": hanging.url, "events": ["PLAN_FAILED"]},
            "fast": {"url": healthy.url, "events": ["PLAN_FAILED"]},
        },
        notify_timeout_seconds=2.0,
        notify_backoff_seconds=0.2,
        notify_interval_seconds=0.05,
    )
    notifier = Notifier(r, settings)
    loop = MaintenanceLoop(
        [Duty("notify", notifier.tick, settings.notify_interval_seconds, stop=notifier.stop)]
    )
    Outbox(r, settings).claim({}, [])  # what the notifier's first tick does: the outbox is on
    plan_ids = [unique("nt") for _ in range(3)]
    try:
        for plan_id in plan_ids:
            audit.record(r, {"type": "PLAN_FAILED", "planId": plan_id}, settings)
        loop.start()

        def served() -> bool:
            got = {q.body["planId"] for q in healthy.accepted("PLAN_FAILED")}
            return set(plan_ids) <= got

        wait_for(served, timeout=10, what="the healthy receiver served")
        # all three while the other receiver's first call still hung (its deadline is 2 s)
        assert len(hanging.seen()) == 1 and not hanging.accepted()

        # its calls end at their deadline, one after another, and are tried again (same key)
        def retried() -> bool:
            keys = Counter(q.key for q in hanging.seen())
            return bool(keys) and max(keys.values()) >= 2

        wait_for(retried, timeout=20, what="a retry after the deadlines")
        release.set()
        wait_for(lambda: {q.body["planId"] for q in hanging.accepted()} >= set(plan_ids),
                 timeout=20, what="the slow receiver served in the end")  # fmt: skip
        assert all(q.headers["idempotency-key"] for q in hanging.seen())
    finally:
        release.set()
        loop.stop()
        hanging.close()
        healthy.close()
