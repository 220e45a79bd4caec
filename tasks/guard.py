"""The message guard: a malformed broker message is logged and acknowledged, never fatal.

A stock Celery 5.7 worker dies ("Unrecoverable error") on a message whose body is JSON but
not `[args, kwargs, embed]`, and on several other shapes (a body that is a bare number, a
protocol-1 message without `id`, a `timelimit` that is not a pair...): the exception escapes
the consumer's callback. `GuardedConsumer` (set as `worker_consumer` in celeryconfig) checks
each message *before* Celery's own handler sees it:

- headers a dict with string `task` and `id` (celery-node's minimal `lang, task, id` pass);
- the task is registered here;
- content type JSON (a pickle message is refused, not decoded);
- the body decodes and is `[args(list), kwargs(dict), embed(dict|None)]`;
- the arguments bind to the task's signature;
- the optional headers Celery reads have the types it expects.

A message failing any check is acknowledged (so it cannot loop) and logged with its id,
task name and the reason only: never its body, which may hold secrets. Celery's own
fallbacks (`on_invalid_task`, `on_decode_error`, ...) are overridden to log the same way.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from celery.worker.consumer import Consumer

log = logging.getLogger("deployer.guard")

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


def _check_headers(headers: Mapping[str, Any]) -> str | None:
    for name in _OPTIONAL_STR:
        value = headers.get(name)
        if value is not None and not isinstance(value, str):
            return f"header {name} must be a string"
    timelimit = headers.get("timelimit")
    if timelimit is not None:
        if not isinstance(timelimit, list | tuple) or len(timelimit) != 2:
            return "header timelimit must be [hard, soft]"
        if not all(v is None or (isinstance(v, int | float) and v >= 0) for v in timelimit):
            return "header timelimit must hold non-negative numbers or nulls"
    retries = headers.get("retries")
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool)):
        return "header retries must be an integer"
    ignore = headers.get("ignore_result")
    if ignore is not None and not isinstance(ignore, bool):
        return "header ignore_result must be a boolean"
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
        for name in ("callbacks", "errbacks", "chain"):
            value = embed.get(name)
            if value is not None and not isinstance(value, list):
                return f"embed.{name} is not a list"
        chord = embed.get("chord")
        if chord is not None and not isinstance(chord, dict):
            return "embed.chord is not an object"
    return list(args), kwargs


@lru_cache(maxsize=256)
def _signature(task: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(task.run)
    except (TypeError, ValueError):
        return None


def check_message(message: Any, tasks: Mapping[str, Any]) -> str | None:
    """Why `message` must not reach Celery's handler, or None when it is well formed."""
    headers = message.headers
    if not isinstance(headers, dict):
        return "headers are not a mapping"
    name, task_id = headers.get("task"), headers.get("id")
    if not isinstance(name, str) or not name:
        return "no task name in the headers (only task protocol 2 is accepted)"
    if not isinstance(task_id, str) or not task_id:
        return "no task id in the headers"
    task = tasks.get(name)
    if task is None:
        return f"unknown task {_shown(name)}"
    problem = _check_headers(headers)
    if problem:
        return problem
    if message.content_type not in JSON_TYPES:
        return f"content type {_shown(message.content_type)} refused (JSON only)"
    try:
        body = message.decode()
    except Exception as exc:  # kombu raises DecodeError, ContentDisallowed, ...
        return f"body cannot be decoded: {type(exc).__name__}"
    checked = check_body(body)
    if isinstance(checked, str):
        return checked
    args, kwargs = checked
    sig = _signature(task)
    if sig is not None:
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            return f"arguments do not match {name}: {exc}"
    return None


def describe(message: Any) -> str:
    headers = message.headers if isinstance(message.headers, dict) else {}
    delivery = message.delivery_info if isinstance(message.delivery_info, dict) else {}
    queue = delivery.get("routing_key") or delivery.get("queue") or "?"
    return (
        f"id={_shown(headers.get('id'))} task={_shown(headers.get('task'))} "
        f"queue={_shown(queue)} content_type={_shown(message.content_type)} "
        f"size={len(message.body or b'')}b"
    )


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

    def reject_log_error(logger: Any, errors: Any, requeue: bool = False) -> None:
        try:
            reject(logger, errors, requeue=requeue)
        except AttributeError as exc:
            log.warning("reject lost with a closed channel (%s): %s", exc, describe(message))

    message.ack_log_error = ack_log_error
    message.reject_log_error = reject_log_error


class GuardedConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer with every message checked before it is handled."""

    dropped = 0

    def _drop(self, message: Any, reason: str) -> None:
        GuardedConsumer.dropped += 1
        log.error("malformed message dropped (%s): %s", reason, describe(message))
        harden(message)
        message.ack_log_error(log, self.connection_errors)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle = super().create_task_handler(*args, **kwargs)
        tasks = self.app.tasks

        def on_task_received(message: Any) -> Any:
            try:
                problem = check_message(message, tasks)
            except Exception as exc:  # the check itself must never take the worker down
                problem = f"unreadable message ({type(exc).__name__})"
            if problem is not None:
                return self._drop(message, problem)
            harden(message)
            return handle(message)

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
