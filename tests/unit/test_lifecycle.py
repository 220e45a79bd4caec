"""The command table: every state answers every command, illegal ones with a stable code."""

from __future__ import annotations

import pytest

from deployer.lifecycle import COMMAND_TRANSITIONS, Command, Effect, decide
from deployer.models import TaskStatus as S

REFUSALS = [
    (Command.PAUSE, S.COMPLETED, "TASK_NOT_RUNNING"),
    (Command.PAUSE, S.FAILED, "TASK_NOT_RUNNING"),
    (Command.PAUSE, S.CANCELLED, "TASK_NOT_RUNNING"),
    (Command.RESUME, S.COMPLETED, "TASK_NOT_PAUSED"),
    (Command.RESUME, S.FAILED, "TASK_NOT_PAUSED"),
    (Command.CANCEL, S.COMPLETED, "TASK_ALREADY_FINISHED"),
    (Command.CANCEL, S.ROLLED_BACK, "TASK_ALREADY_FINISHED"),
    (Command.RETRY, S.COMPLETED, "TASK_NOT_FAILED"),
    (Command.RETRY, S.RUNNING, "TASK_NOT_FAILED"),
    (Command.RETRY, S.PAUSED, "TASK_NOT_FAILED"),
    (Command.ROLLBACK, S.RUNNING, "TASK_NOT_ROLLBACKABLE"),
    (Command.ROLLBACK, S.PENDING, "TASK_NOT_ROLLBACKABLE"),
    (Command.ROLLBACK, S.ROLLED_BACK, "TASK_ALREADY_ROLLED_BACK"),
]


@pytest.mark.parametrize(("command", "status", "code"), REFUSALS)
def test_illegal_commands_are_refused_with_their_code(command, status, code):
    decision = decide(command, status)
    assert decision.effect is Effect.REFUSE
    assert decision.code == code


@pytest.mark.parametrize("command", list(Command))
@pytest.mark.parametrize("status", list(S))
def test_every_immediate_change_is_a_listed_transition(command, status):
    decision = decide(command, status)
    if decision.effect is Effect.NOW:
        assert (status, decision.to) in COMMAND_TRANSITIONS


def test_running_tasks_pause_and_cancel_cooperatively():
    assert decide(Command.PAUSE, S.RUNNING).effect is Effect.REQUEST
    assert decide(Command.CANCEL, S.ROLLING_BACK).effect is Effect.REQUEST
    assert decide(Command.RESUME, S.RUNNING, control="PAUSE").effect is Effect.WITHDRAW


def test_repeating_a_command_in_effect_is_harmless():
    assert decide(Command.PAUSE, S.PAUSED).effect is Effect.ALREADY
    assert decide(Command.PAUSE, S.RUNNING, control="PAUSE").effect is Effect.ALREADY
    assert decide(Command.CANCEL, S.CANCELLED).effect is Effect.ALREADY
    assert decide(Command.RESUME, S.RUNNING).effect is Effect.ALREADY


def test_rollback_allowed_from_failed_paused_cancelled_completed():
    for status in (S.FAILED, S.PAUSED, S.CANCELLED, S.COMPLETED):
        assert decide(Command.ROLLBACK, status).to is S.PENDING
