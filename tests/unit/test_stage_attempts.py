"""The events a stage attempt sends (what Flower shows): re-sends WAITING, tokens masked."""

from __future__ import annotations

from celery.events.state import Task
from celery.utils.saferepr import saferepr

from tasks.attempts import resent, resent_text, stage_event
from tasks.tokens import redact_tokens


def _flower_state(*events: tuple[str, dict[str, object]]) -> Task:
    """Celery's event state, as Flower keeps it, after these events of one uuid."""
    task = Task("u")
    for i, (type_, fields) in enumerate(events):
        task.event(type_.removeprefix("task-"), float(i), float(i), dict(fields))
    return task


def test_a_re_send_attempt_is_waiting_and_says_why():
    text = "1/2 blue-green-gateway instances at v20; stage re-sent, again in 3s (attempt 2)"
    type_, fields = stage_event("task-succeeded", {"result": saferepr(resent(text)), "runtime": 1})
    assert type_ == "task-waiting"
    assert fields == {"result": text, "runtime": 1}
    attempt = [("task-received", {}), ("task-started", {})]
    task = _flower_state(*attempt, (type_, fields), *attempt)
    assert task.state == "WAITING" and task.result == text  # also while the next poll runs


def test_a_re_send_text_with_quotes_reads_back_whole():
    text = "tenant 'a' waits; stage re-sent"
    assert resent_text(saferepr(resent(text))) == text
    assert resent_text(saferepr("last stage done: task finished")) is None
    assert resent_text(saferepr({"token": "x"})) is None


def test_polls_then_a_failure_end_failure_in_celerys_event_state():
    poll = stage_event("task-succeeded", {"result": saferepr(resent("waiting")), "runtime": 0})
    failed = {"exception": "StageFailed('stage failed')", "traceback": "T"}
    fail = stage_event("task-failed", failed)
    attempt = [("task-received", {}), ("task-started", {})]
    task = _flower_state(*attempt, poll, *attempt, poll, *attempt, fail)
    assert task.state == "FAILURE"
    assert task.result is None and task.traceback is None
    assert task.exception == "StageFailed('stage failed')"
    # A late poll event (another worker) never hides the end either.
    assert _flower_state(*attempt, fail, poll).state == "FAILURE"
    done = stage_event("task-succeeded", {"result": "{'planId': 'p'}", "runtime": 0})
    assert _flower_state(*attempt, poll, *attempt, done).state == "SUCCESS"
    # What used to be sent: the first poll's SUCCESS outranks the later failure.
    old = _flower_state(*attempt, ("task-succeeded", {}), *attempt, ("task-failed", {}))
    assert old.state == "SUCCESS"


def test_a_handed_on_context_shows_its_token_masked():
    ctx = {"planId": "p", "token": "b5ce68365515-1.1", "stageIndex": 1}
    type_, fields = stage_event("task-succeeded", {"result": saferepr(ctx), "runtime": 0})
    assert type_ == "task-succeeded"
    assert "b5ce68365515" not in fields["result"] and "'token': '***'" in fields["result"]


def test_an_unexpected_failure_keeps_its_traceback():
    _, fields = stage_event("task-failed", {"exception": "KeyError('x')", "traceback": "T"})
    assert fields["traceback"] == "T"


def test_a_token_cut_short_by_the_repr_bound_is_masked():
    assert redact_tokens("{'planId': 'p', 'token': 'b5ce6836") == "{'planId': 'p', 'token': '***'"
