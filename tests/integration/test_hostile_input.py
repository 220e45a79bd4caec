"""Hostile input: every plan is rejected as a whole with field errors or accepted exactly;
raw malformed broker messages never take a worker down and never execute anything."""

from __future__ import annotations

import json
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Connection, Exchange, Queue

from deployer.errors import PlanValidationError
from deployer.intake import parse_plan
from deployer.models import MAX_VERSION
from deployer.settings import Settings
from tasks import runtime
from tests.helpers import bg_tenant, plan, unique, wait_for

SETTINGS = Settings()

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
hostile_id = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}\Z"),
    st.text(min_size=0, max_size=40),  # unicode, empty
    st.sampled_from(["a:b", "t*", "has space", "new\nline", "x" * 129, "-lead", "k{1}", "é"]),
    st.text(min_size=1, max_size=5).map(lambda s: "t" + s * 2000),  # huge
    json_value,  # wrong types
)
hostile_version = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([-1, 0, MAX_VERSION, MAX_VERSION + 1, 10**30, True, 20.0, 20.5, "20", "v20"]),
    json_value,
)


@st.composite
def tenant(draw: Any) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_value)  # not even an object
    cfg = bg_tenant(draw(hostile_id), version=None, prev_version=None)
    if draw(st.booleans()):
        cfg["planVersion"] = draw(hostile_version)
    if draw(st.integers(0, 4)) == 0:
        cfg[draw(st.sampled_from(["networkEndpoints", "serviceNames", "deployUnitName"]))] = draw(
            json_value
        )
    return cfg


@st.composite
def payload(draw: Any) -> Any:
    if draw(st.integers(0, 14)) == 0:
        return draw(json_value)
    body: dict[str, Any] = {
        "planId": draw(st.one_of(hostile_id, st.integers(-5, 10**20))),
        "tenants": draw(st.lists(tenant(), max_size=4)),
    }
    if draw(st.booleans()):
        body["maxConcurrency"] = draw(hostile_version)
    if draw(st.integers(0, 4)) == 0:
        return json.dumps(body)  # a JSON string is accepted too
    return body


def _check_exact(raw: Any, accepted: Any) -> None:
    raw = json.loads(raw) if isinstance(raw, str) else raw
    assert accepted.plan_id == str(raw["planId"])
    assert [t.tenant_id for t in accepted.tenants] == [t["tenantId"] for t in raw["tenants"]]
    for t, cfg in zip(accepted.tenants, raw["tenants"], strict=True):
        assert t.tenant_id == cfg["tenantId"] and ":" not in t.tenant_id and "*" not in t.tenant_id
        if isinstance(cfg.get("planVersion"), int):
            assert t.plan_version == cfg["planVersion"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload())
def test_any_plan_is_rejected_whole_with_field_errors_or_accepted_exactly(raw):
    try:
        accepted = parse_plan(raw, SETTINGS)
    except PlanValidationError as exc:
        assert exc.errors, "a rejection names at least one field"
        for err in exc.errors:
            assert set(err) == {"field", "reason"} and err["field"] and err["reason"]
        return
    _check_exact(raw, accepted)


@pytest.mark.parametrize("bad", ["a:b", "t*", "has space", "new\nline", "", "x" * 129, "ü", 7])
def test_tenant_ids_that_could_inject_redis_keys_are_field_errors(bad):
    with pytest.raises(PlanValidationError) as info:
        parse_plan(plan("p1", [bg_tenant("ok"), bg_tenant(bad)]), SETTINGS)
    fields = [e["field"] for e in info.value.errors]
    assert "tenants[1].tenantId" in fields and all(f.startswith("tenants[1].") for f in fields)


@pytest.mark.parametrize("bad", [-1, MAX_VERSION + 1, 10**30, True, 20.5, "v20", [20], {"v": 1}])
def test_negative_enormous_or_mistyped_versions_are_field_errors(bad):
    with pytest.raises(PlanValidationError) as info:
        parse_plan(plan("p1", [bg_tenant("t1", version=bad)]), SETTINGS)
    assert [e["field"] for e in info.value.errors] == ["tenants[0].planVersion"]


def test_a_hundred_thousand_tenants_are_accepted_and_one_more_is_refused():
    tenants = [{"tenantId": f"t{i}", "planVersion": 7} for i in range(100_000)]
    accepted = parse_plan({"planId": "big", "tenants": tenants}, SETTINGS)
    assert len(accepted.tenants) == 100_000 and accepted.tenants[-1].tenant_id == "t99999"
    tenants.append({"tenantId": "one-more", "planVersion": 7})
    with pytest.raises(PlanValidationError) as info:
        parse_plan({"planId": "big", "tenants": tenants}, SETTINGS)
    assert info.value.errors[0]["field"] == "tenants"


def test_plans_larger_than_the_size_limit_are_refused_unread():
    small = Settings(max_plan_bytes=4096)
    huge = json.dumps(plan("p1", [bg_tenant("t1", deployUnitName="x" * 10_000)]))
    with pytest.raises(PlanValidationError) as info:
        parse_plan(huge, small)
    assert info.value.errors == [{"field": "(plan)", "reason": "larger than 4096 bytes"}]


def test_deeply_nested_objects_are_field_errors():
    deep: dict[str, Any] = {}
    cur = deep
    for _ in range(5000):
        cur["x"] = {}
        cur = cur["x"]
    with pytest.raises(PlanValidationError):
        parse_plan(plan("p1", [bg_tenant("t1", networkEndpoints=[deep])]), SETTINGS)


def test_a_json_string_nested_100k_deep_is_a_plan_error():
    nested = "[" * 100_000 + "]" * 100_000
    with pytest.raises(PlanValidationError):
        parse_plan('{"planId": "p1", "tenants": ' + nested + "}", SETTINGS)


def test_a_hostile_plan_submitted_is_recorded_as_rejected_with_its_field_errors(r):
    plan_id = unique()
    answer = runtime.planner().submit(
        plan(plan_id, [bg_tenant("t:1*", prev_version=None), bg_tenant("ok", -5)])
    )
    assert answer["ok"] is False and answer["code"] == "PLAN_INVALID"
    assert not r.exists(f"deployer:plan:{plan_id}")
    entries = [f for _id, f in r.xrange("deployer:rejections") if f["planId"] == plan_id]
    fields = [e["field"] for e in json.loads(entries[-1]["errors"])]
    assert fields == ["tenants[0].tenantId", "tenants[1].planVersion"]


# ---- raw broker messages ------------------------------------------------------------------


class _Touch:
    """Unpickling this creates a file: proof that a pickle message was never decoded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def _raw_messages(marker: Path) -> list[tuple[str, dict[str, Any], bytes, str]]:
    """(what, headers, body, content_type) of hostile messages."""

    def h(task: str = "deployer.submit_plan", **extra: Any) -> dict[str, Any]:
        return {"task": task, "id": str(uuid.uuid4()), **extra}

    j = "application/json"
    return [
        ("json not a list", h(), b'{"not": "a list"}', j),
        ("json number", h(), b"5", j),
        ("json string", h(), b'"abc"', j),
        ("not json", h(), b"\x00\xffnot json{", j),
        (
            "pickle",
            h(),
            pickle.dumps(([_Touch(str(marker))], {}, {})),
            "application/x-python-serialize",
        ),
        ("unknown task", h("deployer.nope"), b"[[], {}, {}]", j),
        ("missing args", h(), b"[[], {}, {}]", j),
        ("too many args", h(), b"[[1, 2, 3], {}, {}]", j),
        ("args not a list", h(), b'[{"a": 1}, {}, {}]', j),
        ("no id header", {"task": "deployer.submit_plan"}, b"[[{}], {}, {}]", j),
        ("bad timelimit", h(timelimit="abc"), b"[[{}], {}, {}]", j),
        ("bad eta", h(eta="not a date"), b"[[{}], {}, {}]", j),
        ("embed not object", h(), b"[[{}], {}, 5]", j),
        ("run_stage no args", h("deployer.run_stage"), b"[[], {}, {}]", j),
    ]


@pytest.mark.e2e
def test_raw_malformed_messages_on_both_queues_leave_the_worker_up_and_run_nothing(
    spawn_worker, r, tmp_path
):
    worker = spawn_worker("hostile", concurrency=2)
    marker = tmp_path / "unpickled"
    messages = _raw_messages(marker)
    with Connection(SETTINGS.broker_url) as conn:
        producer = conn.Producer()
        for queue in ("deployer.control", "deployer.stages"):
            exchange = Exchange(queue, type="direct")
            q = Queue(queue, exchange, routing_key=queue)
            for _what, headers, body, content_type in messages:
                producer.publish(
                    body,
                    exchange=exchange,
                    routing_key=queue,
                    declare=[q],
                    headers=headers,
                    content_type=content_type,
                    content_encoding="binary" if "python" in content_type else "utf-8",
                )
        # celery-node's envelope (headers lang, task, id only) still runs.
        plan_id = unique()
        good = plan(plan_id, [bg_tenant(f"{plan_id}-t0")])
        body = [[good], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
        producer.publish(
            json.dumps(body),
            exchange=Exchange("deployer.control", type="direct"),
            routing_key="deployer.control",
            headers={"lang": "js", "task": "deployer.submit_plan", "id": str(uuid.uuid4())},
            content_type="application/json",
            content_encoding="utf-8",
        )
    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
        timeout=30,
        what="a good plan after the hostile messages",
    )
    log = worker.log.read_text()
    dropped = log.count("malformed message dropped")
    assert worker.poll() is None, "the worker died"
    assert "Unrecoverable error" not in log
    assert dropped == 2 * len(messages), log[-3000:]
    assert not marker.exists(), "a pickle message was decoded"
    print(f"\nraw messages: sent={2 * len(messages)} dropped={dropped} worker alive, plan ran")
