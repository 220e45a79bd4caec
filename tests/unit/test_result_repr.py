"""The result repr Celery's tracer writes (worker log, `task-succeeded`, Flower's Result).

tasks/reprs.py `result_repr` takes `repr`'s short cut only where it writes what Celery's
saferepr writes: random JSON values (quotes, backslashes, control and non-ASCII characters,
deep nesting, long text) must come out the same both ways, at every length limit, and the
tracer must really call it.
"""

from __future__ import annotations

from typing import Any

import celery.app.trace
import pytest
from celery import Celery
from celery.utils.saferepr import saferepr
from hypothesis import example, given, settings
from hypothesis import strategies as st

from deployer.context import TaskRuntimeContext
from tasks.reprs import result_repr

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(["plain", "it's", "back\\slash", "line\nbreak", "tab\t", "ünï ✓", ""])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),  # fmt: skip
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(value=json_values, maxlen=st.sampled_from([None, 8, 40, 300, 1024]))
@example(value=[[[[1]]]], maxlen=1024)  # deeper than saferepr shows: [[[[...]]]]
@example(value={"a": {"b": {"c": {"d": 1}}}}, maxlen=None)
@example(value=[[[1]]], maxlen=1024)  # as deep as it shows
@example(value="x" * 6, maxlen=8)  # repr exactly maxlen long
@example(value="x" * 5, maxlen=8)
@example(value={"k": "x" * 30}, maxlen=40)
def test_it_writes_what_saferepr_writes(value: Any, maxlen: int | None) -> None:
    assert result_repr(value, maxlen) == saferepr(value, maxlen)


def context_wire() -> dict[str, Any]:
    ctx = TaskRuntimeContext(
        plan_id="plan-1", task_id="plan-1-t1", tenant_id="t1", run_id="run-1", token="tok",
        stage_count=4, additional_data={"planVersion": 20},
    )  # fmt: skip
    return ctx.to_wire()


@pytest.mark.parametrize("maxlen", [1024, 120])
def test_a_stage_context_is_written_as_saferepr_writes_it(maxlen: int) -> None:
    wire = context_wire()
    wire["scratch"] = {"instances": ["10.0.0.1:8080"], "seen": {"10.0.0.1:8080": "HTTP 503"}}
    assert result_repr(wire, maxlen) == saferepr(wire, maxlen)


app = Celery("result-repr-test", broker="memory://", backend=None, set_as_current=False)


@app.task(name="t.returns_context")
def returns_context() -> dict[str, Any]:
    return context_wire()


def test_celerys_tracer_writes_results_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing tasks installs it, and the tracer looks it up when a task returns: an
    upgrade that binds saferepr elsewhere fails here instead of silently costing CPU."""
    assert celery.app.trace.saferepr is result_repr
    calls: list[Any] = []

    def counted(value: Any, maxlen: int | None = None, maxlevels: int = 3) -> str:
        calls.append(value)
        return result_repr(value, maxlen, maxlevels)

    monkeypatch.setattr(celery.app.trace, "saferepr", counted)
    result = returns_context.apply()
    assert result.get() == context_wire()
    assert calls == [context_wire()]
