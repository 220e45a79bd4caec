"""What a receiver gets, and which receivers the settings accept."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deployer.notify.events import ALL, NotifyEvent
from deployer.notify.message import body, slack
from deployer.settings import NotifyReceiver, Settings

FIELDS = {
    "id": "1764000000000-0", "type": "PLAN_AUTO_PAUSED", "planId": "plan 42", "wave": "2",
    "by": "failure-budget", "reason": "failure budget exceeded: 3 failed", "ts": "1764000000000",
    "plan.status": "PAUSED", "plan.total": "10", "plan.c:COMPLETED": "5", "plan.c:FAILED": "3",
    "plan.c:PENDING": "2", "plan.stopReason": "failure budget exceeded: 3 failed",
    "plan.waves": "4", "a:ops": "1", "password": "hunter2",
}  # fmt: skip


def test_the_json_body_names_plan_wave_counts_stop_reason_and_link() -> None:
    b = body(FIELDS, "https://deployer.example/")
    assert b["event"] == "PLAN_AUTO_PAUSED" and b["planId"] == "plan 42"
    assert b["wave"] == 2 and b["waves"] == 4 and b["total"] == 10 and b["status"] == "PAUSED"
    assert b["counts"] == {"COMPLETED": 5, "FAILED": 3, "PENDING": 2}
    assert b["stopReason"] == "failure budget exceeded: 3 failed" and b["by"] == "failure-budget"
    assert b["link"] == "https://deployer.example/plans/plan%2042"
    assert b["at"] == "2025-11-24T16:00:00.000Z" and b["id"] == "1764000000000-0"
    assert "a:ops" not in b["details"] and b["details"]["password"] == "***"


def test_slack_gets_one_text_with_what_happened_and_the_link() -> None:
    text = slack(body(FIELDS, "https://d.example"))["text"]
    assert "plan `plan 42`: paused by its failure budget" in text
    assert "2 pending, 5 completed, 3 failed of 10" in text  # COUNTED order
    assert "<https://d.example/plans/plan%2042|open the plan>" in text


def test_receivers_name_known_events_and_urls_from_settings_only() -> None:
    assert NotifyReceiver(url="https://h/x", events=("*",)).events == ALL
    assert NotifyEvent.GATE_REFUSED in ALL and NotifyEvent.WAVE_AWAITING_APPROVAL in ALL
    with pytest.raises(ValidationError, match="unknown events"):
        NotifyReceiver(url="https://h/x", events=("PLAN_DONE",))
    with pytest.raises(ValidationError):
        NotifyReceiver(url="file:///etc/passwd", events=("*",))
    with pytest.raises(ValidationError, match="receiver names"):
        Settings(notify={"a b": {"url": "https://h/x", "events": ["*"]}})
    s = Settings(notify={"ops": {"url": "https://h/x", "events": ["PLAN_FAILED"],
                                 "headers": {"Authorization": "Bearer t"}}})  # fmt: skip
    assert "Bearer t" not in repr(s)  # headers are secrets
