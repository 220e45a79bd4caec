"""The replies of the command scripts (deployer/state/commands.py) and of the target's fenced
write (deployer/state/targets.py) decode into named values, or fail loudly."""

from __future__ import annotations

import pytest

from deployer.errors import ScriptReplyError
from deployer.lifecycle import Effect
from deployer.models import PlanStatus
from deployer.state import commands, scripts
from deployer.state.commands import Refusal, TaskVerdict, TaskWritten
from deployer.state.targets import WriteVerdict


@pytest.mark.parametrize(
    ("raw", "applied"),
    [(["OK", "PAUSED"], True), (["SUPERSEDED", "task-9"], True), (["REFUSED", "RUNNING"], False),
     (["ARCHIVING", "PAUSED"], False)],
)  # fmt: skip
def test_a_task_command_reply_says_whether_it_was_applied(raw, applied) -> None:
    written = TaskWritten.from_reply(raw)
    assert (written.verdict, written.detail, written.applied) == (
        TaskVerdict(raw[0]), raw[1], applied,
    )  # fmt: skip


@pytest.mark.parametrize("raw", [["MAYBE", "x"], ["OK"], []])
def test_an_unknown_task_command_reply_is_an_error(raw) -> None:
    with pytest.raises(ScriptReplyError):
        TaskWritten.from_reply(raw)


def test_slice_replies_decode_counts_refusals_and_the_plan_status() -> None:
    pause = commands._decided(
        ["1", "2", "0", "3", "1", "t1", "TASK_NOT_RUNNING", "FAILED"],
        commands._PAUSE_COUNTS, "plan_pause_slice", None,
    )  # fmt: skip
    assert pause.counts == {Effect.NOW: 1, Effect.REQUEST: 2, Effect.WITHDRAW: 0,
                            Effect.ALREADY: 3, Effect.REFUSE: 1}  # fmt: skip
    assert pause.refused == [Refusal("t1", "TASK_NOT_RUNNING", "FAILED")]
    with pytest.raises(ScriptReplyError):  # a refusal cut short
        commands._decided(["0", "0", "0", "0", "1", "t1"], commands._PAUSE_COUNTS, "x", None)
    with pytest.raises(ScriptReplyError):  # counts that are not numbers
        commands._decided(["RUNNING", "0"], commands._CANCEL_COUNTS, "x", None)
    assert scripts.verdict(PlanStatus, "CANCELLED", "x") is PlanStatus.CANCELLED


def test_the_fenced_write_answers_ok_or_stale_and_nothing_else() -> None:
    assert scripts.verdict(WriteVerdict, "STALE", "kv_write") is WriteVerdict.STALE
    with pytest.raises(ScriptReplyError):
        scripts.verdict(WriteVerdict, "NOPE", "kv_write")
