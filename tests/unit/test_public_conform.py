"""`public.conform` gives an answer back as the same JSON: an absent field stays absent, a
null stays null, a field the model does not name passes through, and a value that breaks
the model is refused where it leaves instead of reaching a client."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deployer import public


def test_absent_stays_absent_null_stays_null_and_unknown_fields_pass_through():
    row = {"taskId": "task-p:t", "failure": None, "newerField": {"x": 1}}
    assert public.conform(public.TaskRow, row) == row


def test_nested_models_keep_their_own_fields_only():
    view = {"planId": "p", "counts": {}, "commands": [],
            "waves": [{"index": 0, "state": "DONE", "tenants": 1, "done": 1, "failed": 0,
                       "counts": {"COMPLETED": 1}}]}  # fmt: skip
    assert public.conform(public.PlanView, view) == view


def test_an_answer_that_breaks_its_model_is_refused():
    with pytest.raises(ValidationError):
        public.conform(public.CommandResult, {"code": "OK", "message": "no ok field"})
    with pytest.raises(ValidationError):
        public.conform(public.TaskPage, {"items": "not a list", "total": 0, "scanned": 0})


def test_the_models_speak_the_wire_names():
    dumped = public.TaskView(task_id="t", next_field=1).model_dump(by_alias=True,
                                                                   exclude_unset=True)  # fmt: skip
    assert dumped == {"taskId": "t", "next_field": 1}
    assert public.CONTRACT_VERSION == 1
