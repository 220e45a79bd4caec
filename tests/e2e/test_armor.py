"""Armor: no broker message stops a worker, and no client puts a secret in task events.

Each test starts a real `celery -A tasks worker` subprocess and reproduces what used to kill
it (raw envelopes LPUSHed onto the Redis lists, a deep plan or a Celery built-in sent with
an ordinary `send_task`, an oversized plan object), then proves: the same worker process is
still up, the message is in `deployer:dead-letters` with its reason (and acknowledged: no
queue or unacked entry is left to kill the next worker), a refused submission is answered in
`deployer:rejections`, and a valid plan still completes.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from deployer import deadletter
from tests.e2e.conftest import Broker
from tests.helpers import bg_tenant, plan, unique, wait_for, worker_env
from tests.rabbit import QUEUES, Publisher

pytestmark = pytest.mark.e2e

SECRETS = {"password": "hunter2-pw", "apiKey": "k-123-api", "token": "t0k3n-value"}


# ---- raw envelopes ----------------------------------------------------------------------


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def envelope(
    queue: str = "deployer.control",
    body: Any = None,
    headers: Any = None,
    properties: Any = None,
    **top: Any,
) -> dict[str, Any]:
    """celery-node's exact Redis envelope (README), with any part replaced."""
    if body is None:
        body = b64(json.dumps([[{"planId": "p"}], {}, {}]))
    out = {
        "body": body,
        "headers": headers
        if headers is not None
        else {"lang": "js", "task": "deployer.submit_plan", "id": str(uuid.uuid4())},
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "properties": properties
        if properties is not None
        else {
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
        },
    }
    out.update(top)
    return out


def hdr(task: str = "deployer.submit_plan", **extra: Any) -> dict[str, Any]:
    return {"lang": "py", "task": task, "id": str(uuid.uuid4()), **extra}


def nested(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    cur = root
    for _ in range(depth):
        cur["x"] = {}
        cur = cur["x"]
    return root


def hostile_envelopes(queue: str) -> list[tuple[str, str]]:
    """(what, raw text LPUSHed) for every envelope shape that stopped a stock worker."""
    good_props = envelope(queue)["properties"]

    def props(**change: Any) -> dict[str, Any]:
        p = {**good_props, "delivery_tag": str(uuid.uuid4()), **change}
        return {k: v for k, v in p.items() if v is not None}

    cases: list[tuple[str, Any]] = [
        ("body not base64 (padding)", envelope(queue, body="abc")),
        ("body not base64 (alphabet)", envelope(queue, body="!!!!" + b64("[[], {}, {}]"))),
        ("headers a list", envelope(queue, headers=[1, 2])),
        ("headers a string", envelope(queue, headers="task")),
        ("no properties", {"body": b64("[[], {}, {}]"), "headers": hdr()}),
        ("no delivery_tag", envelope(queue, properties=props(delivery_tag=None))),
        ("no delivery_info", envelope(queue, properties=props(delivery_info=None))),
        ("unknown body_encoding", envelope(queue, properties=props(body_encoding="rot13"))),
        ("priority a string", envelope(queue, properties=props(priority="high"))),
        ("compressed", envelope(queue, headers=hdr(compression="application/x-gzip"))),
        ("stamped_headers a string", envelope(queue, headers=hdr(stamped_headers="abc"))),
        ("stamps a list", envelope(queue, headers=hdr(stamps=[1]))),
        ("timelimit huge", envelope(queue, headers=hdr(timelimit=[1e300, None]))),
        ("retries a string", envelope(queue, headers=hdr(retries="3"))),
        ("chord in embed", envelope(queue, body=b64(json.dumps([[{}], {}, {"chord": {}}])))),
        ("celery built-in", envelope(queue, headers=hdr("celery.chord_unlock"))),
        ("nested 500", envelope(queue, body=b64(json.dumps([[nested(500)], {}, {}])))),
    ]
    raw: list[tuple[str, str]] = [(what, json.dumps(env)) for what, env in cases]
    raw += [
        ("raw string", "hello, not json"),
        ("json list", "[1, 2, 3]"),
        ("json null", "null"),
        ("json number", "42"),
        ("not utf-8", "\udcff"),  # pushed as bytes below
    ]
    return raw


def push(r: redis.Redis, queue: str, raw: str) -> None:
    r.lpush(queue, b"\xff\xfe" if raw == "\udcff" else raw.encode())


# ---- workers and plans ------------------------------------------------------------------


def completed(r: redis.Redis, plan_id: str) -> bool:
    return r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED"


def a_valid_plan_completes(r: redis.Redis, broker_url: str) -> str:
    plan_id = unique()
    bare_send(broker_url, "deployer.submit_plan", [plan(plan_id, [bg_tenant(f"{plan_id}-t0")])])
    wait_for(lambda: completed(r, plan_id), timeout=60, what="a valid plan after the garbage")
    return plan_id


def bare_send(broker_url: str, task: str, args: list[Any], queue: str = "deployer.control") -> str:
    """`Celery(broker=...).send_task` from a process that imports no deployer code, so no
    `before_task_publish` redaction or other help from the project touches the message."""
    task_id = str(uuid.uuid4())
    script = (
        "import json, sys\n"
        "from celery import Celery\n"
        "app = Celery(broker=sys.argv[1])\n"
        "app.send_task(sys.argv[2], args=json.loads(sys.stdin.read()), queue=sys.argv[3],"
        " task_id=sys.argv[4])\n"
        "assert not any(m.startswith(('deployer', 'tasks')) for m in sys.modules)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, broker_url, task, queue, task_id],
        input=json.dumps(args),
        text=True,
        check=True,
        timeout=60,
        cwd="/",
        env={k: v for k, v in worker_env().items() if k != "PYTHONPATH"},
    )
    return task_id


def letters(r: redis.Redis) -> list[dict[str, Any]]:
    return deadletter.read(r, count=100_000)


def _armor(spawn_worker: Callable[..., Any], broker: Broker) -> Callable[..., Any]:
    broker.clear()

    def start(**env: str) -> Any:
        name = f"armor{uuid.uuid4().hex[:6]}"
        return spawn_worker(name, concurrency=2, env=broker.worker_env(**env))

    return start


@pytest.fixture()
def armored(spawn_worker: Callable[..., Any], broker: Broker) -> Callable[..., Any]:
    """A worker subprocess on each broker (env overrides allowed), after an empty
    dead-letter stream and empty broker queues."""
    return _armor(spawn_worker, broker)


@pytest.fixture()
def armored_redis(spawn_worker: Callable[..., Any], redis_broker: Broker) -> Callable[..., Any]:
    """The same, on the Redis broker only (raw Redis envelopes)."""
    return _armor(spawn_worker, redis_broker)


# ---- the tests --------------------------------------------------------------------------


def test_malformed_envelopes_on_both_queues_are_dead_lettered_and_the_worker_lives(
    armored_redis, redis_broker, r, redis_url
):
    worker = armored_redis()
    pid = worker.pid
    sent: list[tuple[str, str]] = []
    for queue in QUEUES:
        for what, raw in hostile_envelopes(queue):
            push(r, queue, raw)
            sent.append((queue, what))
    wait_for(lambda: len(letters(r)) >= len(sent), timeout=60, what="every envelope refused")
    wait_for(redis_broker.drained, timeout=30, what="queues and unacked empty")
    assert worker.poll() is None and worker.pid == pid, "the worker died"
    log = worker.log.read_text()
    assert "Unrecoverable error" not in log and "Traceback" not in log, log[-3000:]
    found = letters(r)
    assert len(found) == len(sent), [f["reason"] for f in found]
    reasons = " | ".join(f["reason"] for f in found)
    for expected in (
        "envelope body is not valid base64",
        "envelope headers are not an object",
        "envelope properties are not an object",
        "envelope has no delivery_tag",
        "envelope has no delivery_info",
        "envelope body_encoding is not base64",
        "envelope priority",
        "compressed messages are refused",
        "header stamped_headers",
        "header stamps",
        "header timelimit",
        "header retries",
        "embed.chord",
        "unknown task celery.chord_unlock",
        "nested deeper than 64 levels",
        "envelope is not JSON",
        "envelope is a JSON list",
        "envelope is a JSON NoneType",
        "envelope is a JSON int",
    ):
        assert reasons.count(expected) >= 2, f"{expected!r} not on both queues: {reasons}"
    assert {f["queue"] for f in found} >= set(QUEUES)
    for f in found:
        assert set(f) >= {"reason", "queue", "task", "id", "size", "head", "ts"}
        assert len(f["head"]) <= deadletter.HEAD_BYTES
        if f["id"]:  # logged once, at WARNING, with id, task and reason only
            assert log.count(f"id={f['id']}") == 1
    assert log.count("WARNING/MainProcess] malformed message dropped") == len(sent)
    a_valid_plan_completes(r, redis_url)
    assert worker.poll() is None and worker.pid == pid
    print(f"\nraw envelopes refused: {len(sent)}; worker {pid} alive; a valid plan completed")


def test_a_deep_plan_sent_with_send_task_is_dead_lettered_and_its_caller_answered(
    armored, broker, r
):
    worker = armored()
    plan_id = unique()
    deep = plan(plan_id, [bg_tenant(f"{plan_id}-t0", networkEndpoints=[nested(500)])])
    task_id = bare_send(broker.url, "deployer.submit_plan", [deep])
    wait_for(lambda: any(f["id"] == task_id for f in letters(r)), what="deep plan refused")
    letter = next(f for f in letters(r) if f["id"] == task_id)
    assert letter["reason"] == "nested deeper than 64 levels"
    assert letter["task"] == "deployer.submit_plan" and letter["queue"] == "deployer.control"
    rejection = [f for _, f in r.xrange("deployer:rejections") if f["planId"] == plan_id]
    assert rejection and rejection[-1]["code"] == "PLAN_TOO_DEEP"
    assert json.loads(rejection[-1]["errors"]) == [
        {"field": "(plan)", "reason": "nested deeper than 64 levels"}
    ]
    wait_for(broker.drained, what="nothing left to be restored")
    assert not r.exists(f"deployer:plan:{plan_id}")
    # A second worker started now finds nothing that kills it.
    second = armored()
    a_valid_plan_completes(r, broker.url)
    assert worker.poll() is None and second.poll() is None


def test_celery_builtins_sent_by_hand_are_refused(armored, broker, r):
    worker = armored()
    ids = [
        bare_send(broker.url, "celery.chord_unlock", [str(uuid.uuid4()), []]),
        bare_send(broker.url, "celery.backend_cleanup", []),
        bare_send(broker.url, "deployer.no_such_task", [], queue="deployer.stages"),
    ]
    wait_for(lambda: {f["id"] for f in letters(r)} >= set(ids), what="built-ins refused")
    reasons = {f["id"]: f["reason"] for f in letters(r)}
    assert [reasons[i] for i in ids] == [
        "unknown task celery.chord_unlock",
        "unknown task celery.backend_cleanup",
        "unknown task deployer.no_such_task",
    ]
    wait_for(broker.drained, what="nothing left looping")
    assert "celery.chord_unlock[" not in worker.log.read_text()  # never ran
    a_valid_plan_completes(r, broker.url)


def test_an_oversized_plan_object_is_dead_lettered_unread(armored, broker, r):
    worker = armored(DEPLOYER_MAX_MESSAGE_BYTES=str(256 * 1024))
    plan_id = unique()
    tenants = [bg_tenant(f"{plan_id}-t{i}", deployUnitName="x" * 100) for i in range(1500)]
    task_id = bare_send(broker.url, "deployer.submit_plan", [plan(plan_id, tenants)])
    wait_for(lambda: any(f["id"] == task_id for f in letters(r)), what="oversized refused")
    letter = next(f for f in letters(r) if f["id"] == task_id)
    assert letter["reason"].startswith("message larger than") and int(letter["size"]) > 256 * 1024
    assert letter["task"] == "deployer.submit_plan"
    rejection = [f for _, f in r.xrange("deployer:rejections") if f["planId"] == plan_id]
    assert rejection and rejection[-1]["code"] == "PLAN_TOO_LARGE"
    assert worker.poll() is None
    a_valid_plan_completes(r, broker.url)


@pytest.fixture()
def task_events(broker: Broker) -> Iterator[list[dict[str, Any]]]:
    """Every task event the workers send, captured by a real event receiver (one
    subscription for the whole test: events are pub/sub, a reconnect would miss some)."""
    app = Celery(broker=broker.url)
    seen: list[dict[str, Any]] = []
    receivers: list[Any] = []

    def run() -> None:
        with app.connection() as conn:
            receiver = app.events.Receiver(conn, handlers={"*": seen.append})
            receivers.append(receiver)
            receiver.capture(limit=None, timeout=None, wakeup=False)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield seen
    for receiver in receivers:
        receiver.should_stop = True  # leaves at its next event; the thread is a daemon
    thread.join(2)


def test_a_bare_send_task_with_secrets_shows_none_in_task_events(armored, broker, r, task_events):
    armored()

    def listening() -> bool:  # the receiver subscribes asynchronously: probe until it hears
        canary = bare_send(broker.url, "deployer.pause", [{"planId": "canary"}])
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if any(e.get("uuid") == canary for e in list(task_events)):
                return True
            time.sleep(0.05)
        return False

    wait_for(listening, timeout=60, interval=0.1, what="the event receiver hears the worker")
    as_dict, as_text = unique(), unique()
    ids = {
        bare_send(
            broker.url,
            "deployer.submit_plan",
            [plan(as_dict, [bg_tenant(f"{as_dict}-t0", **SECRETS)], **SECRETS)],
        ): as_dict,
        bare_send(
            broker.url,
            "deployer.submit_plan",
            [json.dumps(plan(as_text, [bg_tenant(f"{as_text}-t0", **SECRETS)]))],
        ): as_text,
        bare_send(broker.url, "deployer.pause", [{"planId": as_dict, **SECRETS}]): as_dict,
    }

    def received() -> dict[str, dict[str, Any]]:
        return {
            e["uuid"]: e
            for e in list(task_events)
            if e.get("type") == "task-received" and e.get("uuid") in ids
        }

    events = wait_for(lambda: len(received()) == len(ids) and received(), what="task-received")
    everything = json.dumps(list(task_events))
    for secret in SECRETS.values():
        assert secret not in everything
    for task_id, plan_id in ids.items():
        assert plan_id in events[task_id]["args"]  # labelled, not blank
    print(f"\ntask events captured: {len(task_events)}; none carries a secret")


# ---- fuzz -------------------------------------------------------------------------------

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(), st.text(max_size=12)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
task_names = st.sampled_from(
    [
        "deployer.submit_plan",
        "deployer.run_stage",
        "deployer.pause",
        "deployer.cancel",
        "celery.chord_unlock",
        "celery.chord",
        "celery.group",
        "celery.accumulate",
        "nope",
    ]
) | st.text(max_size=20)
#: Headers Celery reads; `eta` only as a non-string (a valid far ETA is held, not refused).
header_names = st.sampled_from(
    [
        "task", "id", "lang", "root_id", "parent_id", "group", "group_index", "shadow",
        "expires", "retries", "timelimit", "argsrepr", "kwargsrepr", "origin",
        "ignore_result", "stamped_headers", "stamps", "groups", "replaced_task_nesting",
        "compression", "x-custom",
    ]
)  # fmt: skip


@st.composite
def fuzz_body(draw: Any) -> str:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return b64(draw(st.binary(max_size=40)))
    if kind == 1:
        return b64(json.dumps(draw(json_value)))
    if kind == 2:  # a nested plan
        return b64(json.dumps([[nested(draw(st.integers(40, 700)))], {}, {}]))
    if kind == 3:  # a plan with hostile fields
        tenants = draw(st.lists(json_value, max_size=3))
        return b64(json.dumps([[{"planId": draw(st.text(max_size=8)), "tenants": tenants}], {}]))
    embed = draw(st.none() | st.dictionaries(st.sampled_from(["chain", "chord", "x"]), json_value))
    return b64(json.dumps([draw(json_value), draw(json_value), embed]))


@st.composite
def fuzz_envelope(draw: Any) -> tuple[str, bytes, bool]:
    """(queue, raw bytes, surely refused)."""
    queue = draw(st.sampled_from(QUEUES))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return queue, draw(st.binary(max_size=60)), True
    if kind == 1:
        value = draw(json_value.filter(lambda v: not isinstance(v, dict)))
        return queue, json.dumps(value).encode(), True
    env = envelope(queue, body=draw(fuzz_body()), headers=hdr(draw(task_names)))
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["headers", "properties", "top"]))
        if where == "headers" and isinstance(env["headers"], dict):
            env["headers"][draw(header_names)] = draw(json_value)
        elif where == "properties" and isinstance(env["properties"], dict):
            key = draw(st.sampled_from(["body_encoding", "delivery_tag", "priority", "x"]))
            env["properties"][key] = draw(json_value)
        elif where == "top":
            key = draw(st.sampled_from(["body", "headers", "content-type", "properties"]))
            env[key] = draw(json_value)
    headers = env.get("headers")
    task = headers.get("task") if isinstance(headers, dict) else None
    surely = not (isinstance(task, str) and task.startswith("deployer."))
    return queue, json.dumps(env).encode(), surely


def as_amqp(raw: bytes) -> Any:
    """The AMQP message carrying what a raw Redis envelope says: its decoded body, headers
    (as the application headers table), content type and encoding, priority. A raw string
    that is no envelope becomes a body without headers."""
    import amqp

    try:
        env = json.loads(raw)
    except ValueError:
        env = None
    if not isinstance(env, dict):
        return amqp.Message(raw, content_type="application/json", content_encoding="utf-8")
    props = env.get("properties") if isinstance(env.get("properties"), dict) else {}
    body = env.get("body")
    if isinstance(body, str) and props.get("body_encoding") == "base64":
        try:
            data = base64.b64decode(body, validate=True)
        except ValueError:
            data = body.encode()
    else:
        data = json.dumps(body).encode()

    def short(name: str) -> str | None:
        value = env.get(name)
        return value.encode()[:255].decode("utf-8", "ignore") if isinstance(value, str) else None

    priority = props.get("priority")
    ok_priority = type(priority) is int and 0 <= priority < 256
    headers = env.get("headers")
    return amqp.Message(
        data,
        content_type=short("content-type"),
        content_encoding=short("content-encoding"),
        application_headers=headers if isinstance(headers, dict) else None,
        priority=priority if ok_priority else None,
    )


class Sender:
    """Sends fuzzed envelopes to both queues of a broker; counts what the broker took."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.n = self.refused = 0
        self.publisher = Publisher(broker.rabbit) if broker.rabbit is not None else None

    def send(self, batch: list[tuple[str, bytes, bool]]) -> None:
        if self.publisher is None:
            with self.broker.r.pipeline(transaction=False) as pipe:
                for _queue, raw, surely in batch:
                    for queue in QUEUES:  # every envelope on both queues
                        pipe.lpush(queue, raw)
                        self.n += 1
                        self.refused += surely
                pipe.execute()
            return
        for _queue, raw, surely in batch:
            for queue in QUEUES:
                if self.publisher.publish(as_amqp(raw), queue):  # confirmed by the broker
                    self.n += 1
                    self.refused += surely

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()


@pytest.mark.timeout(400)
def test_fuzz_thousands_of_envelopes_and_plans_leave_the_worker_alive(armored, broker, r):
    worker = armored()
    pid = worker.pid
    sender = Sender(broker)
    budget = time.monotonic() + 50

    @settings(
        max_examples=1500,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(fuzz_envelope(), min_size=1, max_size=4))
    def send(batch: list[tuple[str, bytes, bool]]) -> None:
        if time.monotonic() > budget:
            return  # bounded in time whatever the machine's load
        sender.send(batch)

    try:
        send()
    finally:
        sender.close()
    assert sender.n >= 1000, (sender.n, sender.refused)
    wait_for(broker.drained, timeout=120, interval=0.5, what="fuzz drained")
    assert worker.poll() is None and worker.pid == pid, "the worker died"
    log = worker.log.read_text()
    assert "Unrecoverable error" not in log
    refused = len(letters(r))
    assert refused >= sender.refused, (refused, sender.n, sender.refused)
    plan_id = a_valid_plan_completes(r, broker.url)
    assert worker.poll() is None and worker.pid == pid
    print(
        f"\nfuzz over {broker.name}: {sender.n} envelopes sent, {refused} dead-lettered, "
        f"worker {pid} alive, plan {plan_id} completed"
    )


def test_the_dead_letter_stream_is_bounded(r):
    writer = deadletter.DeadLetters(r, maxlen=100)
    big = deadletter.DeadLetter(reason="x" * 10_000, task="t" * 10_000, head="h" * 10_000)
    for _ in range(1000):
        writer.record(big)
    entries = r.xrange("deployer:dead-letters")
    assert len(entries) < 1000  # MAXLEN ~ 100 trims whole nodes, not to the entry
    for _, f in entries:
        assert sum(len(str(v)) for v in f.values()) < 1000
