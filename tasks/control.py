"""Control tasks callable by name from any client (queue deployer.control, JSON only).

Each returns the public result shape `{"ok", "code", "message", ...}` and never raises:
a refused command is an answer, not a worker crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task

from deployer.errors import Code, DeployerError
from deployer.lifecycle import Command
from tasks import runtime
from tasks.app import app

log = logging.getLogger("deployer.tasks")


def answer(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except DeployerError as exc:
        return exc.as_result()
    except Exception:
        log.exception("control task failed")
        return {
            "ok": False,
            "code": Code.INTERNAL_ERROR,
            "message": "internal error; see worker log",
        }


@app.task(name="deployer.submit_plan", bind=True, ignore_result=False)
def submit_plan(self: Task, plan: Any) -> dict[str, Any]:
    return answer(lambda: runtime.planner().submit(plan))


def run_command(
    command: Command,
    target: Any,
    *,
    by: str | None = None,
    reason: str | None = None,
    from_checkpoint: bool = False,
    force: bool = False,
    strict: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Run `command` on `target` in this process and answer `{"ok", "code", "message", ...}`.

    The one command path: the control tasks below run it for a message from the broker,
    `DeployerClient.execute` for the CLI and the HTTP API, which answer at once. A refusal
    (a DeployerError, an invalid target too) is an answer, never an exception. `options`:
    `all_waves`, `approve` (promote), `budget`, `reset` (budget, resume).
    """
    try:
        return runtime.controller().execute(
            command,
            target,
            by=by,
            reason=reason,
            from_checkpoint=from_checkpoint,
            force=force,
            strict=strict,
            **options,
        )
    except DeployerError as exc:
        return exc.as_result()


def _command(command: Command, target: Any, by: Any, reason: Any, **kw: Any) -> dict[str, Any]:
    return answer(lambda: run_command(command, target, by=_text(by), reason=_text(reason), **kw))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@app.task(name="deployer.pause", bind=True, ignore_result=False)
def pause(self: Task, target: Any, by: Any = None, reason: Any = None) -> dict[str, Any]:
    return _command(Command.PAUSE, target, by, reason)


@app.task(name="deployer.resume", bind=True, ignore_result=False)
def resume(
    self: Task,
    target: Any,
    by: Any = None,
    reason: Any = None,
    force: Any = False,
    budget: Any = None,
    reset: Any = False,
) -> dict[str, Any]:
    """`budget` (a count or "5%") / `reset` (bool): change the plan's failure budget first
    (as `deployer.budget` does), then resume: an auto-paused plan goes on on purpose."""
    return _command(Command.RESUME, target, by, reason, force=force is True, budget=budget,
                    reset=reset is True)  # fmt: skip


@app.task(name="deployer.cancel", bind=True, ignore_result=False)
def cancel(self: Task, target: Any, by: Any = None, reason: Any = None) -> dict[str, Any]:
    return _command(Command.CANCEL, target, by, reason)


@app.task(name="deployer.retry", bind=True, ignore_result=False)
def retry(
    self: Task, target: Any, from_checkpoint: Any = False, by: Any = None, force: Any = False
) -> dict[str, Any]:
    return _command(
        Command.RETRY,
        target,
        by,
        None,
        from_checkpoint=from_checkpoint is True,
        force=force is True,
    )


@app.task(name="deployer.rollback", bind=True, ignore_result=False)
def rollback(
    self: Task,
    target: Any,
    by: Any = None,
    reason: Any = None,
    force: Any = False,
    strict: Any = False,
) -> dict[str, Any]:
    """`force`: roll back even a tenant that a newer task deployed since (else that task
    ends SUPERSEDED and the newer config stays); recorded in the events. `strict`: refuse
    (ROLLBACK_INCOMPLETE) a task's rollback that cannot restore every service its forward
    run changed, instead of naming them in the answer."""
    return _command(Command.ROLLBACK, target, by, reason, force=force is True,
                    strict=strict is True)  # fmt: skip


@app.task(name="deployer.approve", bind=True, ignore_result=False)
def approve(self: Task, target: Any, by: Any = None, reason: Any = None) -> dict[str, Any]:
    """Start wave N of plan P (target `{"planId": P, "wave": N}`) if it is the wave waiting
    for approval; any other wave is refused WAVE_NOT_AWAITING_APPROVAL, no wave WAVE_REQUIRED."""
    return _command(Command.APPROVE, target, by, reason)


@app.task(name="deployer.promote", bind=True, ignore_result=False)
def promote(
    self: Task,
    target: Any,
    by: Any = None,
    reason: Any = None,
    all: Any = False,  # noqa: A002 - the public kwarg's name
    approve: Any = False,
) -> dict[str, Any]:
    """End the current wave's bake now (target `{"planId": P}` or with `"wave": N`, which
    must be the current one); `all`: every remaining wave's bake too; `approve`: also
    approve a wave that waits for approval (else refused APPROVAL_REQUIRED)."""
    return _command(Command.PROMOTE, target, by, reason, all_waves=all is True,
                    approve=approve is True)  # fmt: skip


@app.task(name="deployer.budget", bind=True, ignore_result=False)
def budget(
    self: Task,
    target: Any,
    max: Any = None,  # noqa: A002 - the public kwarg's name
    reset: Any = False,
    by: Any = None,
    reason: Any = None,
) -> dict[str, Any]:
    """Raise, lower (`max`: a count or "5%") or reset (`reset`: the failures so far no
    longer count) a plan's failure budget; the plan is not resumed (`deployer.resume` with
    `budget` does both)."""
    return _command(Command.BUDGET, target, by, reason, budget=max, reset=reset is True)
