"""The replies of the parking, notification and retention scripts decode into named values
(deployer/state/parked.py, outbox.py, retained.py) or fail loudly: a reply no caller knows
is never read as the nearest known answer."""

from __future__ import annotations

import pytest

from deployer.errors import Code, ScriptReplyError
from deployer.state import scripts
from deployer.state.outbox import Delivery, deliveries
from deployer.state.parked import ParkVerdict, Tick
from deployer.state.retained import DropSlice, DropVerdict, MarkVerdict


@pytest.mark.parametrize(
    ("kind", "script", "known"),
    [(ParkVerdict, "park", "NOW"), (MarkVerdict, "archive_mark", "CHANGED"),
     (DropVerdict, "archive_drop", "NOT_MARKED")],
)  # fmt: skip
def test_each_verdict_decodes_to_its_member_and_an_unknown_one_is_an_error(
    kind, script, known
) -> None:
    assert scripts.verdict(kind, known, script) is kind(known)
    with pytest.raises(ScriptReplyError) as refused:
        scripts.verdict(kind, "MAYBE", script)
    assert refused.value.code == Code.SCRIPT_REPLY_INVALID


def test_a_tick_reply_is_woken_next_due_and_the_resends_in_order() -> None:
    tick = Tick.from_reply([2, "1765000000123", "t1", '{"a": 1}', "t2", "{}"])
    assert tick == Tick([("t1", '{"a": 1}'), ("t2", "{}")], 2, 1765000000123)
    assert Tick.from_reply([0, ""]) == Tick([], 0, None)  # nothing parked
    with pytest.raises(ScriptReplyError):
        Tick.from_reply([0, "", "t1"])  # a task id without its signature


def test_a_drop_reply_is_a_slice_and_an_unknown_verdict_is_an_error() -> None:
    assert DropSlice.from_reply(["KEPT", 3, 2]) == DropSlice(DropVerdict.KEPT, 3, 2)
    with pytest.raises(ScriptReplyError):
        DropSlice.from_reply(["GONE", 0, 0])
    with pytest.raises(ScriptReplyError):
        DropSlice.from_reply(["MORE", 0])


def test_a_claim_reply_is_deliveries_with_their_fields_parsed() -> None:
    raw = ["ops", "1-0", "2", '{"type": "PLAN_COMPLETED"}', "pager", "1-1", 1, "{}"]
    assert deliveries(raw) == [
        Delivery("ops", "1-0", 2, {"type": "PLAN_COMPLETED"}),
        Delivery("pager", "1-1", 1, {}),
    ]
    with pytest.raises(ScriptReplyError):
        deliveries(raw[:3])
