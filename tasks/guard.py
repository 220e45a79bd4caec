"""The message guard: a malformed broker message is dead-lettered and acknowledged, never fatal.

A stock Celery 5.7 worker dies ("Unrecoverable error") on a message whose body is JSON but
not `[args, kwargs, embed]`, on a plan nested a few hundred levels deep (RecursionError
while the request is pickled for the pool; the message is restored and kills every
restarted worker), and on several other shapes. `GuardedConsumer` (set as
`worker_consumer` in celeryconfig) checks each message *before* Celery's own handler sees
it (what kombu's Redis transport fails on earlier is guarded in tasks/transport.py):

- headers a dict with string `task` and `id` (celery-node's minimal `lang, task, id` pass);
- the task is one of deployer's own (`deployer.*`, registered here): Celery's built-ins
  (`celery.chord_unlock` sent by hand looped at 100 % CPU) are refused;
- every header Celery reads has the type it expects; compressed messages are refused;
- an ETA no further ahead than the horizon (`max_eta_seconds`): Celery would hold a later
  one unacknowledged in memory, and Redis restore a copy of it every visibility timeout;
- content type JSON (a pickle message is refused, not decoded);
- the body is at most `max_message_bytes` and nests at most `max_message_depth` levels;
- the body decodes and is `[args(list), kwargs(dict), embed(dict|None)]`;
- it makes the worker send nothing on but deployer's own stage chain (tasks/relays.py);
- the arguments bind to the task's signature.

A message failing any check is rejected without requeue (acknowledged on Redis, handed to
the queue's dead-letter exchange on RabbitMQ: it cannot loop), kept in the bounded stream
`deployer:dead-letters` (reason, queue, task, id, size, a redacted head) and logged once at
WARNING with its id, task name and the reason only: never its body, which may hold
secrets. A refused `deployer.submit_plan` whose planId can be read is also rejected in
`deployer:rejections`, so a caller waiting for its answer gets one. Celery's own fallbacks
(`on_invalid_task`, `on_decode_error`, ...) are overridden to do the same.

The worker also writes the `argsrepr`/`kwargsrepr` headers itself (tasks/reprs.reprs):
the task-received event Flower shows carries no secret whatever client sent the message.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from celery.utils.saferepr import saferepr
from celery.utils.time import maybe_iso8601
from celery.worker.consumer import Consumer

from deployer.deadletter import DeadLetter, as_text, head, peek_plan_id
from deployer.errors import Code, MessageRefused, PlanTooDeep, PlanTooLarge
from deployer.jsonshape import Shape, json_shape
from deployer.redact import redact
from deployer.settings import Settings
from tasks import runtime
from tasks.relays import relay_problem
from tasks.reprs import REPR_MAXSIZE, reprs

log = logging.getLogger("deployer.guard")

#: Only deployer's own tasks are accepted from the queues.
TASK_PREFIX = "deployer."
#: What Celery and celery-node put in `embed`; deployer uses no chords.
_EMBED_KEYS = frozenset({"callbacks", "errbacks", "chain", "chord"})
#: Time limits beyond this are refused (a huge one overflows the pool's timer).
_MAX_TIMELIMIT = 7 * 86400.0
#: A plan sent as a JSON string longer than this is labelled from its head, not parsed,
#: in the worker's argsrepr (it is parsed once, by the task).
_PARSE_FOR_REPR = 65536


class Refusal(NamedTuple):
    """Why a message is refused, and the rejection code its caller sees."""

    reason: str
    code: str = Code.MESSAGE_REFUSED


JSON_TYPES = frozenset({"application/json"})
_MAX_SHOWN = 120

_OPTIONAL_STR = (
    "root_id",
    "parent_id",
    "group",
    "shadow",
    "argsrepr",
    "kwargsrepr",
    "eta",
    "expires",
    "lang",
    "origin",
)


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _reject_raw(message: Any) -> None:
    try:
        message.channel.basic_reject(message.delivery_tag, requeue=False)
    except Exception as exc:  # noqa: BLE001 - logged; RabbitMQ requeues it on reconnect
        log.warning("could not reject a refused message (%s)", type(exc).__name__)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_timelimit(timelimit: Any) -> str | None:
    if timelimit is None:
        return None
    if not isinstance(timelimit, list | tuple) or len(timelimit) != 2:
        return "header timelimit must be [hard, soft]"
    if not all(
        v is None
        or (isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= _MAX_TIMELIMIT)
        for v in timelimit
    ):
        return "header timelimit must hold seconds (0..7 days) or nulls"
    return None


def _check_headers(headers: Mapping[str, Any]) -> str | None:
    """Every header Celery's Request, strategy or tracer reads has the type they expect."""
    for name in _OPTIONAL_STR:
        value = headers.get(name)
        if value is not None and not isinstance(value, str):
            return f"header {name} must be a string"
    problem = _check_timelimit(headers.get("timelimit"))
    if problem:
        return problem
    for name in ("retries", "replaced_task_nesting"):
        value = headers.get(name)
        if value is not None and (not _int(value) or not 0 <= value <= 1_000_000):
            return f"header {name} must be a small non-negative integer"
    group_index = headers.get("group_index")
    if group_index is not None and not _int(group_index):
        return "header group_index must be an integer"
    ignore = headers.get("ignore_result")
    if ignore is not None and not isinstance(ignore, bool):
        return "header ignore_result must be a boolean"
    for name in ("stamped_headers", "groups"):
        value = headers.get(name)
        if value is not None and not _str_list(value):
            return f"header {name} must be a list of strings"
    stamps = headers.get("stamps")
    if stamps is not None and not isinstance(stamps, dict):
        return "header stamps must be an object"
    if headers.get("compression") is not None:
        return "compressed messages are refused"
    return None


def check_times(headers: Mapping[str, Any], horizon: float) -> str | None:
    """An `eta` or `expires` header Celery cannot parse, or an ETA further ahead than
    `horizon` seconds: Celery would hold that message unacknowledged until then (and the
    Redis transport restore a copy of it every visibility timeout)."""
    for name in ("eta", "expires"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            when = maybe_iso8601(value)
        except (ValueError, TypeError, OverflowError):
            when = None
        if when is None:
            return f"header {name} is not an ISO 8601 time"
        if name == "eta":
            aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
            try:
                ahead = (aware - datetime.now(UTC)).total_seconds()
            except OverflowError:
                ahead = float("inf")
            if ahead > horizon:
                return f"eta {ahead:.0f}s ahead, beyond the {horizon:g}s horizon"
    return None


def check_body(body: Any) -> tuple[list[Any], dict[str, Any]] | str:
    """`(args, kwargs)` of a protocol-2 body, or why it is not one."""
    if not isinstance(body, list | tuple) or len(body) != 3:
        return "body is not [args, kwargs, embed]"
    args, kwargs, embed = body
    if not isinstance(args, list | tuple):
        return "args is not a list"
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        return "kwargs is not an object"
    if embed is not None and not isinstance(embed, dict):
        return "embed is not an object"
    if isinstance(embed, dict):
        unknown = set(embed) - _EMBED_KEYS
        if unknown:
            return f"embed has unknown keys {_shown(sorted(unknown))}"
        for name in ("callbacks", "errbacks", "chain"):
            value = embed.get(name)
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(v, dict) for v in value)
            ):
                return f"embed.{name} is not a list of signatures"
        if embed.get("chord") is not None:
            return "embed.chord is refused (deployer uses no chords)"
    return list(args), kwargs


@lru_cache(maxsize=256)
def _signature(task: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(task.run)
    except (TypeError, ValueError):
        return None


def allowed(name: str, tasks: Mapping[str, Any]) -> bool:
    """Only deployer's own registered tasks run from the queues: no Celery built-in."""
    return name.startswith(TASK_PREFIX) and name in tasks


def _decode(message: Any) -> Any:
    """The decoded body, or a Refusal: JSON only, measured before it is decoded (bytes,
    then the values and the depth decoding would build: deployer/jsonshape.py)."""
    if message.content_type not in JSON_TYPES:
        return Refusal(f"content type {_shown(message.content_type)} refused (JSON only)")
    settings = runtime.settings()
    raw = message.body or b""
    if len(raw) > settings.max_message_bytes:
        return Refusal(f"larger than {settings.max_message_bytes} bytes", PlanTooLarge.code)
    if not _within_bounds(raw, settings):
        shape = json_shape(raw, settings.max_message_depth, settings.max_message_elements)
        problem = _shape_problem(shape, settings)
        if problem is not None:
            return problem
    try:
        return message.decode()
    except Exception as exc:  # kombu raises DecodeError, ContentDisallowed, ...
        return Refusal(f"body cannot be decoded: {type(exc).__name__}")


def _within_bounds(raw: bytes | str, settings: Settings) -> bool:
    """Whether `raw` cannot pass either bound, whatever it holds: every JSON value takes at
    least one byte and every level of nesting an opening bracket. Two byte counts (≈ 2 µs for
    a 3 KB stage message, whose 50 brackets are below the 64 levels) instead of measuring its
    shape (≈ 35 µs). Text that is not JSON is then refused by the decode itself."""
    if len(raw) > settings.max_message_elements:
        return False
    if isinstance(raw, str):  # py-amqp hands a body with a content encoding over decoded
        return raw.count("[") + raw.count("{") <= settings.max_message_depth
    return raw.count(b"[") + raw.count(b"{") <= settings.max_message_depth


def _shape_problem(shape: Shape, settings: Settings) -> Refusal | None:
    depth, elements = settings.max_message_depth, settings.max_message_elements
    why = shape.problem(depth, elements)
    if why is None:
        return None
    if shape.depth > depth:
        return Refusal(why, PlanTooDeep.code)
    if shape.elements > elements:
        return Refusal(why, PlanTooLarge.code)
    return Refusal(f"body cannot be decoded: {why}")


def _headers_problem(headers: Mapping[str, Any], settings: Settings) -> Refusal | None:
    """Headers nested or as large as a body may not be (walked without recursion, at most
    `max_message_elements` values: AMQP tables come decoded, Redis ones were measured
    on the envelope's text)."""
    depth, elements = settings.max_message_depth, settings.max_message_elements
    stack: list[tuple[Any, int]] = [(headers, 1)]
    seen = 0
    while stack:
        value, level = stack.pop()
        seen += 1
        if level > depth:
            return Refusal(f"headers nested deeper than {depth} levels", PlanTooDeep.code)
        if seen > elements:
            return Refusal(f"headers hold more than {elements} values", PlanTooLarge.code)
        kind = type(value)
        if kind is str or kind is int or value is None:  # most header values: nothing inside
            continue
        if kind is dict or isinstance(value, Mapping):
            stack.extend((v, level + 1) for v in value.values())
        elif kind is list or isinstance(value, list | tuple):
            stack.extend((v, level + 1) for v in value)
    return None


def _header_refusal(headers: dict[str, Any], tasks: Mapping[str, Any]) -> Refusal | None:
    name, task_id = headers.get("task"), headers.get("id")
    if not isinstance(name, str) or not name:
        return Refusal("no task name in the headers (only task protocol 2 is accepted)")
    if not isinstance(task_id, str) or not task_id:
        return Refusal("no task id in the headers")
    if not allowed(name, tasks):
        return Refusal(f"unknown task {_shown(name)}")
    problem = _check_headers(headers)
    if problem:
        return Refusal(problem)
    settings = runtime.settings()
    too_much = _headers_problem(headers, settings)
    if too_much is not None:
        return too_much
    problem = check_times(headers, settings.eta_horizon_seconds)
    return Refusal(problem) if problem else None


def _body_refusal(message: Any, name: str, task: Any, headers: dict[str, Any]) -> Refusal | None:
    decoded = _decode(message)
    if isinstance(decoded, Refusal):
        return decoded
    checked = check_body(decoded)
    if isinstance(checked, str):
        return Refusal(checked)
    relay = relay_problem(name, decoded[2], headers)
    if relay:
        return Refusal(relay)
    args, kwargs = checked
    sig = _signature(task)
    if sig is not None:
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            return Refusal(f"arguments do not match {name}: {exc}")
    return None


def check_message(message: Any, tasks: Mapping[str, Any]) -> Refusal | None:
    """Why `message` must not reach Celery's handler, or None when it is well formed.

    Cheap checks first: the headers, then the body measured before it is decoded (its
    size, and the values and depth decoding would build) before Celery or billiard walk it.
    """
    headers = message.headers
    if not isinstance(headers, dict):
        return Refusal("headers are not a mapping")
    refusal = _header_refusal(headers, tasks)
    if refusal is not None:
        return refusal
    name = headers["task"]
    return _body_refusal(message, name, tasks[name], headers)


def worker_reprs(name: str, args: list[Any], kwargs: dict[str, Any]) -> tuple[str, str]:
    """(argsrepr, kwargsrepr) computed by the worker from what it received: redacted and
    labelled like a deployer client's, so a bare `send_task` cannot put a secret in Flower.
    A plan sent as a long JSON string is labelled from its head instead of parsed."""
    if name == "deployer.submit_plan" and args and isinstance(args[0], str):
        if len(args[0]) > _PARSE_FOR_REPR:
            tags = {"planId": peek_plan_id(args[0]) or None, "tenants": None}
            return saferepr((tags,), REPR_MAXSIZE), saferepr(redact(kwargs), REPR_MAXSIZE)
    return reprs(name, args, kwargs)


def refuse(letter: DeadLetter, text: str = "", code: str = Code.MESSAGE_REFUSED) -> None:
    """Keep and log a refused message; answer its caller when it was a plan submission.

    Never raises: it runs inside the worker's event loop (transport and consumer).
    """
    try:
        runtime.dead_letters().record(letter)
        if letter.task != "deployer.submit_plan":
            return
        plan_id = peek_plan_id(text)
        if not plan_id:
            return
        field = "(message)" if code == MessageRefused.code else "(plan)"
        runtime.store().reject(
            plan_id,
            [{"field": field, "reason": letter.reason}],
            f"message refused: {letter.reason}",
            code=code,
        )
    except Exception as exc:  # noqa: BLE001 - the worker must live; the log line stays
        log.warning("refused message not fully recorded (%s)", type(exc).__name__)


def describe(message: Any) -> str:
    headers = message.headers if isinstance(message.headers, dict) else {}
    delivery = message.delivery_info if isinstance(message.delivery_info, dict) else {}
    queue = delivery.get("routing_key") or delivery.get("queue") or "?"
    return (
        f"id={_shown(headers.get('id'))} task={_shown(headers.get('task'))} "
        f"queue={_shown(queue)} content_type={_shown(message.content_type)} "
        f"size={len(message.body or b'')}b"
    )


def _rewrite_reprs(message: Any) -> None:
    """Replace the sender's argsrepr/kwargsrepr (Celery's Request reads them from the
    headers for the task-received event and its log line) with the worker's own."""
    args, kwargs, _embed = message.decode()  # cached by kombu: decoded once
    headers = message.headers
    headers["argsrepr"], headers["kwargsrepr"] = worker_reprs(headers["task"], args, kwargs)


def _unharden(message: Any) -> None:
    """Break the message -> wrapper -> message cycle once the message is settled: left to
    the cyclic collector, a large message body would live until a full collection."""
    for name in ("ack_log_error", "reject_log_error"):
        vars(message).pop(name, None)


def harden(message: Any) -> None:
    """Make a late ack/reject on a channel closed by a broker restart a warning, not a crash.

    kombu 5.7's Redis channel raises AttributeError (not a connection error) when a task
    finishing after a reconnect acks on its old, released channel; Celery then stops the
    worker. The message stays unacked, comes back after visibility_timeout and is dropped
    as stale by fencing (or re-driven sooner by the reconciler).
    """
    ack, reject = message.ack_log_error, message.reject_log_error

    def ack_log_error(logger: Any, errors: Any, multiple: bool = False) -> None:
        try:
            ack(logger, errors, multiple=multiple)
        except AttributeError as exc:
            log.warning("ack lost with a closed channel (%s): %s", exc, describe(message))
        finally:
            _unharden(message)

    def reject_log_error(logger: Any, errors: Any, requeue: bool = False) -> None:
        try:
            reject(logger, errors, requeue=requeue)
        except AttributeError as exc:
            log.warning("reject lost with a closed channel (%s): %s", exc, describe(message))
        finally:
            _unharden(message)

    message.ack_log_error = ack_log_error
    message.reject_log_error = reject_log_error


class GuardedConsumer(Consumer):
    """Celery's consumer with every message checked before it is handled."""

    dropped = 0

    def _drop(self, message: Any, reason: str, code: str = Code.MESSAGE_REFUSED) -> None:
        """Dead-letter `message`: recorded, then rejected without requeue (acknowledged on
        Redis; on RabbitMQ handed to the queue's dead-letter exchange, if a policy names
        one). `message` may be a transport's raw message when kombu could not wrap it."""
        GuardedConsumer.dropped += 1
        try:
            headers = _mapping(getattr(message, "headers", None))
            delivery = _mapping(getattr(message, "delivery_info", None))
            body = getattr(message, "body", b"")
            body = body if isinstance(body, bytes | str) else b""
            letter = DeadLetter(
                reason=reason,
                queue=_str(delivery.get("routing_key") or delivery.get("queue")),
                task=_str(headers.get("task")),
                id=_str(headers.get("id")),
                size=len(body),
                head=head(body),
            )
            refuse(letter, as_text(body, 8192), code)
        finally:
            if hasattr(message, "reject_log_error"):
                harden(message)
                message.reject_log_error(log, self.connection_errors, requeue=False)
            else:  # py-amqp's own message (kombu failed to wrap it)
                _reject_raw(message)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle = super().create_task_handler(*args, **kwargs)
        tasks = self.app.tasks

        def on_task_received(message: Any) -> Any:
            try:
                refusal = check_message(message, tasks)
                if refusal is None:
                    _rewrite_reprs(message)
            except Exception as exc:  # the check itself must never take the worker down
                refusal = Refusal(f"unreadable message ({type(exc).__name__})")
            if refusal is not None:
                return self._drop(message, refusal.reason, refusal.code)
            harden(message)
            try:
                return handle(message)
            except self.connection_errors:
                raise
            except Exception as exc:  # noqa: BLE001 - the worker must live (any transport)
                if message.acknowledged:
                    log.warning("task handler failed after ack (%s)", type(exc).__name__)
                    return None
                reason = f"worker could not take the message ({type(exc).__name__})"
                return self._drop(message, reason)

        return on_task_received

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        # kombu 5.7's Redis channel can raise AttributeError while closing a connection the
        # server already dropped (restore_unacked on a released client): Celery treats it as
        # unrecoverable and the worker exits. Reconnecting is right; the unacked messages
        # come back after visibility_timeout and the reconciler re-drives sooner.
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as err:
            log.warning("broker connection closed uncleanly (%s); reconnecting", err)

    # Celery's fallbacks log the body (secrets); ours log what and why only.
    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._drop(message, "unknown message format")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._drop(message, "unknown task")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._drop(message, f"invalid task: {_shown(str(exc))}")

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._drop(message, f"body cannot be decoded: {type(exc).__name__}")
