"""The Lua boundary (deployer/state/scripts.py): every script has one loader, and replies decode
into named values or fail loudly."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import get_args

import pytest

from deployer.errors import Code, ScriptReplyError
from deployer.state import scripts
from deployer.state.replies import EndVerdict, FailVerdict, Gate
from deployer.state.workers import Claimed


def test_the_loader_knows_every_script_in_deployer_lua() -> None:
    shipped = {
        p.name.removesuffix(".lua")
        for p in resources.files("deployer.state").joinpath("lua").iterdir()
        if p.name.endswith(".lua") and not p.name.startswith("_")
    }
    assert shipped == set(get_args(scripts.ScriptName))


def test_scripts_carry_the_prelude_except_the_one_run_on_the_target() -> None:
    assert "local function fail_task(" in scripts.source("task_fail")
    assert "local function" not in scripts.source("kv_write")


@pytest.mark.parametrize(
    ("kind", "known"),
    [(Gate, "SUPERSEDED"), (EndVerdict, "DONE"), (FailVerdict, "ROLLBACK_FAILED")],
)
def test_a_verdict_decodes_to_its_member_and_an_unknown_one_is_an_error(kind, known) -> None:
    assert scripts.verdict(kind, known, "x") == kind(known)
    with pytest.raises(ScriptReplyError) as refused:
        scripts.verdict(kind, "MAYBE", "x")
    assert refused.value.code == Code.SCRIPT_REPLY_INVALID


@dataclass(frozen=True)
class Pair:
    group: str
    name: str
    value: str


def test_records_bind_by_field_name_with_fixed_fields_given() -> None:
    got = list(scripts.records(Pair, ["a", "1", "b", "2"], "x", group="g"))
    assert got == [Pair("g", "a", "1"), Pair("g", "b", "2")]
    with pytest.raises(ScriptReplyError):
        list(scripts.records(Pair, ["a", "1", "b"], "x", group="g"))


def test_a_claim_reply_decodes_redriven_and_failed_tasks_and_refuses_other_kinds() -> None:
    reply = ["R", "t1", "p", "tok.2", "r1", "{}", "{}", "", "F", "t2", "p", "", "", "", "", ""]
    result = Claimed.from_reply(reply)
    assert [(s.task_id, s.token) for s in result.redriven] == [("t1", "tok.2")]
    assert result.failed == [("t2", "p")]
    with pytest.raises(ScriptReplyError):
        Claimed.from_reply(["X", "t1", "p", "", "", "", "", ""])
    with pytest.raises(ScriptReplyError):
        Claimed.from_reply(["R", "t1", "p", "tok.2"])  # a record cut short
