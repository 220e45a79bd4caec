"""Control tasks callable by name from any client (queue deployer.control, JSON only).

Each returns the public result shape `{"ok", "code", "message", ...}` and never raises:
a refused command is an answer, not a worker crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task

from celeryconfig import CONTROL_QUEUE
from deployer.errors import DeployerError
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
        return {"ok": False, "code": "INTERNAL_ERROR", "message": "internal error; see worker log"}


@app.task(name="deployer.submit_plan", bind=True, ignore_result=False, queue=CONTROL_QUEUE)
def submit_plan(self: Task, plan: Any) -> dict[str, Any]:
    return answer(lambda: runtime.planner().submit(plan))
