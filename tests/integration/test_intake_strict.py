"""The edge is strict and every refusal reaches the caller: the table of tests/intake_cases.py
through `validate_plan` and through a real worker (the rejection stream), PLAN_CONFLICT and
the duplicate answer, capped rejection entries, planIds read from unparsable plans, and the
submit-time preflight of service instances."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from deployer.cli import app
from deployer.client import DeployerClient, PlanStatus, Rejection
from deployer.errors import PlanValidationError
from deployer.intake import config_json, plan_digest, sniff_plan_id, task_row, validate_plan
from deployer.settings import Settings
from stages.discovery import StaticResolver
from tasks import runtime
from tests.helpers import bg_tenant, plan, unique, wait_for
from tests.intake_cases import CASES, Case

SETTINGS = Settings()


def submit_check(payload: Any, settings: Settings = SETTINGS) -> Any:
    """What the submit path validates, stages included."""
    return validate_plan(payload, settings, lambda config: task_row(config, settings))


def entries_since(r, since: str) -> list[dict[str, str]]:
    return [fields for _id, fields in r.xrange("deployer:rejections", min=since)]


def last_id(r) -> str:
    last = r.xrevrange("deployer:rejections", count=1)
    return f"({last[0][0]}" if last else "-"


def refusal_of(r, since: str, plan_id: str) -> dict[str, str] | None:
    return next((e for e in entries_since(r, since) if e["planId"] == plan_id), None)


def effective_id(payload: Any, plan_id: str) -> str:
    return str(payload["planId"]) if isinstance(payload, dict) else plan_id


# ---- the table, through the validator and through a worker ------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_validator_accepts_or_refuses_with_code_field_and_reason(case: Case):
    payload = case.plan(unique())
    if case.refused is None:
        submit_check(payload)
        return
    code, field, reason = case.refused
    with pytest.raises(PlanValidationError) as info:
        submit_check(payload)
    assert info.value.code == code
    matching = [e for e in info.value.errors if e["field"] == field]
    assert matching, info.value.errors
    assert any(reason in e["reason"] for e in matching), matching


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_worker_records_every_refusal_with_code_field_and_reason(worker, r, case: Case):
    plan_id = unique()
    payload = case.plan(plan_id)
    since = last_id(r)
    worker.send_task("deployer.submit_plan", [payload])
    if case.refused is None:
        key = f"deployer:plan:{effective_id(payload, plan_id)}"
        wait_for(lambda: r.hget(key, "status") == "COMPLETED", timeout=60, what="completed")
        assert refusal_of(r, since, effective_id(payload, plan_id)) is None
        return
    code, field, reason = case.refused
    recorded = case.recorded_id(plan_id)
    entry = wait_for(lambda: refusal_of(r, since, recorded), what=f"refusal of {case.name}")
    errors = json.loads(entry["errors"])
    assert entry["code"] == code and int(entry["errorCount"]) == len(errors) >= 1
    assert any(e["field"] == field and reason in e["reason"] for e in errors), errors
    assert not r.exists(f"deployer:plan:{plan_id}")


# ---- PLAN_CONFLICT and the duplicate answer ------------------------------------------------


def test_the_digest_is_the_plan_not_its_spelling():
    plan_id = unique()
    base = plan(plan_id, [bg_tenant(f"{plan_id}-t0")])
    renamed = json.loads(json.dumps(base))
    tenant = renamed["tenants"][0]
    tenant["previousConfig"] = tenant.pop("sourceTenantDeployConfig")
    reordered = json.dumps(dict(reversed(list(base.items()))))

    def digest(payload: Any) -> str:
        head, configs = validate_plan(payload, SETTINGS, config_json)
        return plan_digest(head, configs)

    assert digest(base) == digest(renamed) == digest(reordered)
    assert digest(plan(plan_id, [bg_tenant(f"{plan_id}-t0", version=21)])) != digest(base)
    assert digest({**base, "maxConcurrency": 2}) != digest(base)
    numeric = {"planId": 42, "tenants": [bg_tenant("t42")]}
    assert digest(numeric) == digest({**numeric, "planId": "42"})


def test_a_reused_plan_id_with_another_body_is_refused_and_changes_nothing(worker, r):
    plan_id, tenant = unique(), unique("t")
    first = plan(plan_id, [bg_tenant(tenant)])
    worker.send_task("deployer.submit_plan", [first])
    key = f"deployer:plan:{plan_id}"
    wait_for(lambda: r.hget(key, "status") == "COMPLETED", what="first plan done")
    stored = r.hgetall(key)
    assert len(stored["digest"]) == 64

    since = last_id(r)
    other = plan(plan_id, [bg_tenant(tenant, version=99)])
    worker.send_task("deployer.submit_plan", [other])
    entry = wait_for(lambda: refusal_of(r, since, plan_id), what="conflict recorded")
    assert entry["code"] == "PLAN_CONFLICT" and "another body" in entry["message"]
    assert json.loads(entry["errors"])[0]["field"] == "planId"
    assert r.hgetall(key) == stored  # nothing changed: not a task, not a counter
    assert r.hget(f"icc_ai_ops_srv:tenant_config:{tenant}", "metadata") == '{"version":20}'

    client = DeployerClient()
    answer = client.wait_accepted(plan_id, since, timeout=5, digest=client.digest(other))
    assert isinstance(answer, Rejection) and answer.code == "PLAN_CONFLICT"
    same = client.wait_accepted(plan_id, since, timeout=5, digest=client.digest(first))
    assert isinstance(same, PlanStatus) and same.status == "COMPLETED"


def test_an_identical_resubmit_answers_duplicate_and_records_no_refusal(worker, r):
    plan_id = unique()
    payload = plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(2)])
    answer = runtime.planner().submit(payload)
    assert answer["code"] == "ACCEPTED" and "duplicate" not in answer
    since = last_id(r)
    again = runtime.planner().submit(json.dumps(payload, sort_keys=True))  # same plan as text
    assert again["ok"] is True and again["duplicate"] is True
    assert again["code"] == "ALREADY_SUBMITTED"
    conflict = runtime.planner().submit(plan(plan_id, [bg_tenant(f"{plan_id}-t0")]))
    assert conflict["ok"] is False and conflict["code"] == "PLAN_CONFLICT"
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED", what="done")
    assert [e["code"] for e in entries_since(r, since) if e["planId"] == plan_id] == [
        "PLAN_CONFLICT"
    ]


def test_the_cli_says_duplicate_and_exits_2_on_a_conflict(worker, r, tmp_path):
    runner = CliRunner()
    plan_id, tenant = unique(), unique("t")
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan(plan_id, [bg_tenant(tenant)])))
    first = runner.invoke(app, ["submit", str(path), "--json"], catch_exceptions=False)
    assert first.exit_code == 0 and json.loads(first.output)["duplicate"] is False
    again = runner.invoke(app, ["submit", str(path), "--json"], catch_exceptions=False)
    assert again.exit_code == 0 and json.loads(again.output)["duplicate"] is True

    path.write_text(json.dumps(plan(plan_id, [bg_tenant(tenant, version=77)])))
    refused = runner.invoke(app, ["submit", str(path), "--json"], catch_exceptions=False)
    assert refused.exit_code == 2, refused.output
    out = json.loads(refused.output)
    assert out["ok"] is False and out["code"] == "PLAN_CONFLICT"
    text = runner.invoke(app, ["submit", str(path)], catch_exceptions=False)
    assert text.exit_code == 2 and "PLAN_CONFLICT" in text.output


# ---- rejections: bounded, and under the planId that could be read -------------------------


def test_a_plan_with_thousands_of_errors_writes_a_bounded_entry_with_the_count(worker, r):
    plan_id = unique()
    tenants = [
        {"tenantId": f"bad id {i}", "planVersion": "x" * 300, "deployUnitNmae": "g"}
        for i in range(3000)
    ]
    since = last_id(r)
    worker.send_task("deployer.submit_plan", [plan(plan_id, tenants)])
    entry = wait_for(lambda: refusal_of(r, since, plan_id), what="refusal")
    errors = json.loads(entry["errors"])
    assert int(entry["errorCount"]) == 9000
    assert 1 <= len(errors) <= SETTINGS.max_rejection_errors
    assert errors[0]["field"] == "tenants[0].tenantId"
    size = sum(len(k) + len(v) for k, v in entry.items())
    assert size <= SETTINGS.max_rejection_bytes + 1024


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"planId": "ID", "tenants": [' + "[" * 1500 + "]" * 1500 + "]}", "PLAN_TOO_DEEP"),
        ('{"planId": "ID", "tenants": [' + '{"tenantId": "t"},' * 300 + "{}]}", "PLAN_TOO_LARGE"),
        ('{"planId": "ID", "tenants": [{"tenantId": "t"}', "PLAN_INVALID"),  # not JSON
        ('{"tenants": [], "planId": "ID"}', "PLAN_INVALID"),  # parsed, refused
    ],
    ids=["too-deep", "too-large", "not-json", "field-errors"],
)
def test_a_plan_refused_before_parsing_is_recorded_under_its_plan_id(
    worker, r, monkeypatch, text, code
):
    plan_id = unique()
    monkeypatch.setattr(runtime.planner(), "settings", Settings(max_plan_bytes=4096))
    since = last_id(r)
    worker.send_task("deployer.submit_plan", [text.replace("ID", plan_id)])
    entry = wait_for(lambda: refusal_of(r, since, plan_id), what="refusal under the planId")
    assert entry["code"] == code
    answer = DeployerClient().wait_accepted(plan_id, since, timeout=5)
    assert isinstance(answer, Rejection) and answer.code == code


def test_the_plan_id_is_read_cheaply_from_what_cannot_be_parsed():
    assert sniff_plan_id('{"planId": "p-1", "tenants": [[[') == "p-1"
    assert sniff_plan_id('{"tenants": [{"planId": 42}], "planId": 42') == "42"
    assert sniff_plan_id(b'{"planId":"p-2" , "x": 1}') == "p-2"
    assert sniff_plan_id('{"planId": "nl-1\\n"}') is None  # not an id: nothing is guessed
    assert sniff_plan_id('{"planId": "a b"}') is None
    assert sniff_plan_id(" " * 70_000 + '{"planId": "late"}') is None  # bounded scan
    assert sniff_plan_id({"planId": 7, "tenants": "x"}) == "7"
    assert sniff_plan_id({"planId": "nl-1\n"}) == "nl-1\n"  # as the caller waits for it
    assert sniff_plan_id({"planId": "x" * 129}) is None
    assert sniff_plan_id({"planId": True}) is None and sniff_plan_id([1]) is None


def test_ids_are_checked_whole_everywhere_they_are_read():
    from deployer.control import Target, TargetInvalid
    from stages.steps.health_check import url_path

    assert Target.parse({"tenantId": "t-1"}).tenant_id == "t-1"
    for bad in ({"tenantId": "t-1\n"}, {"planId": "p\n"}, '{"planId": "p-1\\n"}'):
        with pytest.raises(TargetInvalid):
            Target.parse(bad)
    assert url_path("/actuator/bg-sdk/{tenantId}", "t-1") == "/actuator/bg-sdk/t-1"
    with pytest.raises(Exception, match="not an absolute path"):
        url_path("/ok\r\nHost: evil/{tenantId}", "t-1")


# ---- preflight: a service without instances is refused at submit --------------------------


class CountingResolver(StaticResolver):
    """The configured static instances, counting lookups (one per service per plan)."""

    def __init__(self, instances: dict[str, list[str]]) -> None:
        super().__init__(instances)
        self.lookups: list[tuple[str, str | None]] = []

    def resolve(self, service: str, namespace: str | None) -> list[str]:
        self.lookups.append((service, namespace))
        return super().resolve(service, namespace)


def test_a_service_without_instances_is_refused_at_submit_before_anything_acts(
    worker, r, monkeypatch
):
    configured = Settings().instances
    without_portal = {k: v for k, v in configured.items() if k != "portal"}
    resolver = CountingResolver(without_portal)
    monkeypatch.setattr(runtime.planner(), "resolver", resolver)
    plan_id = unique()
    tenants = [
        bg_tenant(f"{plan_id}-t{i}", serviceNames=["blue-green-gateway", "portal"])
        for i in range(20)
    ]
    since = last_id(r)
    worker.send_task("deployer.submit_plan", [plan(plan_id, tenants)])
    entry = wait_for(lambda: refusal_of(r, since, plan_id), what="preflight refusal")
    errors = json.loads(entry["errors"])
    assert entry["code"] == "PLAN_INVALID"
    assert errors == [
        {
            "field": "tenants[0]",
            "reason": "uses portal: no instance available in namespace default; "
            "configure DEPLOYER_INSTANCES or Nacos",
        }
    ]
    assert sorted(resolver.lookups) == [("blue-green-gateway", None), ("portal", None)]
    assert not r.exists(f"deployer:plan:{plan_id}")
    assert not any(r.exists(f"icc_ai_ops_srv:tenant_config:{t['tenantId']}") for t in tenants)

    monkeypatch.setattr(runtime.planner(), "resolver", CountingResolver(configured))
    worker.send_task("deployer.submit_plan", [plan(plan_id, tenants)])
    key = f"deployer:plan:{plan_id}"
    wait_for(lambda: r.hget(key, "status") == "COMPLETED", timeout=60, what="accepted once up")
