"""The `deployer` CLI against a real Redis and worker: output and the public exit codes."""

from __future__ import annotations

import json

from tests.helpers import bg_tenant, plan, run_cli, unique, wait_for

run = run_cli


def test_submit_wait_exits_0_when_every_task_completed(worker, r, plan_file):
    plan_id, tenant = unique(), unique("t")
    result = run(
        "submit", plan_file(plan(plan_id, [bg_tenant(tenant)])), "--wait", "--timeout", "60"
    )
    assert result.exit_code == 0, result.output
    assert r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED"
    status = json.loads(run("status", plan_id, "--json").output)
    assert status["status"] == "COMPLETED" and status["counts"] == {"COMPLETED": 1}
    task = json.loads(run("task", "--tenant", tenant, "--json").output)
    assert task["status"] == "COMPLETED" and task["hash"]["metadata"] == '{"version":20}'
    assert task["context"]["additionalData"] == {"planVersion": 20}


def test_invalid_plan_exits_2_with_field_errors_and_sends_nothing(worker, r, plan_file):
    plan_id = unique()
    result = run("submit", plan_file(plan(plan_id, [bg_tenant("bad id")])))
    assert result.exit_code == 2
    assert "tenants[0].tenantId" in result.output
    assert not r.exists(f"deployer:plan:{plan_id}")


def test_dry_run_validates_and_lists_stages(plan_file):
    result = run("submit", plan_file(plan(unique(), [bg_tenant("t1")])), "--dry-run", "--json")
    assert result.exit_code == 0
    assert json.loads(result.output)["tasks"] == [
        {"tenantId": "t1", "stages": ["blue-green-gateway"]}
    ]


def test_illegal_command_exits_2_with_its_code_and_repeat_is_0(worker, r, plan_file):
    plan_id, tenant = unique(), unique("t")
    assert run("submit", plan_file(plan(plan_id, [bg_tenant(tenant)])), "--wait").exit_code == 0
    refused = run("retry", "--tenant", tenant)
    assert refused.exit_code == 2 and "TASK_NOT_FAILED" in refused.output
    assert run("resume", "--tenant", tenant).exit_code == 2
    unknown = run("status", unique("nope"))
    assert unknown.exit_code == 2 and "PLAN_NOT_FOUND" in unknown.output
    both = run("pause", "--plan", plan_id, "--tenant", tenant)  # that one task
    assert both.exit_code == 2 and "TASK_NOT_RUNNING" in both.output
    neither = run("pause")
    assert neither.exit_code == 2 and "TARGET_INVALID" in neither.output


def test_rollback_wait_exits_0_when_rolled_back(worker, r, plan_file):
    plan_id, tenant = unique(), unique("t")
    assert run("submit", plan_file(plan(plan_id, [bg_tenant(tenant)])), "--wait").exit_code == 0
    result = run("rollback", "--tenant", tenant, "--wait", "--timeout", "60", "--reason", "test")
    assert result.exit_code == 0, result.output
    assert r.hget(f"icc_ai_ops_srv:tenant_config:{tenant}", "metadata") == '{"version":19}'
    events = run("events", "--tenant", tenant, "--json")
    types = [json.loads(line)["type"] for line in events.output.splitlines() if line.strip()]
    assert "TASK_ROLLBACK" in types and types[-1] == "TASK_ROLLED_BACK"


def test_cancel_of_a_completed_plan_is_refused_but_a_repeat_pause_is_ok(
    worker, r, plan_file, planted
):
    plan_id = unique()
    tenants = [unique("t") for _ in range(2)]
    planted.lease(tenants[0])
    run("submit", plan_file(plan(plan_id, [bg_tenant(t) for t in tenants], maxConcurrency=1)))
    wait_for(lambda: r.exists(f"deployer:plan:{plan_id}"), what="plan stored")
    assert run("pause", "--plan", plan_id).exit_code == 0
    again = run("pause", "--plan", plan_id)
    assert again.exit_code == 0 and "already" in again.output
    assert run("cancel", "--plan", plan_id, "--reason", "done").exit_code == 0
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "CANCELLED", what="CANCELLED")
