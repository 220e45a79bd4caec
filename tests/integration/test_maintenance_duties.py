"""A worker's maintenance duties follow its settings: the environment variables that set
periods or turn duties off keep doing so with one loop (tasks/worker.py)."""

from __future__ import annotations

import threading

import pytest

from deployer.maintenance import Duty
from deployer.settings import Settings
from tasks.worker import maintenance_duties


def _duties(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Duty]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    duties = maintenance_duties(Settings(), "w@h:1:x", threading.Event())
    for d in duties:
        if d.stop is not None:
            d.stop()  # a notifier's pools
    return {d.name: d for d in duties}


def test_every_duty_with_its_period_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    duties = _duties(
        monkeypatch,
        DEPLOYER_RECONCILE_INTERVAL_SECONDS="3",
        DEPLOYER_WORKER_HEARTBEAT_SECONDS="10",
        DEPLOYER_RETENTION_INTERVAL_SECONDS="120",
        DEPLOYER_NOTIFY='{"ops": {"url": "http://127.0.0.1:9/hook", "events": ["*"]}}',
        DEPLOYER_NOTIFY_INTERVAL_SECONDS="0.5",
    )
    assert sorted(duties) == ["liveness", "notify", "plan-timers", "reconciler", "retention"]
    periods = {name: (d.every, d.runs_long) for name, d in duties.items()}
    assert periods == {
        "reconciler": (3.0, True),
        "liveness": (2.0, True),  # five beats per heartbeat TTL
        "retention": (120.0, True),
        "notify": (0.5, False),
        "plan-timers": (0.5, True),
    }


def test_a_zero_turns_the_heartbeat_and_the_retention_pass_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    duties = _duties(
        monkeypatch,
        DEPLOYER_WORKER_HEARTBEAT_SECONDS="0",
        DEPLOYER_RETENTION_INTERVAL_SECONDS="0",
        DEPLOYER_NOTIFY="{}",
    )
    assert sorted(duties) == ["plan-timers", "reconciler"]
