"""DeployerClient: enqueue plans and commands by task *name*, read state from Redis.

It imports nothing from `tasks/`: any service with this package (or any Celery client in
another language, sending the same JSON) can drive deployer through the broker.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery

from deployer import keys
from deployer.redis_client import client_for
from deployer.settings import Settings, get_settings

CONTROL_QUEUE = "deployer.control"
TERMINAL_PLAN = {"COMPLETED", "FAILED", "CANCELLED", "ROLLED_BACK"}


class DeployerClient:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.app = Celery("deployer-client", broker=self.settings.broker_url, set_as_current=False)
        self.app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            task_ignore_result=True,
            broker_connection_retry_on_startup=True,
            broker_transport_options={
                "visibility_timeout": self.settings.visibility_timeout_seconds
            },
        )
        self.redis = client_for(self.settings.state_url)

    def send(self, name: str, *args: Any, **kwargs: Any) -> str:
        """Send a control task by name; returns the Celery task id."""
        result = self.app.send_task(
            name, args=list(args), kwargs=kwargs, queue=CONTROL_QUEUE, ignore_result=True
        )
        return str(result.id)

    def submit(self, plan: dict[str, Any]) -> str:
        self.send("deployer.submit_plan", plan)
        return str(plan.get("planId"))

    def command(self, verb: str, target: dict[str, str], **kwargs: Any) -> str:
        return self.send(f"deployer.{verb}", target, **kwargs)

    def plan_status(self, plan_id: str) -> str | None:
        value = self.redis.hget(keys.plan(plan_id), "status")
        return str(value) if value is not None else None

    def rejection(self, plan_id: str, since: str = "0-0") -> dict[str, str] | None:
        """The newest record of `plan_id` in the public rejections stream, if any."""
        entries: list[tuple[str, dict[str, str]]] = self.redis.xrange(  # type: ignore[assignment]
            keys.REJECTIONS, min=since, max="+"
        )
        for _id, fields in reversed(entries):
            if fields.get("planId") == plan_id:
                return dict(fields)
        return None

    def wait(self, plan_id: str, timeout: float = 600.0, poll: float = 0.2) -> str | None:
        """Poll the plan's status until it is terminal (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        status = self.plan_status(plan_id)
        while status not in TERMINAL_PLAN and time.monotonic() < deadline:
            time.sleep(poll)
            status = self.plan_status(plan_id)
        return status
