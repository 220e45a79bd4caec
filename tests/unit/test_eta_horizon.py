"""The ETA horizon (tasks/guard.py `check_times`, Settings.eta_horizon_seconds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from deployer.settings import Settings
from tasks.guard import check_times


def iso(seconds: float, aware: bool = True) -> str:
    when = datetime.now(UTC) + timedelta(seconds=seconds)
    return (when if aware else when.replace(tzinfo=None)).isoformat()


@pytest.mark.parametrize("aware", [True, False])  # a naive ETA is UTC, as Celery reads it
def test_an_eta_within_the_horizon_passes_and_one_beyond_is_refused(aware):
    assert check_times({"eta": iso(30, aware)}, 60) is None
    assert check_times({"eta": iso(-3600, aware)}, 60) is None  # past: due now
    problem = check_times({"eta": iso(10 * 365 * 86400, aware)}, 60)
    assert problem is not None and "beyond the 60s horizon" in problem


@pytest.mark.parametrize("value", ["tomorrow", "", "9999-99-99T00:00:00", "2030-01-01T25:00"])
def test_times_celery_cannot_parse_are_refused(value):
    assert check_times({"eta": value}, 60) == "header eta is not an ISO 8601 time"
    assert check_times({"expires": value}, 60) == "header expires is not an ISO 8601 time"


def test_a_far_expiry_is_fine():
    assert check_times({"expires": iso(10 * 365 * 86400)}, 60) is None
    assert check_times({"eta": None, "expires": None}, 60) is None


def test_the_horizon_never_refuses_deployers_own_countdowns():
    assert Settings().eta_horizon_seconds == 60
    slow = Settings(max_eta_seconds=5, verify_interval_seconds=30, lease_ttl_seconds=100)
    assert slow.eta_horizon_seconds == 50  # a parked re-poll may wait half the lease
    quick = Settings(max_eta_seconds=0.5, verify_interval_seconds=3, lease_ttl_seconds=4)
    assert quick.eta_horizon_seconds == 3.0  # the verify interval
