"""kombu's Redis transport, guarded where a message is parsed.

kombu's Redis channel pops a message (BRPOP), parses the JSON envelope, base64-decodes the
body and builds a `Message` *before* Celery's consumer (and tasks/guard.py) sees it. A raw
string that is not JSON, a JSON list or `null`, headers that are not an object, a body
that is not base64, an unknown body encoding... each raised inside the event loop and
stopped the worker ("Unrecoverable error"), and the popped message was gone without a
line in the log. Missing properties made the consumer reconnect forever.

`GuardedTransport` (celeryconfig: `broker_transport` when the broker is Redis) keeps
kombu's code and adds three checks where it parses:

- the raw reply of BRPOP is measured before it is parsed (`max_message_bytes`, with room
  for base64 and the envelope; the values and depth its JSON would decode to, so headers
  cannot carry what a body may not): larger ones are dead-lettered unread;
- an envelope that does not parse is dead-lettered with the raw head;
- a parsed envelope is checked (`check_envelope`) before kombu builds a `Message` from it,
  and anything the consumer chain still raises is caught here, acknowledged and
  dead-lettered, so no message can stop the worker or be restored to kill the next one.

Refused messages are removed from the queue (BRPOP already did) and recorded by
`tasks.guard.refuse`. The AMQP transport needs none of this: the broker frames messages
and kombu's AMQP `Message` cannot fail on its content; tasks/guard.py checks the rest.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import reprlib
from collections.abc import Callable, Mapping
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str

from deployer.deadletter import DeadLetter, Peek, as_text, head, peek_raw
from deployer.errors import Code, PlanTooDeep, PlanTooLarge
from deployer.jsonshape import FEED_SLICE, Meter, json_shape
from deployer.settings import Settings

log = logging.getLogger("deployer.guard")

_BODY_ENCODINGS = frozenset({"base64", "utf-8", "utf8"})
_BASE64 = re.compile(r"[A-Za-z0-9+/]*+={0,2}")
_TAG_MAX = 256
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 4, 200, 200


def raw_limit(max_message_bytes: int) -> int:
    """The largest raw Redis envelope read: a body of `max_message_bytes` grows by a third
    in base64, plus headers and properties."""
    return max_message_bytes * 4 // 3 + 65536


def _check_properties(props: Any) -> str | None:
    if not isinstance(props, dict):
        return "envelope properties are not an object"
    tag = props.get("delivery_tag")
    if isinstance(tag, bool) or not isinstance(tag, str | int) or tag == "":
        return "envelope has no delivery_tag"
    if isinstance(tag, str) and len(tag) > _TAG_MAX:
        return "envelope delivery_tag is too long"
    info = props.get("delivery_info")
    if not isinstance(info, dict):
        return "envelope has no delivery_info"
    if not isinstance(info.get("exchange"), str) or not isinstance(info.get("routing_key"), str):
        return "envelope delivery_info needs exchange and routing_key strings"
    encoding = props.get("body_encoding")
    if encoding is not None and (
        not isinstance(encoding, str) or encoding.lower() not in _BODY_ENCODINGS
    ):
        return "envelope body_encoding is not base64"
    priority = props.get("priority")
    if priority is not None and (
        isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 255
    ):
        return "envelope priority is not an integer 0..255"
    return None


def check_envelope(payload: Any) -> str | None:
    """Why kombu must not build a `Message` from this parsed Redis envelope, or None.

    Everything `virtual.Message.__init__`, the Redis QoS (unacked bookkeeping, restore)
    and kombu's base `Message` read is checked for presence and type; compressed messages
    are refused (a small body could decompress to gigabytes; deployer never compresses).
    """
    if not isinstance(payload, dict):
        return f"envelope is a JSON {type(payload).__name__}, not an object"
    problem = _check_properties(payload.get("properties"))
    if problem:
        return problem
    headers = payload.get("headers")
    if headers is not None and not isinstance(headers, dict):
        return "envelope headers are not an object"
    if isinstance(headers, dict) and headers.get("compression") is not None:
        return "compressed messages are refused"
    for name in ("content-type", "content-encoding"):
        if payload.get(name) is not None and not isinstance(payload.get(name), str):
            return f"envelope {name} is not a string"
    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        return "envelope body is not a string"
    encoding = payload["properties"].get("body_encoding")
    if body and isinstance(encoding, str) and encoding.lower() == "base64":
        if len(body) % 4 or not _BASE64.fullmatch(body):
            return "envelope body is not valid base64"
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def body_text(payload: Any, limit: int = 8192) -> str:
    """The start of a parsed envelope's body as text (base64 decoded when it can be)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("body"), str):
        return _REPR.repr(payload)
    body: str = payload["body"]
    props = payload.get("properties")
    encoding = props.get("body_encoding") if isinstance(props, dict) else None
    if encoding != "base64":
        return body[:limit]
    chunk = body[: limit - limit % 4]
    chunk = chunk[: len(chunk) - len(chunk) % 4]
    try:
        return base64.b64decode(chunk).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return body[:limit]


def envelope_letter(payload: Any, queue: str, reason: str, size: int) -> tuple[DeadLetter, str]:
    """The dead letter of a parsed envelope, and the start of its body (for a planId)."""
    headers = payload.get("headers") if isinstance(payload, dict) else None
    headers = headers if isinstance(headers, Mapping) else {}
    text = body_text(payload)
    letter = DeadLetter(
        reason=reason,
        queue=queue,
        task=_text(headers.get("task")),
        id=_text(headers.get("id")),
        size=size,
        head=head(text),
    )
    return letter, text


def raw_letter(raw: bytes | str, queue: str, reason: str) -> tuple[DeadLetter, str]:
    """The dead letter of a raw envelope that was not parsed (too large, not JSON)."""
    peek: Peek = peek_raw(raw)
    letter = DeadLetter(
        reason=reason,
        queue=queue or peek.queue,
        task=peek.task,
        id=peek.id,
        size=len(raw),
        head=head(peek.body if peek.body else as_text(raw, 8192)),
    )
    return letter, peek.body


#: Envelopes up to this size are parsed without being measured first (a stage message is
#: ~3 KB: measuring it would cost more than parsing it).
MEASURE_FROM = 64 * 1024
#: Levels and values an envelope adds around its headers (the body is one base64 string).
_ENVELOPE_DEPTH, _ENVELOPE_VALUES = 2, 64


def envelope_refusal(raw: bytes) -> tuple[str, str] | None:
    """(why, code) when a raw envelope must not be parsed: larger than the limit, or its
    headers would decode to more values or nest deeper than a message may."""
    s = _settings()
    limit = raw_limit(s.max_message_bytes)
    if len(raw) > limit:
        return f"message larger than {limit} bytes", PlanTooLarge.code
    if len(raw) <= MEASURE_FROM:
        return None  # parsing it costs little whatever it holds; the consumer guard checks it
    depth, values = s.max_message_depth + _ENVELOPE_DEPTH, s.max_message_elements + _ENVELOPE_VALUES
    shape = json_shape(raw, stop_depth=depth, stop_elements=values)
    if shape.depth > depth:
        return f"envelope nested deeper than {depth} levels", PlanTooDeep.code
    if shape.elements > values:
        return f"envelope holds more than {values} JSON values", PlanTooLarge.code
    return body_refusal(raw, s.max_message_depth, s.max_message_elements)


_BODY = re.compile(rb'"body"\s*:\s*"')


def body_refusal(raw: bytes, depth: int, values: int) -> tuple[str, str] | None:
    """(why, code) when the base64 body of a raw envelope would decode to more values or
    nest deeper than a message may, measured slice by slice (never decoded whole), before
    kombu parses the envelope: a 13 MB body of nested empty lists cost the main process
    ~130 MB in the copies parsing makes. kombu and celery-node write the body first; a body
    that is not plain base64 there is left to the consumer guard's check."""
    m = _BODY.search(raw, 0, 4096)
    end = raw.find(b'"', m.end()) if m else -1
    if m is None or end < 0:
        return None
    meter = Meter(depth, values)
    view = memoryview(raw)
    for start in range(m.end(), end, FEED_SLICE):  # a multiple of 4: whole base64 quanta
        try:
            piece = view[start : min(start + FEED_SLICE, end)]
            chunk = binascii.a2b_base64(piece, strict_mode=True)
        except binascii.Error:
            return None
        if meter.feed(chunk).exceeded:
            break
    shape = meter.shape()
    if shape.depth > depth:
        return f"nested deeper than {depth} levels", PlanTooDeep.code
    if shape.elements > values:
        return f"more than {values} JSON values", PlanTooLarge.code
    return None


def _refuse(letter: DeadLetter, text: str, code: str = Code.MESSAGE_REFUSED) -> None:
    from tasks.guard import refuse  # the guard imports the worker's app: load it lazily

    refuse(letter, text, code)


def _settings() -> Settings:
    from tasks import runtime

    return runtime.settings()


class GuardedChannel(kombu_redis.Channel):
    """kombu's Redis channel; BRPOP replies are measured, and unparseable ones refused."""

    _last_raw: bytes | None = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        client = super()._create_client(asynchronous)
        if asynchronous:  # the client that BRPOPs (kombu reads its reply in _brpop_read)
            client.parse_response = self._screening(client.parse_response)
        return client

    def _screening(self, parse: Callable[..., Any]) -> Callable[..., Any]:
        def parse_response(connection: Any, command_name: str, **options: Any) -> Any:
            response = parse(connection, command_name, **options)
            if command_name != "BRPOP" or not response:
                return response
            dest, item = response
            self._last_raw = item
            refusal = envelope_refusal(item)
            if refusal is not None:
                self._last_raw = None
                queue = bytes_to_str(dest).rsplit(self.sep, 1)[0]
                letter, text = raw_letter(item, queue, refusal[0])
                _refuse(letter, text, refusal[1])
                return None  # kombu reads "nothing popped" (Empty): the loop goes on
            return response

        return parse_response

    def _brpop_read(self, **options: Any) -> Any:
        self._last_raw = None
        try:
            return super()._brpop_read(**options)
        except (ValueError, TypeError, RecursionError) as exc:
            # Everything after parsing is caught in GuardedTransport._deliver, so this is
            # kombu's `loads(bytes_to_str(item))` failing: not UTF-8, not JSON, too deep.
            raw, self._last_raw = self._last_raw, None
            if raw is None:
                raise
            reason = f"envelope is not JSON ({type(exc).__name__})"
            _refuse(*raw_letter(raw, "", reason))
            raise Empty() from None
        finally:
            self._last_raw = None  # never keep a (possibly 80 MB) reply past its delivery

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        """`basic_get` (not the worker's path): the same checks, refused = nothing there."""
        try:
            payload = super()._get(queue)
        except (ValueError, TypeError, RecursionError) as exc:
            _refuse(*raw_letter(b"", queue, f"envelope is not JSON ({type(exc).__name__})"))
            raise Empty() from None
        problem = check_envelope(payload)
        if problem:
            _refuse(*envelope_letter(payload, queue, problem, 0))
            raise Empty()
        return payload


class GuardedTransport(kombu_redis.Transport):
    """kombu's Redis transport with GuardedChannel and a checked `_deliver`."""

    Channel = GuardedChannel

    def _deliver(self, message: Any, queue: str) -> None:
        problem = check_envelope(message)
        if problem:
            raw = self._raw_in_flight()
            size = len(raw) if raw is not None else 0
            _refuse(*envelope_letter(message, queue, problem, size))
            return
        try:
            super()._deliver(message, queue)
        except self.connection_errors + self.channel_errors:
            raise
        except Exception as exc:  # noqa: BLE001 - the last line: the worker must live
            # Celery's own handling raised (e.g. while handing the task to a pool process).
            # The message is in the unacked set by now: ack it, or it is restored after a
            # restart and takes that worker down too.
            self._ack_delivered(message)
            reason = f"worker could not take the message ({type(exc).__name__})"
            _refuse(*envelope_letter(message, queue, reason, 0))

    def _raw_in_flight(self) -> bytes | None:
        for channel in self.channels:
            raw = getattr(channel, "_last_raw", None)
            if raw is not None:
                return raw  # type: ignore[no-any-return]
        return None

    def _ack_delivered(self, message: Any) -> None:
        tag = message["properties"]["delivery_tag"]
        for channel in self.channels:
            try:
                if tag in channel.qos._delivered:
                    channel.basic_ack(tag)
            except Exception as exc:  # noqa: BLE001 - logged; nothing more can be done
                log.warning("could not ack a refused message (%s)", type(exc).__name__)


class GuardedSentinelChannel(GuardedChannel, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (the master the sentinels name, found again after a
    failover) with GuardedChannel's checks: the same BRPOP replies, the same parsing."""


class GuardedSentinelTransport(GuardedTransport):
    """GuardedTransport over Sentinel (`sentinel://` broker URLs): kombu's SentinelTransport
    is its Redis transport with another channel and default port, so is this one."""

    Channel = GuardedSentinelChannel
    default_port = kombu_redis.SentinelTransport.default_port  # type: ignore[assignment]
