"""How a stage attempt ends in Celery's events: what Flower (and any event consumer) shows.

A HealthCheck that waits re-sends its stage under the same task id (tasks/stage.py
`reschedule`, `park`), so one Flower task is every attempt of one stage. Celery's event
state (`celery.events.state.Task.event`, which Flower runs) orders states by precedence
(SUCCESS, FAILURE, any custom state, ..., STARTED, RECEIVED) and takes an event of a lower
one as "logically before" the current state: once one poll of a uuid ended
`task-succeeded`, the `task-failed` of its last attempt no longer changed the state, and a
stage that failed after polling stayed SUCCESS, missing from `/api/tasks?state=FAILURE`.
So an attempt that re-sent its stage ends with the custom event `task-waiting` (state
WAITING): above the next attempt's RECEIVED and STARTED, so the stage reads WAITING while it
polls, and below FAILURE and SUCCESS, so its last attempt decides. Not `task-retried`:
Celery's RETRY means the task raised and is retried, which a poll is not.

The worker's main process sends these events from the pool's answer, which holds only the
text of the task's return value (`saferepr`): a re-send says so by returning `resent(text)`,
a string tagged with RESENT_TAG that `StageRequest` recognises and strips. (Raising Celery's
`Retry` would mark it natively, but a raised Retry costs ~100 KB per poll in the pool process:
see tasks/stage.py `reschedule`.)

`StageRequest` also masks fence tokens in every event it sends (the `result` of a stage that
hands its context on holds one), and leaves the traceback out of the `task-failed` event of
a `StageFailed`: an expected outcome whose reason is the exception text.
"""

from __future__ import annotations

import ast
from typing import Any

from celery.utils.imports import symbol_by_name

from tasks.app import app
from tasks.tokens import redact_tokens

#: The event of an attempt that re-sent its stage; Celery's event state makes it state WAITING.
WAITING_EVENT = "task-waiting"
#: Starts the return value of an attempt that re-sent its stage (see the module docstring).
RESENT_TAG = "[re-sent] "


def resent(text: str) -> str:
    """The return value of an attempt that re-sent (or parked) its stage."""
    return RESENT_TAG + text


def resent_text(retval: Any) -> str | None:
    """What a re-send attempt said, from the text of its return value; None otherwise.

    `retval` is `saferepr(return value)`: a quoted string (either quote) when it was one."""
    if not isinstance(retval, str) or len(retval) < 2 or retval[0] not in "'\"":
        return None
    if not retval[1:].startswith(RESENT_TAG):
        return None
    try:
        text = ast.literal_eval(retval)
    except (ValueError, SyntaxError):  # cut short by saferepr's bound: show it as it is
        return retval[1 + len(RESENT_TAG) :]
    return str(text)[len(RESENT_TAG) :]


def _masked(value: Any) -> Any:
    return redact_tokens(value) if isinstance(value, str) else value


def stage_event(type_: str, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The event a stage attempt sends instead of (`type_`, `fields`): tokens masked, a
    re-send as `task-waiting`, an expected StageFailed without a traceback."""
    fields = {k: _masked(v) if k in ("result", "exception") else v for k, v in fields.items()}
    if type_ == "task-succeeded":
        text = resent_text(fields.get("result"))
        if text is not None:
            return WAITING_EVENT, {**fields, "result": text}
    elif type_ == "task-failed":
        # The result of the last re-send would otherwise stay beside the failure.
        fields.setdefault("result", None)
        if str(fields.get("exception") or "").startswith("StageFailed("):
            fields["traceback"] = None
    return type_, fields


#: The Request class the app's tasks use (a project-wide one, if any, is kept underneath).
_BaseRequest: Any = symbol_by_name(app.Task.Request)


class StageRequest(_BaseRequest):
    """The stage task's request. Celery's worker subclasses it per task
    (`celery.worker.request.create_request_cls`) and that subclass replaces `on_success`
    without calling ours, so the events are rewritten where every handler sends them."""

    def send_event(self, type: str, **fields: Any) -> None:  # noqa: A002 - Celery's name
        type_, shown = stage_event(type, fields)
        super().send_event(type_, **shown)
