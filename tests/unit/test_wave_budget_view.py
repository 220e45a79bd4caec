"""The budget a plan view shows for scope wave, against the record the wave step keeps.

The wave step (`_prelude.lua`) judges a failed task's own wave and records where the budget
was exceeded (`budgetExceededWave`, ...). When that is an earlier wave than the current one
(a wave-0 task retried while wave 1 runs), the view must not read "not exceeded" beside a
plan the budget stopped: it names that wave and its figures.
"""

from __future__ import annotations

from typing import Any

from deployer.public import Budget
from deployer.waves import Rollout

EXCEEDED_AT = 1764000000000


def plan_hash(**fields: str) -> dict[str, str]:
    """Two waves of 10 tenants, scope wave, max 1 per wave, now in wave 1 (2 failed of it)."""
    return {
        "planId": "p", "status": "RUNNING", "total": "20", "strategy": '{"waves":[10,10]}',
        "waves": "2", "wave": "1", "waveState": "RUNNING", "budgetMax": "1",
        "budgetScope": "wave", "budgetOnExceed": "pause", "w:0:n": "10", "w:0:budget": "1",
        "w:1:n": "10", "w:1:budget": "1", "w:0:c:COMPLETED": "8", "w:0:c:FAILED": "2",
        "w:1:c:RUNNING": "9", "w:1:c:FAILED": "1", "c:COMPLETED": "8", "c:FAILED": "3",
        "c:RUNNING": "9", **fields,
    }  # fmt: skip


def budget_of(raw: dict[str, str]) -> dict[str, Any]:
    rollout = Rollout.from_hash(raw)
    assert rollout is not None
    budget = rollout.budget()
    assert budget is not None
    Budget.model_validate(budget)  # what the API declares it returns
    return budget


def test_the_current_wave_is_judged_and_named() -> None:
    assert budget_of(plan_hash()) == {
        "max": 1, "used": 1, "scope": "wave", "onExceed": "pause", "exceeded": False, "wave": 1,
    }  # fmt: skip


def test_an_earlier_waves_exceeded_budget_is_shown_with_its_wave() -> None:
    raw = plan_hash(
        budgetExceededWave="0", budgetExceededUsed="2", budgetExceededMax="1",
        budgetExceededAt=str(EXCEEDED_AT), control="PAUSE", stopReason="failure budget exceeded",
    )  # fmt: skip
    budget = budget_of(raw)
    # the current wave's own figures stay (1 of 1), the plan reads exceeded, and where
    assert (budget["wave"], budget["used"], budget["max"]) == (1, 1, 1)
    assert budget["exceeded"] is True
    assert (budget["exceededWave"], budget["exceededUsed"], budget["exceededMax"]) == (0, 2, 1)
    assert budget["exceededAt"].startswith("2025-11-24T")


def test_the_current_waves_record_keeps_its_count_after_a_rollback() -> None:
    """As before: exceeded in the current wave, its count is kept (no `exceededWave`)."""
    raw = plan_hash(
        budgetExceededWave="1", budgetExceededUsed="3", budgetExceededMax="1",
        budgetExceededAt=str(EXCEEDED_AT),
    )  # fmt: skip
    budget = budget_of(raw)
    assert (budget["used"], budget["exceeded"], budget["wave"]) == (3, True, 1)
    assert "exceededWave" not in budget


def test_scope_plan_has_no_wave() -> None:
    raw = plan_hash(budgetScope="plan", budgetExceededWave="0", budgetExceededUsed="2",
                    budgetExceededMax="1", budgetExceededAt=str(EXCEEDED_AT))  # fmt: skip
    budget = budget_of(raw)
    assert (budget["used"], budget["max"], budget["exceeded"]) == (3, 1, True)
    assert "wave" not in budget and "exceededWave" not in budget
