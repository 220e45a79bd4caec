"""The two Celery behaviours the stage task relies on (docs/contracts.md §7.1, §7.2).

`tasks/stage.py` stops a chain by setting `request.chain = None` (not a documented Celery
API) and waits by re-sending its stage with the rest of its chain. Both run here through a
real in-process worker on a `memory://` broker, with every published message captured, so
a Celery upgrade that changes either fails this test rather than a rollout.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, Task, chain
from celery.contrib.testing.worker import start_worker
from celery.signals import before_task_publish, task_postrun

from tasks.stage import reschedule, stop_chain
from tests.helpers import wait_for

# Starting and stopping a second in-process worker stalls the session's in-process worker
# for the tests after it (observed: tests/web/test_api.py then timed out), so this runs in the
# e2e session, whose workers are subprocesses.
pytestmark = pytest.mark.e2e

app = Celery("stop-chain-test", broker="memory://", backend=None, set_as_current=False)
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_transport_options={"polling_interval": 0.01},
)

ran: list[str] = []
chain_seen: dict[str, Any] = {}
published: list[tuple[str, Any]] = []
finished: list[str] = []
_lock = threading.Lock()


def _record(name: str) -> None:
    with _lock:
        ran.append(name)


@app.task(name="t.stopper", bind=True)
def stopper(self: Task) -> None:
    chain_seen["before"] = self.request.chain
    stop_chain(self)
    chain_seen["after"] = self.request.chain
    _record("stopper")


@app.task(name="t.poller", bind=True, max_retries=None)
def poller(self: Task, attempt: int) -> None:
    _record(f"poller:{attempt}")
    if attempt == 0:
        reschedule(self, (attempt + 1,), countdown=0.01)


@app.task(name="t.next")
def next_stage() -> None:
    _record("next")


@app.task(name="t.last")
def last_stage() -> None:
    _record("last")


@app.task(name="t.sentinel")
def sentinel() -> None:
    _record("sentinel")


def _on_publish(sender: Any = None, body: Any = None, **_: Any) -> None:
    if isinstance(sender, str) and sender.startswith("t."):
        with _lock:
            published.append((sender, body))


def _on_postrun(sender: Any = None, **_: Any) -> None:
    name = getattr(sender, "name", "")
    if name.startswith("t."):
        with _lock:
            finished.append(name)


@pytest.fixture(scope="module")
def running_worker() -> Iterator[None]:
    before_task_publish.connect(_on_publish, weak=False)
    task_postrun.connect(_on_postrun, weak=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            yield
    finally:
        before_task_publish.disconnect(_on_publish)
        task_postrun.disconnect(_on_postrun)


@pytest.fixture()
def worker(running_worker: None) -> None:
    """The module's worker, with what the previous test saw forgotten."""
    for seen in (ran, chain_seen, published, finished):
        seen.clear()


def _names(sigs: list[dict[str, Any]]) -> list[str]:
    """The task names of a message's `chain` option, in the order they would run."""
    return [sig["task"] for sig in reversed(sigs)]


def test_stop_chain_leaves_request_chain_none_and_the_rest_never_runs(worker):
    chain(stopper.si(), next_stage.si(), last_stage.si()).apply_async()
    wait_for(lambda: "t.stopper" in finished, what="the stopping task finished")

    assert [s["task"] for s in reversed(chain_seen["before"])] == ["t.next", "t.last"]
    assert chain_seen["after"] is None
    # A chain continues by publishing its next task before task_postrun: none was published.
    assert [name for name, _ in published] == ["t.stopper"]

    # The memory queue is FIFO and the worker serial: had `t.next` been sent, it would run first.
    sentinel.delay()
    wait_for(lambda: "sentinel" in ran, what="the sentinel ran")
    assert ran == ["stopper", "sentinel"]


def test_reschedule_resends_the_stage_with_the_rest_of_its_chain_and_stops_this_attempt(worker):
    chain(poller.si(0), next_stage.si(), last_stage.si()).apply_async()
    wait_for(lambda: "last" in ran, what="the chain ran to its end")

    assert ran == ["poller:0", "poller:1", "next", "last"]
    sent = [name for name, _ in published]
    # The chain's first message, the re-sent stage, then the chain continuing from that one.
    assert sent == ["t.poller", "t.poller", "t.next", "t.last"]
    args, _kwargs, embed = published[1][1]
    assert list(args) == [1]
    assert _names(embed["chain"]) == ["t.next", "t.last"]
