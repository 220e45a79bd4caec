"""Armor on RabbitMQ: no AMQP frame stops a worker.

A worker on a real RabbitMQ (tests/rabbit.py) receives messages whose content header
(properties and the `application_headers` table Celery keeps its headers in) is generated
by hypothesis at the level of the wire encoding: every field type of AMQP 0-9-1 tables and
RabbitMQ's extensions, values over their whole range (timestamps past year 9999, NaN
floats, decimals of any scale), tables and arrays nested up to thousands of levels, keys
and strings that are not UTF-8 or hold lone surrogates, unknown type letters, and any
subset of the basic properties. What the broker itself refuses (it closes the channel) is
not counted; every message it took must be dead-lettered — in `deployer:dead-letters` and,
through the vhost's policy, in RabbitMQ's own dead-letter queue — while the same worker
process lives on and then completes a valid plan sent over AMQP.
"""

from __future__ import annotations

import json
import struct
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from deployer import deadletter
from tests.e2e.conftest import Broker
from tests.e2e.test_armor import a_valid_plan_completes
from tests.helpers import wait_for
from tests.rabbit import DEAD_LETTERS, QUEUES, Publisher, raw_message

pytestmark = pytest.mark.e2e


# ---- the AMQP 0-9-1 wire encoding -------------------------------------------------------


def shortstr(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def longstr(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def field(letter: bytes, fmt: str) -> Any:
    return lambda value: letter + struct.pack(fmt, value)


#: Text as a client may encode it: UTF-8 (lone surrogates included) or arbitrary bytes.
wire_text = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=24).map(
        lambda s: s.encode("utf-8", "surrogatepass")
    ),
    st.binary(max_size=24),
)

scalar = st.one_of(
    st.integers(0, 255).map(field(b"t", ">B")),
    st.integers(-(2**7), 2**7 - 1).map(field(b"b", ">b")),
    st.integers(0, 2**8 - 1).map(field(b"B", ">B")),
    st.integers(-(2**15), 2**15 - 1).map(field(b"s", ">h")),
    st.integers(-(2**15), 2**15 - 1).map(field(b"U", ">h")),
    st.integers(0, 2**16 - 1).map(field(b"u", ">H")),
    st.integers(-(2**31), 2**31 - 1).map(field(b"I", ">i")),
    st.integers(0, 2**32 - 1).map(field(b"i", ">I")),
    st.integers(-(2**63), 2**63 - 1).map(field(b"L", ">q")),
    st.integers(-(2**63), 2**63 - 1).map(field(b"l", ">q")),
    st.binary(min_size=4, max_size=4).map(lambda b: b"f" + b),  # any bits: NaN, inf
    st.binary(min_size=8, max_size=8).map(lambda b: b"d" + b),
    st.tuples(st.integers(0, 255), st.integers(-(2**31), 2**31 - 1)).map(
        lambda t: b"D" + struct.pack(">Bi", *t)
    ),
    wire_text.map(lambda b: b"S" + longstr(b)),
    st.binary(max_size=24).map(lambda b: b"x" + longstr(b)),
    st.integers(0, 2**64 - 1).map(field(b"T", ">Q")),  # seconds: year 9999 is ~2**38
    st.just(b"V"),
    st.tuples(st.sampled_from(b"ZzcEeNn?\x00\xff"), st.binary(max_size=8)).map(
        lambda t: bytes([t[0]]) + t[1]
    ),  # no such type
)


def table(items: list[tuple[bytes, bytes]]) -> bytes:
    return b"F" + longstr(b"".join(shortstr(k[:255]) + v for k, v in items))


def array(values: list[bytes]) -> bytes:
    return b"A" + longstr(b"".join(values))


def nested(depth: int, kind: str) -> bytes:
    value = b"V"
    for _ in range(depth):
        value = table([(b"k", value)]) if kind == "F" else array([value])
    return value


value = st.one_of(
    st.recursive(
        scalar,
        lambda inner: st.one_of(
            st.lists(st.tuples(wire_text, inner), max_size=4).map(table),
            st.lists(inner, max_size=4).map(array),
        ),
        max_leaves=12,
    ),
    st.tuples(st.integers(1, 3000), st.sampled_from("FA")).map(lambda t: nested(*t)),
)

#: The celery headers a worker looks for, most often well formed, sometimes anything.
task_value = st.one_of(
    st.sampled_from([b"deployer.pause", b"deployer.submit_plan", b"deployer.run_stage"]).map(
        lambda b: b"S" + longstr(b)
    ),
    value,
)

#: (flag, encoder) of the basic properties, in wire order.
BASIC = [
    (0x0400, "correlation_id"),
    (0x0200, "reply_to"),
    (0x0100, "expiration"),
    (0x0080, "message_id"),
    (0x0040, "timestamp"),
    (0x0020, "type"),
    (0x0010, "user_id"),
    (0x0008, "app_id"),
    (0x0004, "cluster_id"),
]


@st.composite
def properties(draw: Any) -> bytes:
    """A content header's property flags and values, as bytes on the wire."""
    flags = 0x2000  # application_headers: always (where Celery's headers are)
    out = b""
    content_type = draw(st.sampled_from([b"application/json"]) | wire_text)
    if draw(st.integers(0, 9)):  # mostly present
        flags |= 0x8000
        out += shortstr(content_type[:255])
    if draw(st.booleans()):
        flags |= 0x4000
        out += shortstr(draw(st.sampled_from([b"utf-8"]) | wire_text)[:255])
    items = [(b"task", draw(task_value)), (b"id", b"S" + longstr(str(uuid.uuid4()).encode()))]
    items += draw(st.lists(st.tuples(wire_text, value), max_size=4))
    out += table(items)[1:]  # a property table has no type letter
    if draw(st.booleans()):
        flags |= 0x1000
        out += bytes([draw(st.integers(0, 255))])
    if draw(st.booleans()):
        flags |= 0x0800
        out += bytes([draw(st.integers(0, 255))])
    for flag, name in BASIC:
        if not draw(st.booleans()):
            continue
        flags |= flag
        if name == "timestamp":
            out += struct.pack(">Q", draw(st.integers(0, 2**64 - 1)))
        elif name == "expiration":  # never a short one: RabbitMQ would expire it itself
            digits = st.integers(10**9, 10**12).map(lambda n: str(n).encode())
            out += shortstr(draw(digits | wire_text)[:255])
        else:
            out += shortstr(draw(wire_text)[:255])
    return struct.pack(">H", flags) + out


#: Bodies that no task accepts, so every message the broker takes must be refused. (Three
#: arguments once bound to `deployer.pause(target, by, reason)`: a message drawn with that
#: task, this body and headers that decode was run, not dead-lettered, and the count fell
#: short by the few the fuzz drew. Four bind to no task the fuzz names.)
bodies = st.sampled_from(
    [
        b"[[], {}, {}]",
        b"not json",
        b'{"not": "a list"}',
        json.dumps([[1, 2, 3, 4], {}, {}]).encode(),
    ]
)


@pytest.mark.timeout(600)
def test_amqp_frames_py_amqp_cannot_decode_are_dead_lettered_and_the_worker_lives(
    spawn_worker: Any, amqp_broker: Broker, r: Any
) -> None:
    broker = amqp_broker
    assert broker.rabbit is not None
    broker.clear()
    worker = spawn_worker("amqp-armor", concurrency=2, env=broker.worker_env())
    pid = worker.pid
    publisher = Publisher(broker.rabbit)
    taken = {"n": 0, "offered": 0}
    budget = time.monotonic() + 45

    @settings(
        max_examples=3000,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(properties(), bodies, st.sampled_from(QUEUES))
    def send(props: bytes, body: bytes, queue: str) -> None:
        if time.monotonic() > budget:
            return  # bounded in time whatever the machine's load
        taken["offered"] += 1
        taken["n"] += publisher.publish(raw_message(body, props), queue)

    try:
        send()
    finally:
        publisher.close()
    n = taken["n"]
    assert n >= 200, taken

    # A publish not confirmed in time may still have been taken: at most that many more.
    most = n + publisher.uncertain

    # How fast the worker works through the fuzz depends on the frames drawn (an undecodable
    # one costs a reconnect) and on the machine: wait while the dead letters keep coming, and
    # fail when they stop short of n for a minute (or after 5 minutes in all).
    seen = {"count": -1, "moved": time.monotonic()}
    overall = time.monotonic() + 300

    def all_dead_lettered() -> bool:
        count = len(deadletter.read(r, count=100_000))
        now = time.monotonic()
        if count != seen["count"]:
            seen.update(count=count, moved=now)
        stalled = now - seen["moved"] > 60 or now > overall
        assert count >= n or not stalled, f"{count} of {n} dead-lettered, no progress since"
        return count >= n

    wait_for(all_dead_lettered, timeout=330, interval=0.5, what="every message dead-lettered")
    wait_for(broker.drained, timeout=60, interval=0.5, what="queues and unacked empty")
    letters = deadletter.read(r, count=100_000)
    assert n <= len(letters) <= most
    # rejected into the dead-letter exchange (the vhost's policy): RabbitMQ's own count
    assert broker.rabbit.ready(DEAD_LETTERS) == len(letters)
    assert worker.poll() is None and worker.pid == pid, "the worker died"
    log = worker.log.read_text()
    assert "Unrecoverable error" not in log and "Traceback" not in log, log[-3000:]
    reasons = {f["reason"] for f in letters}
    undecodable = [f for f in letters if f["reason"].startswith("AMQP frame cannot be decoded")]
    assert undecodable, reasons  # the fuzz reached py-amqp's decoder, and it was guarded
    assert {f["queue"] for f in letters} == set(QUEUES)
    plan_id = a_valid_plan_completes(r, broker.url)
    assert worker.poll() is None and worker.pid == pid
    kinds = sorted({f["reason"].split(" (")[0] for f in letters})
    print(
        f"\namqp frames: {taken['offered']} offered, {n} taken by RabbitMQ, all dead-lettered "
        f"({len(undecodable)} undecodable by py-amqp); worker {pid} alive; plan {plan_id} "
        f"completed; reasons: {kinds}"
    )
