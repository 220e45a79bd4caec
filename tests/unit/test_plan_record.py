"""PlanRecord owns the plan hash: typed, lenient reading, field names the Lua scripts use, and
no module outside deployer/state reading a plan-hash field by its string name."""

from __future__ import annotations

import ast
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.models import TaskStatus
from deployer.settings import get_settings
from deployer.state.plans import (
    PlanField,
    PlanRecord,
    WaveField,
    count_field,
    wave_count_field,
    wave_field,
)
from deployer.strategy import Strategy
from deployer.waves import wave_plan

ROOT = Path(__file__).resolve().parents[2]
FULL = {
    "planId": "p", "status": "RUNNING", "maxConcurrency": "5", "total": "10",
    "inflight": "2", "createdAt": "1764000000000", "updatedAt": "1764000000001",
    "digest": "d1", "control": "PAUSE", "controlBy": "ops", "controlReason": "why",
    "pendingRollback": "1", "job": "RETRY", "jobGen": "3", "archivedAt": "1764000000002",
    "archiving": "1", "keptCheckedAt": "1764000000003", "eventsMaxlen": "1000",
    "strategy": '{"waves":[1]}', "waves": "2", "wave": "1", "waveState": "BAKING",
    "bakeUntil": "1764000000004", "bakeMs": "60000", "approval": "each",
    "approvalWaivedBy": "ops", "gate": "slo", "promoteAll": "1", "stopReason": "budget",
    "windowOpensAt": "1764000000005", "budgetMax": "3", "budgetScope": "wave",
    "budgetOnExceed": "rollback", "budgetForgiven": "1", "budgetExceededWave": "1",
    "budgetExceededUsed": "4", "budgetExceededMax": "3", "budgetExceededAt": "1764000000006",
    "gateStatus": "503", "gateAnswer": "no", "gateCheckedAt": "1764000000007",
    "gateNextAt": "1764000000008", "gateRefusals": "2",
}  # fmt: skip


def test_every_field_is_in_the_full_example():
    assert set(FULL) == {f.value for f in PlanField}


def test_a_full_hash_is_typed():
    plan = PlanRecord.from_hash({**FULL, "c:RUNNING": "2", "c:PENDING": "8", "w:0:n": "1"})
    assert (plan.plan_id, plan.status, plan.total, plan.max_concurrency) == ("p", "RUNNING", 10, 5)
    assert plan.pending_rollback and plan.archiving and plan.promote_all and plan.has_strategy
    assert (plan.wave, plan.waves, plan.wave_state, plan.bake_ms) == (1, 2, "BAKING", 60000)
    assert plan.budget_exceeded_at == 1764000000006 and plan.gate_refusals == 2
    # counters in TaskStatus order, whatever order the hash had them in
    assert list(plan.counts.items()) == [(TaskStatus.PENDING, 8), (TaskStatus.RUNNING, 2)]
    assert plan.count(TaskStatus.FAILED) == 0
    assert plan.raw["w:0:n"] == "1"  # the per-wave fields, for deployer/waves.py


def test_missing_fields_read_as_absent():
    plan = PlanRecord.from_hash({"status": "COMPLETED", "digest": None})
    assert plan.digest == "" and plan.total is None and plan.created_at is None
    assert not plan.pending_rollback and not plan.has_strategy and plan.counts == {}
    assert "digest" not in plan.raw  # an HMGET's missing field is not in the hash


def test_unknown_fields_are_ignored():
    assert PlanRecord.from_hash({"m:leaseConflicts": "3", "x": "1"}) == PlanRecord()


@pytest.mark.parametrize(
    "field, text, attr",
    [
        ("total", "ten", "total"),
        ("maxConcurrency", "", "max_concurrency"),
        ("createdAt", "1.5e12", "created_at"),
        ("budgetMax", "5%", "budget_max"),
        ("wave", "x", "wave"),
    ],
)
def test_a_corrupt_value_reads_as_absent_never_raises(field, text, attr):
    assert getattr(PlanRecord.from_hash({field: text}), attr) is None


def test_a_flag_is_set_only_by_1():
    assert not PlanRecord.from_hash({"pendingRollback": "0", "promoteAll": "yes"}).pending_rollback
    assert not PlanRecord.from_hash({"promoteAll": "true"}).promote_all


def test_counters_keep_non_zero_readable_values_only():
    plan = PlanRecord.from_hash({"c:FAILED": "0", "c:RUNNING": "two", "c:PAUSED": "-1",
                                 "c:NOT_A_STATUS": "4", "c:COMPLETED": "3"})  # fmt: skip
    assert dict(plan.counts) == {TaskStatus.PAUSED: -1, TaskStatus.COMPLETED: 3}


@given(
    st.dictionaries(
        st.sampled_from([f.value for f in PlanField] + [count_field(s) for s in TaskStatus]),
        st.text(max_size=20),
    )
)
def test_any_hash_reads_without_raising(raw):
    PlanRecord.from_hash(raw)


def test_every_field_name_is_one_the_scripts_or_the_submit_write():
    lua = "".join(
        p.read_text() for p in resources.files("deployer.state").joinpath("lua").iterdir()
        if p.name.endswith(".lua")
    )  # fmt: skip
    # `strategy` is written at submit among the wave fields (deployer/waves.py `wave_plan`)
    # and read only by Python
    assert [f.value for f in PlanField if f"'{f.value}'" not in lua] == ["strategy"]


def test_every_wave_field_name_is_one_the_scripts_use():
    lua = "".join(
        p.read_text() for p in resources.files("deployer.state").joinpath("lua").iterdir()
        if p.name.endswith(".lua")
    )  # fmt: skip
    # wkey(w, 'approvedBy') in the scripts; the tenants' count also as 'w:0:n'
    missing = [f for f in WaveField if f"'{f.value}'" not in lua and f":{f.value}'" not in lua]
    assert missing == []


def test_each_wave_reads_back_its_fields_and_its_counters_in_the_hashs_order():
    plan = PlanRecord.from_hash({
        "strategy": "{}", "waves": "2",
        "w:1:c:FAILED": "1", "w:0:c:RUNNING": "2", "w:0:c:PENDING": "3", "w:0:c:FAILED": "0",
        "w:0:n": "5", "w:1:n": "x", "w:0:approvedBy": "", "w:0:approvedAt": "17",
        "w:1:promotedBy": "ops", "w:1:noBake": "1", "w:1:budget": "2", "w:1:forgiven": "1",
        "w:2:n": "9", "w:2:c:FAILED": "4",  # past `waves`: not a wave of the plan
    })  # fmt: skip
    first, second = plan.wave_records()
    assert (first.index, first.tenants, dict(first.counts)) == (0, 5, {"RUNNING": 2, "PENDING": 3})
    assert list(first.counts) == ["RUNNING", "PENDING"]  # as the hash lists them
    assert first.approved_by == "" and first.approved_at == 17  # approved, by nobody named
    assert first.promoted_by is None and not first.no_bake
    assert (second.tenants, dict(second.counts), second.budget, second.forgiven) == (
        0,
        {"FAILED": 1},
        2,
        1,
    )
    assert second.promoted_by == "ops" and second.no_bake


def test_what_a_strategy_stores_at_submit_reads_back_as_its_waves():
    strategy = Strategy.model_validate(
        {"waves": {"type": "linear", "size": 2}, "failureBudget": {"max": 1, "scope": "wave"}}
    )
    stored = wave_plan("p", ["a", "b", "c", "d", "e"], strategy, get_settings()).fields
    plan = PlanRecord.from_hash({k: str(v) for k, v in stored.items()})
    assert (plan.waves, plan.wave, plan.wave_state, plan.budget_scope) == (3, 0, "RUNNING", "wave")
    waves = plan.wave_records()
    assert [w.tenants for w in waves] == [2, 2, 1]
    assert [dict(w.counts) for w in waves] == [{"PENDING": 2}, {"PENDING": 2}, {"PENDING": 1}]
    assert [w.budget for w in waves] == [1, 1, 1] and waves[0].started_at is not None
    assert wave_field(0, WaveField.TENANTS) == "w:0:n"
    assert wave_count_field(2, TaskStatus.FAILED) == "w:2:c:FAILED"


# ---- nobody else reads the plan hash by name -------------------------------------------

#: Store's readers that hand out the plan hash as a dict (or one field of it by name).
RAW_READERS = {"get_plan", "get_plan_field"}
#: Names of the plan hash's counters and per-wave fields (`c:RUNNING`, `w:0:n`, `m:...`).
COUNTER_PREFIXES = ("c:", "w:", "m:")
PLAN_FIELDS = {f.value for f in PlanField}
#: Modules that still read the plan hash as a dict (issue 24: each leaves this list when it
#: reads a PlanRecord; the list only shrinks).
NOT_YET: set[str] = set()


def violations(source: str, module: str) -> list[str]:
    """Where `source` gets the plan hash as a dict or reads one of its fields by name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in RAW_READERS:
                found.append(f"{module}:{node.lineno}: {node.func.attr}")
            elif (
                node.func.attr == "get"
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "raw"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in PLAN_FIELDS
            ):
                found.append(f"{module}:{node.lineno}: .raw.get({node.args[0].value!r})")
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "raw"
            and isinstance(node.slice, ast.Constant)
            and node.slice.value in PLAN_FIELDS
        ):
            found.append(f"{module}:{node.lineno}: .raw[{node.slice.value!r}]")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith(COUNTER_PREFIXES)
        ):
            found.append(f"{module}:{node.lineno}: names the plan field {node.value!r}")
    return found


def _all() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in [p for d in ("deployer", "tasks", "stages") for p in (ROOT / d).rglob("*.py")]:
        module = path.relative_to(ROOT).as_posix()
        if module.startswith("deployer/state/"):
            continue
        found = violations(path.read_text(), module)
        if found:
            out[module] = found
    return out


def test_the_check_catches_each_kind_of_read():
    text = (
        "plan = store.get_plan(p)\n"
        "s.get_plan_field(p, 'archivedAt')\n"
        "n = plan.get(f'c:{s.value}')\n"
        "record.raw['status']\n"
        "record.raw.get('waveState')\n"
        "row.get('status'); t.raw.get('x')\n"
    )
    lines = sorted({int(v.split(":")[1]) for v in violations(text, "deployer/x.py")})
    assert lines == [1, 2, 3, 4, 5]


def test_no_module_outside_the_state_package_reads_a_plan_hash_field_by_name():
    """The plan hash's field names live in deployer/state/plans.py (and the Lua scripts):
    every other module reads a plan as a PlanRecord (deployer.state.plans.Plans)."""
    assert {m: v for m, v in _all().items() if m not in NOT_YET} == {}


def test_the_list_of_modules_still_reading_the_plan_hash_only_shrinks():
    assert sorted(NOT_YET - set(_all())) == []
