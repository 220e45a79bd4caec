"""What Flower and the worker log show for a task: redacted, labelled argument reprs.

Flower shows what the *sender* wrote (`argsrepr`/`kwargsrepr` in the message headers and
in the `task-sent` event), never the real arguments. So both are rewritten where a message
is built and again just before it is published:

- secrets (deployer.redact.SECRET_FIELDS) are masked;
- a stage task's kwargsrepr is a dict of labels (`planId`, `tenantId`, `stage`, ...), so in
  Flower `kwargs:tenantId=tenant-001` or `kwargs:planId=p1` filters exactly, and its
  argsrepr is a one-line summary instead of 1 KB of context;
- a plan submission is summarised the same way (plan id, tenant count), not dumped.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import celery.app.trace
from celery.app.amqp import AMQP
from celery.signals import before_task_publish
from celery.utils.saferepr import saferepr

from deployer.redact import redact
from tasks.app import app

REPR_MAXSIZE = 1024
_SCALARS = (str, int, float, bool, type(None))


def _flat(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and isinstance(v, _SCALARS) for k, v in value.items())
    if isinstance(value, tuple):
        return all(isinstance(v, _SCALARS) for v in value)
    return False


def bounded_repr(value: Any) -> str:
    """saferepr for anything; plain repr for the flat labels every stage message carries.

    saferepr walks its input token by token (≈ 60 µs for a label dict), and a wave of 500
    stage messages needs two reprs each: that was a third of the time to send the wave.
    A flat tuple or dict of scalars reprs the same either way; only the bound differs.
    """
    if not _flat(value):
        return str(saferepr(value, REPR_MAXSIZE))
    text = repr(value)
    return text if len(text) <= REPR_MAXSIZE else text[: REPR_MAXSIZE - 3] + "..."


#: Containers nested deeper than this are abbreviated by saferepr (its `maxlevels` - 1).
_PLAIN_DEPTH = 2


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether saferepr would write `value` exactly as `repr` does: JSON's types only (exact
    types, so no subclass with its own repr), text without quotes, backslashes or unprintable
    characters (saferepr neither escapes those nor picks another quote), and no container
    deeper than saferepr shows."""
    kind = type(value)
    if kind is str:
        return "'" not in value and "\\" not in value and value.isprintable()
    if kind in (int, float, bool) or value is None:
        return True
    if depth > _PLAIN_DEPTH:
        return False
    if kind is dict:
        return all(type(k) is str and _plain(k) and _plain(v, depth + 1) for k, v in value.items())
    if kind is list:
        return all(_plain(v, depth + 1) for v in value)
    return False


def result_repr(value: Any, maxlen: int | None = None, maxlevels: int = 3) -> str:
    """saferepr, but `repr` where both write the same text.

    A stage that hands its context on returns it, and Celery's tracer writes its saferepr
    for the worker log and the `task-succeeded` event (Flower's Result column) after every
    attempt: ≈ 67 µs for a 300-character context, walked token by token, against ≈ 6 µs
    to check it is plain JSON and `repr` it. Used only where the two agree (plain values,
    shorter than `maxlen`, no deeper than saferepr shows); tests/unit/test_result_repr.py
    holds it to saferepr on random values.
    """
    if maxlevels == _PLAIN_DEPTH + 1 and _plain(value):
        text = repr(value)
        if maxlen is None or len(text) < maxlen:
            return text
    return str(saferepr(value, maxlen, maxlevels))


def _install_result_repr() -> None:
    """Make Celery's tracer write results with `result_repr`.

    The tracer calls the `saferepr` its module imported (celery/app/trace.py); that name is
    replaced here alone. tests/unit/test_result_repr.py runs a task through Celery's tracer
    and fails if an upgrade stops using it, so the speed-up cannot vanish silently."""
    if getattr(celery.app.trace, "saferepr", None) not in (saferepr, result_repr):
        raise RuntimeError("celery.app.trace changed: cannot install the result repr")
    celery.app.trace.saferepr = result_repr


def _as_dict(value: Any) -> Mapping[str, Any]:
    if isinstance(value, str) and value[:1] == "{":
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # a plan nested too deep has no labels
            return {}
    return value if isinstance(value, Mapping) else {}


def labels(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    """Operator-facing labels of a deployer task (None: not one we label)."""
    if name == "deployer.run_stage" and len(args) >= 2:
        ctx, spec = _as_dict(args[0]), _as_dict(args[1])
        out = {
            "planId": ctx.get("planId"),
            "tenantId": ctx.get("tenantId"),
            "stage": spec.get("name"),
            "stageIndex": ctx.get("stageIndex"),
            "stageCount": ctx.get("stageCount"),
            "runKind": ctx.get("runKind"),
            "planVersion": _as_dict(ctx.get("additionalData")).get("planVersion"),
        }
        if ctx.get("stepIndex") or ctx.get("attempt"):  # a poll re-entering the stage
            out.update(step=ctx.get("stepIndex"), attempt=ctx.get("attempt"))
        return {k: v for k, v in out.items() if v is not None}
    if name == "deployer.submit_plan" and args:
        plan = _as_dict(args[0])
        tenants = plan.get("tenants")
        return {
            "planId": plan.get("planId"),
            "tenants": len(tenants) if isinstance(tenants, list) else None,
        }
    if name.startswith("deployer.") and args:
        target = _as_dict(args[0])
        out = {k: target[k] for k in ("planId", "tenantId") if k in target}
        return out or None
    return None


def reprs(name: str, args: Any, kwargs: Any) -> tuple[str, str]:
    """(argsrepr, kwargsrepr) for a message of task `name`: redacted, labelled, bounded."""
    args = list(args or ()) if isinstance(args, list | tuple) else [args]
    kwargs = dict(kwargs or {}) if isinstance(kwargs, Mapping) else {}
    tags = labels(name, args, kwargs)
    if name == "deployer.run_stage" and tags is not None:
        summary = " ".join(f"{k}={v}" for k, v in tags.items())
        return bounded_repr((summary,)), bounded_repr(tags)
    if name == "deployer.submit_plan" and tags is not None:
        return saferepr((tags,), REPR_MAXSIZE), saferepr(redact(kwargs), REPR_MAXSIZE)
    shown = redact(kwargs)
    if tags:
        shown = {**tags, **shown}
    return saferepr(tuple(redact(args)), REPR_MAXSIZE), saferepr(shown, REPR_MAXSIZE)


class _Built(threading.local):
    """The last message this thread built with RedactingAMQP, until it is published.

    Celery builds a message and publishes it in the same call (`send_task`); the
    publish hook then finds the very headers and body whose reprs were just written and
    need not compute them a second time (two reprs per message were ≈ 60 µs, for every
    stage message a worker sends on)."""

    headers: Any = None
    body: Any = None
    argsrepr: Any = None
    kwargsrepr: Any = None

    def keep(self, headers: Any, body: Any) -> None:
        self.headers, self.body = headers, body
        self.argsrepr, self.kwargsrepr = headers.get("argsrepr"), headers.get("kwargsrepr")

    def take(self, headers: Any, body: Any) -> bool:
        """True when `headers` and `body` are the message built last, its reprs untouched
        since (the same objects: a `headers=` option merged over them, or a message of
        another app, is not). Forgets it either way: a message is published once."""
        ours = (
            headers is self.headers
            and body is self.body
            and headers.get("argsrepr") is self.argsrepr
            and headers.get("kwargsrepr") is self.kwargsrepr
        )
        self.headers = self.body = self.argsrepr = self.kwargsrepr = None
        return ours


_built = _Built()


class RedactingAMQP(AMQP):
    """Builds every message (and its `task-sent` event) with our reprs."""

    def as_task_v2(
        self, task_id: str, name: str, args: Any = None, kwargs: Any = None, *rest: Any, **opts: Any
    ) -> Any:
        opts["argsrepr"], opts["kwargsrepr"] = reprs(name, args, kwargs)
        message = super().as_task_v2(task_id, name, args, kwargs, *rest, **opts)
        _built.keep(message.headers, message.body)
        shadow = message.headers.get("shadow")  # Celery passes it positionally: read it back
        if shadow and message.sent_event is not None:
            # Celery's task-sent event carries the real name; Flower keeps whichever event
            # arrives last, so a late task-sent would rename `stage bg · t1` back.
            message.sent_event["name"] = shadow
        return message


@before_task_publish.connect(weak=False)
def redact_published(
    sender: str | None = None,
    body: Any = None,
    headers: dict[str, Any] | None = None,
    **_: Any,
) -> None:
    """Last line: whatever built the message (any Celery app in this process), fix its reprs
    (unless RedactingAMQP wrote them just now, on these very headers and body)."""
    if headers is None or "argsrepr" not in headers:
        return  # protocol 1, or not a task message
    if _built.take(headers, body):
        return
    if isinstance(body, list | tuple) and len(body) >= 2:
        name = str(headers.get("task") or sender or "")
        headers["argsrepr"], headers["kwargsrepr"] = reprs(name, body[0], body[1])


def install(celery_app: Any) -> None:
    """Make `celery_app` build messages with RedactingAMQP; before it has built any."""
    if "amqp" in vars(celery_app):
        if not isinstance(celery_app.amqp, RedactingAMQP):
            raise RuntimeError("tasks.reprs must be imported before the app sends a message")
        return
    celery_app.amqp_cls = RedactingAMQP


install(app)
_install_result_repr()
