"""Pure rules behind integrity: unambiguous task ids, what a SUPERSEDED task allows, and
token redaction in Celery's texts."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.lifecycle import COMMAND_TRANSITIONS, TERMINAL, Command, Effect, decide
from deployer.models import ID_PATTERN, TaskStatus, task_id_for, tenant_of_task
from tasks.tokens import redact_tokens

S = TaskStatus
ids = st.from_regex(re.compile(ID_PATTERN.replace("$", r"\Z")), fullmatch=True)


@given(ids, ids, ids, ids)
def test_two_different_plan_tenant_pairs_never_share_a_task_id(p1, t1, p2, t2):
    if (p1, t1) != (p2, t2):
        assert task_id_for(p1, t1) != task_id_for(p2, t2)
    assert tenant_of_task(task_id_for(p1, t1)) == t1


def test_the_pairs_that_collided_before_are_two_tasks():
    assert task_id_for("a", "b_c") != task_id_for("a_b", "c")
    assert task_id_for("a", "b_c") == "task-a:b_c"


SUPERSEDED_TABLE = [
    # command, force, effect, code
    (Command.RETRY, False, Effect.REFUSE, "TASK_SUPERSEDED"),
    (Command.RETRY, True, Effect.NOW, ""),
    (Command.ROLLBACK, False, Effect.REFUSE, "TASK_SUPERSEDED"),
    # a tenant a newer task deployed since is rolled back only by the operator's decision
    # (a task superseded before it ever started is refused by the controller: it has none)
    (Command.ROLLBACK, True, Effect.NOW, ""),
    (Command.PAUSE, False, Effect.REFUSE, "TASK_NOT_RUNNING"),
    (Command.RESUME, False, Effect.REFUSE, "TASK_NOT_PAUSED"),
    (Command.CANCEL, False, Effect.REFUSE, "TASK_ALREADY_FINISHED"),
]


@pytest.mark.parametrize(("command", "force", "effect", "code"), SUPERSEDED_TABLE)
def test_what_a_superseded_task_allows(command, force, effect, code):
    decision = decide(command, S.SUPERSEDED, force=force)
    assert (decision.effect, decision.code) == (effect, code)
    if effect is Effect.NOW:
        assert (S.SUPERSEDED, decision.to) in COMMAND_TRANSITIONS


def test_superseded_is_terminal_and_force_changes_nothing_else():
    assert S.SUPERSEDED in TERMINAL
    for command in Command:
        for status in S:
            if status is not S.SUPERSEDED:
                assert decide(command, status, force=True) == decide(command, status)


def test_tokens_are_masked_in_any_repr_celery_prints():
    text = "{'planId': 'p', 'token': 'a1b2c3.7', 'tenantId': 't'}"
    assert redact_tokens(text) == "{'planId': 'p', 'token': '***', 'tenantId': 't'}"
    assert redact_tokens('{"token": "x.1", "a": 1}') == '{"token": "***", "a": 1}'
    assert redact_tokens("last stage done: task finished") == "last stage done: task finished"
