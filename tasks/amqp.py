"""kombu's AMQP (py-amqp) transport, guarded where a message's frames are decoded.

py-amqp decodes a delivery's content header (its properties and the `application_headers`
table Celery keeps its headers in) inside the connection's frame handler, before kombu,
Celery or tasks/guard.py see the message. A timestamp out of range (`T` = 2**63), a table
nested past the recursion limit, a property that is not UTF-8, a routing key that is
not UTF-8... raised there, the worker stopped ("Unrecoverable error"), and RabbitMQ put
the message back for the next worker to die on.

`GuardedTransport` (celeryconfig: `broker_transport` when the broker is AMQP) keeps
py-amqp's frame handler and adds, per delivery, before anything else reads it:

- the content header is decoded under a guard: a header py-amqp cannot decode refuses
  the message;
- the delivery's own arguments (consumer tag, routing key) must decode;
- JSON-only content encodings (`utf-8`), no `compression` header (kombu would
  decompress a bomb before any check), a body no larger than `max_message_bytes`: a
  larger one is never assembled (its frames are dropped as they arrive, only the start
  is kept for the dead letter); a large JSON body is measured frame by frame (values,
  depth: deployer/jsonshape.py) and dropped the same way once it would decode to more
  than a message may.

A refused delivery is rejected without requeue (`basic.reject`, so RabbitMQ hands it to
the queue's dead-letter exchange when a policy names one: docs/operators.md) and recorded
by `tasks.guard.refuse` in `deployer:dead-letters` (and `deployer:rejections` for a plan
submission whose planId can be read). Everything the frames decode to is then checked
again by the consumer guard (tasks/guard.py), exactly as for the Redis transport.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from struct import error as StructError
from struct import unpack_from
from typing import Any

from amqp import spec
from amqp.basic_message import Message
from amqp.exceptions import UnexpectedFrame
from amqp.serialization import loads
from kombu.entity import Exchange, Queue
from kombu.transport import pyamqp

from deployer.deadletter import HEAD_WINDOW, DeadLetter, head
from deployer.errors import Code, PlanTooDeep, PlanTooLarge
from deployer.jsonshape import Meter
from deployer.settings import Settings

log = logging.getLogger("deployer.guard")

#: Content methods: a method frame, then a content header, then body frames.
_CONTENT = {spec.Basic.Deliver, spec.Basic.GetOk, spec.Basic.Return}
#: Deliveries that carry a delivery tag (a returned publish has none).
_TAGGED = {spec.Basic.Deliver: "sLbss", spec.Basic.GetOk: "Lbssl"}
_ARGS = {**_TAGGED, spec.Basic.Return: "Bsss"}
#: Body encodings a JSON message may declare (kombu and celery-node send `utf-8`).
BODY_ENCODINGS = frozenset({"utf-8", "utf8"})
JSON_TYPES = frozenset({"application/json"})
#: JSON bodies larger than this are measured frame by frame as they arrive (deployer/
#: jsonshape.py): one that would decode to too many values is never assembled.
METER_FROM = 64 * 1024

#: Where refused deliveries go when the queue's policy names a dead-letter exchange.
DEAD_LETTER_EXCHANGE = "deployer.dead-letters"
DEAD_LETTER_QUEUE = "deployer.dead-letters"


def _settings() -> Settings:
    from tasks import runtime

    return runtime.settings()


def _refuse(letter: DeadLetter, text: str, code: str) -> None:
    from tasks.guard import refuse  # the guard imports the worker's app: load it lazily

    refuse(letter, text, code)


# ---- what a refused delivery says about itself ------------------------------------------


def _shortstr(buf: Any, offset: int) -> tuple[str, int]:
    size = buf[offset]
    raw = bytes(buf[offset + 1 : offset + 1 + size])
    return raw.decode("utf-8", errors="replace"), offset + 1 + size


@dataclass
class Delivery:
    """A method frame's tag and routing key, read without py-amqp's decoder (which may be
    what failed): the broker wrote these fields, only their text may be anything."""

    tag: int | None = None
    routing_key: str = ""

    @classmethod
    def read(cls, method_sig: tuple[int, int], args: Any) -> Delivery:
        try:
            if method_sig == spec.Basic.Deliver:
                _ctag, offset = _shortstr(args, 4)
                (tag,) = unpack_from(">Q", args, offset)
                _exchange, offset = _shortstr(args, offset + 9)
                return cls(tag, _shortstr(args, offset)[0])
            if method_sig == spec.Basic.GetOk:
                (tag,) = unpack_from(">Q", args, 4)
                _exchange, offset = _shortstr(args, 13)
                return cls(tag, _shortstr(args, offset)[0])
        except (IndexError, StructError):
            pass
        return cls()


def _header_text(header: bytes, name: bytes) -> str:
    """The value of header `name` (a long string) in a content header's raw bytes."""
    m = re.search(re.escape(bytes([len(name)]) + name) + b"S", header)
    if m is None:
        return ""
    try:
        (size,) = unpack_from(">I", header, m.end())
    except StructError:
        return ""
    start = m.end() + 4
    return header[start : start + min(size, 200)].decode("utf-8", errors="replace")


@dataclass
class Refused:
    """A delivery being refused: its body frames are counted, not kept (the first
    HEAD_WINDOW bytes are, for the dead letter)."""

    method_sig: tuple[int, int]
    args: Any
    header: bytes
    body_size: int
    reason: str
    code: str = Code.MESSAGE_REFUSED
    headers: Any = None  # the decoded headers, when the header did decode
    received: int = 0
    start: bytearray = field(default_factory=bytearray)

    def feed(self, chunk: Any) -> None:
        if isinstance(chunk, str):  # a body py-amqp already decoded
            chunk = chunk.encode("utf-8", "replace")
        self.received += len(chunk)
        room = HEAD_WINDOW - len(self.start)
        if room > 0:
            self.start += bytes(chunk[:room])

    @property
    def complete(self) -> bool:
        return self.received >= self.body_size

    def _named(self, name: str) -> str:
        value = (self.headers or {}).get(name)
        if isinstance(value, str):
            return value
        return _header_text(self.header, name.encode())

    def letter(self, delivery: Delivery) -> DeadLetter:
        return DeadLetter(
            reason=self.reason,
            queue=delivery.routing_key,
            task=self._named("task"),
            id=self._named("id"),
            size=self.body_size,
            head=head(bytes(self.start)),
        )


# ---- the checks ---------------------------------------------------------------------


def header_problem(msg: Message, buf: Any, max_bytes: int) -> tuple[str, str] | None:
    """Decode the content header into `msg`; (why, code) when the delivery must be refused."""
    try:
        msg.inbound_header(buf)
        _args, _ = loads(_ARGS[msg.frame_method], msg.frame_args, 4)
    except Exception as exc:  # noqa: BLE001 - whatever py-amqp raises, the worker lives
        return f"AMQP frame cannot be decoded ({type(exc).__name__})", Code.MESSAGE_REFUSED
    props = msg.properties
    encoding = props.get("content_encoding")
    if encoding is not None and str(encoding).lower() not in BODY_ENCODINGS:
        shown = str(encoding)[:40].encode("utf-8", "backslashreplace").decode()
        return f"content encoding {shown!r} refused (utf-8 only)", Code.MESSAGE_REFUSED
    headers = props.get("application_headers")
    if isinstance(headers, dict) and headers.get("compression") is not None:
        return "compressed messages are refused", Code.MESSAGE_REFUSED
    if msg.body_size > max_bytes:
        return f"message larger than {max_bytes} bytes", PlanTooLarge.code
    return None


class FrameGuard:
    """py-amqp's `frame_handler` (amqp/method_framing.py), with every content delivery
    checked before it is dispatched; a refused one is rejected and dead-lettered.

    Called with each frame read from the connection (`on_frame`); answers whether a whole
    method (with its content) was handled, as py-amqp's handler does."""

    def __init__(self, connection: Any, callback: Callable[..., Any]) -> None:
        self.connection = connection
        self.callback = callback
        self.expected: defaultdict[int, int] = defaultdict(lambda: 1)
        self.partial: dict[int, Message] = {}
        self.refused: dict[int, Refused] = {}
        self.meters: dict[int, Meter] = {}  # large JSON bodies, measured as they arrive

    def __call__(self, frame: tuple[int, int, Any]) -> bool:
        frame_type, channel, buf = frame
        self.connection.bytes_recv += 1
        if frame_type not in (self.expected[channel], 8):
            raise UnexpectedFrame(
                f"Received frame {frame_type} while expecting type: {self.expected[channel]}"
            )
        if frame_type == 1:
            return self._method(channel, buf)
        if frame_type == 2:
            return self._header(channel, buf)
        if frame_type == 3:
            return self._body(channel, buf)
        return False  # heartbeat

    def _method(self, channel: int, buf: Any) -> bool:
        method_sig = unpack_from(">HH", buf, 0)
        if method_sig in _CONTENT:
            self.partial[channel] = Message(frame_method=method_sig, frame_args=buf)
            self.expected[channel] = 2
            return False
        self.callback(channel, method_sig, buf, None)
        return True

    def _header(self, channel: int, buf: Any) -> bool:
        msg = self.partial[channel]
        problem = header_problem(msg, buf, _settings().max_message_bytes)
        if problem is not None:
            reason, code = problem
            r = Refused(msg.frame_method, msg.frame_args, bytes(buf), msg.body_size, reason, code)
            return self._refusing(channel, r)
        if not msg.ready:
            if msg.body_size > METER_FROM and msg.properties.get("content_type") in JSON_TYPES:
                s = _settings()
                self.meters[channel] = Meter(s.max_message_depth, s.max_message_elements)
            self.expected[channel] = 3
            return False
        return self._dispatch(channel, msg)

    def _body(self, channel: int, buf: Any) -> bool:
        r = self.refused.get(channel)
        if r is not None:
            r.feed(buf)
            return self._refusing(channel, r)
        msg = self.partial[channel]
        meter = self.meters.get(channel)
        if meter is not None and meter.feed(buf).exceeded:
            return self._refusing(channel, self._too_much(msg, meter, buf))
        msg.inbound_body(buf)
        if not msg.ready:
            return False
        return self._dispatch(channel, msg)

    def _too_much(self, msg: Message, meter: Meter, buf: Any) -> Refused:
        """A body that would decode to more than a message may: refused mid-way, what
        arrived so far dropped (only its start kept for the dead letter)."""
        s = _settings()
        shape = meter.shape()
        why = shape.problem(s.max_message_depth, s.max_message_elements) or "too large"
        code = PlanTooDeep.code if shape.depth > s.max_message_depth else PlanTooLarge.code
        headers = msg.properties.get("application_headers")
        r = Refused(msg.frame_method, msg.frame_args, b"", msg.body_size, why, code, headers)
        for chunk in [*msg._pending_chunks, buf]:  # noqa: SLF001 - py-amqp's own buffer
            r.feed(chunk)
        msg._pending_chunks = []  # noqa: SLF001
        return r

    def _done(self, channel: int) -> None:
        self.expected[channel] = 1
        self.partial.pop(channel, None)
        self.refused.pop(channel, None)
        self.meters.pop(channel, None)

    def _dispatch(self, channel: int, msg: Message) -> bool:
        self._done(channel)
        conn = self.connection
        try:
            self.callback(channel, msg.frame_method, msg.frame_args, msg)
        except conn.connection_errors + conn.channel_errors:
            raise
        except Exception as exc:
            # The consumer guard catches everything of its own; what arrives here failed
            # in kombu or py-amqp before it, so the delivery was neither acked nor rejected.
            if msg.frame_method not in _TAGGED:
                raise
            reason = f"worker could not take the message ({type(exc).__name__})"
            headers = msg.properties.get("application_headers")
            r = Refused(msg.frame_method, msg.frame_args, b"", 0, reason, headers=headers)
            r.feed(getattr(msg, "body", b"") or b"")
            self._refuse(channel, r)
        return True

    def _refusing(self, channel: int, r: Refused) -> bool:
        """Refuse once the last body frame is in; until then, count the frames."""
        if not r.complete:
            self.refused[channel] = r
            self.expected[channel] = 3
            return False
        self._refuse(channel, r)
        return True

    def _refuse(self, channel: int, r: Refused) -> None:
        self._done(channel)
        delivery = Delivery.read(r.method_sig, r.args)
        if delivery.tag is not None:
            try:
                self.connection.channels[channel].basic_reject(delivery.tag, requeue=False)
            except self.connection.connection_errors:
                raise
            except Exception as exc:  # noqa: BLE001 - a closed channel: RabbitMQ requeues
                log.warning("could not reject a refused delivery (%s)", type(exc).__name__)
        _refuse(r.letter(delivery), bytes(r.start).decode("utf-8", "replace"), r.code)


class GuardedConnection(pyamqp.Connection):
    """py-amqp's connection with the guarded frame handler."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("frame_handler", FrameGuard)
        super().__init__(*args, **kwargs)


class GuardedTransport(pyamqp.Transport):
    """kombu's py-amqp transport on GuardedConnection."""

    Connection = GuardedConnection


class GuardedSSLTransport(pyamqp.SSLTransport):
    """The same over TLS (`amqps://`)."""

    Connection = GuardedConnection


def declare_dead_letters(connection: Any, max_length: int) -> None:
    """Declare the dead-letter exchange and its queue (never consumed: operators read it).

    The public queues keep no arguments (any client can declare them): a RabbitMQ policy
    points them here (docs/operators.md). Declared by every worker at start, so a policy
    never names an exchange that does not exist (RabbitMQ would drop the message)."""
    exchange = Exchange(DEAD_LETTER_EXCHANGE, type="fanout", durable=True)
    queue = Queue(
        DEAD_LETTER_QUEUE,
        exchange,
        routing_key="",
        durable=True,
        queue_arguments={"x-max-length": max_length},
    )
    with connection.channel() as channel:
        queue(channel).declare()


def is_amqp(connection: Any) -> bool:
    return getattr(connection.transport, "driver_type", "") == "amqp"


__all__ = [
    "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "GuardedSSLTransport",
    "GuardedTransport",
    "declare_dead_letters",
    "FrameGuard",
]
