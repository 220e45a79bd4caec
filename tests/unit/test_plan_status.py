"""How a plan's status is read from its tasks' counters: the table of deployer/lifecycle.py.

The same TABLE drives tests/integration/test_plan_status.py through the real Lua
(derive_plan), so the pure mirror and the script cannot drift apart.
"""

from __future__ import annotations

import pytest

from deployer.lifecycle import derive_plan_status

#: (tasks by status, plan control flag, plan status an operator expects)
TABLE: list[tuple[dict[str, int], str | None, str]] = [
    ({"COMPLETED": 5, "CANCELLED": 1}, None, "COMPLETED"),  # 0.1 answered CANCELLED
    ({"CANCELLED": 6}, None, "CANCELLED"),
    ({"COMPLETED": 5, "CANCELLED": 1}, "CANCEL", "CANCELLED"),  # the plan itself cancelled
    ({"COMPLETED": 3, "FAILED": 1, "CANCELLED": 2}, None, "FAILED"),
    ({"ROLLBACK_FAILED": 1, "ROLLED_BACK": 3}, None, "FAILED"),
    ({"RUNNING": 1, "COMPLETED": 5}, None, "RUNNING"),
    ({"ROLLING_BACK": 1, "FAILED": 1}, None, "RUNNING"),
    ({"RUNNING": 1, "PENDING": 3}, "PAUSE", "RUNNING"),  # still running until it pauses
    ({"PENDING": 2}, None, "RUNNING"),
    ({"PENDING": 2, "PAUSED": 1}, "PAUSE", "PAUSED"),
    ({"PAUSED": 2, "COMPLETED": 3}, None, "PAUSED"),
    ({"PAUSED": 1, "FAILED": 1}, None, "PAUSED"),  # something can still be resumed
    ({"ROLLED_BACK": 4, "CANCELLED": 1}, None, "ROLLED_BACK"),
    ({"ROLLED_BACK": 3, "SUPERSEDED": 1}, None, "ROLLED_BACK"),
    ({"ROLLED_BACK": 4, "COMPLETED": 1}, None, "COMPLETED"),  # one tenant still forward
    ({"COMPLETED": 4, "SUPERSEDED": 2}, None, "COMPLETED"),  # superseded is not a failure
    ({"SUPERSEDED": 3}, None, "COMPLETED"),
    ({"CANCELLED": 2, "SUPERSEDED": 1}, None, "COMPLETED"),  # not every task was cancelled
    ({"COMPLETED": 6}, None, "COMPLETED"),
]


def row_id(row: tuple[dict[str, int], str | None, str]) -> str:
    counts, control, expected = row
    spec = "+".join(f"{n}{s}" for s, n in counts.items())
    return f"{spec}{'/' + control if control else ''}->{expected}"


@pytest.mark.parametrize(("counts", "control", "expected"), TABLE, ids=map(row_id, TABLE))
def test_plan_status_is_read_the_way_an_operator_reads_it(counts, control, expected):
    assert derive_plan_status(counts, control) == expected


def test_zero_counters_and_unknown_statuses_are_ignored():
    assert derive_plan_status({"COMPLETED": 2, "RUNNING": 0, "FAILED": 0}) == "COMPLETED"
