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


#: (tasks by status, plan hash fields, plan status): the holds after the table. A plan is not
#: over while its waves are not (the last bake), or while a command still works through its
#: tasks (`job`); a decided budget rollback reads RUNNING, not PAUSED.
HOLDS: list[tuple[dict[str, int], dict[str, str], str]] = [
    ({"COMPLETED": 3}, {"waveState": "BAKING"}, "RUNNING"),  # the final bake still runs
    ({"COMPLETED": 3}, {"waveState": "DONE"}, "COMPLETED"),
    ({"COMPLETED": 2, "FAILED": 1}, {"waveState": "BAKING"}, "RUNNING"),
    ({"COMPLETED": 3}, {"waveState": "BAKING", "control": "PAUSE"}, "PAUSED"),
    ({"CANCELLED": 3}, {"waveState": "RUNNING", "control": "CANCEL"}, "CANCELLED"),
    ({"ROLLED_BACK": 3}, {"waveState": "HALTED"}, "ROLLED_BACK"),
    (
        {"COMPLETED": 3, "PENDING": 2},
        {"control": "PAUSE", "pendingRollback": "1", "waveState": "HALTED"},
        "RUNNING",
    ),  # fmt: skip
    (
        {"FAILED": 1, "COMPLETED": 2},
        {"control": "PAUSE", "pendingRollback": "1", "waveState": "HALTED"},
        "RUNNING",
    ),  # fmt: skip
    ({"ROLLED_BACK": 1, "COMPLETED": 4}, {"job": "rollback"}, "RUNNING"),  # slices to go
    ({"ROLLED_BACK": 5}, {}, "ROLLED_BACK"),
    ({"PENDING": 4}, {"control": "PAUSE", "job": "pause"}, "PAUSED"),
]


def hold_id(row: tuple[dict[str, int], dict[str, str], str]) -> str:
    counts, fields, expected = row
    spec = "+".join(f"{n}{s}" for s, n in counts.items())
    return f"{spec}/{','.join(f'{k}={v}' for k, v in fields.items())}->{expected}"


@pytest.mark.parametrize(("counts", "fields", "expected"), HOLDS, ids=map(hold_id, HOLDS))
def test_a_plan_is_not_over_before_its_waves_and_commands_are(counts, fields, expected):
    status = derive_plan_status(
        counts,
        fields.get("control"),
        fields.get("waveState"),
        rolling=fields.get("pendingRollback") == "1",
        job=bool(fields.get("job")),
    )
    assert status == expected
