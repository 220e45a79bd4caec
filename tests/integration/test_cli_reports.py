"""What the CLI tells an operator when things end badly: failed tenants by name with their
errors, what still runs at --timeout, a one-line refusal for a plan file it cannot read.
Real Redis, worker and fleet."""

from __future__ import annotations

import json

import pytest

from deployer.fleet import Behaviour
from tests.helpers import bg_tenant, plan, run_cli, unique

PREFIX = "icc_ai_ops_srv:tenant_config:"
run = run_cli


@pytest.mark.parametrize("make", ["missing", "directory", "not-utf8"])
def test_an_unreadable_plan_file_is_a_one_line_refusal(tmp_path, make):
    path = tmp_path / "plan.json"
    if make == "directory":
        path.mkdir()
    elif make == "not-utf8":
        path.write_bytes(b"\xff\xfe{}")
    # before: FileNotFoundError / IsADirectoryError / UnicodeDecodeError tracebacks
    result = run("submit", str(path))
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "PLAN_UNREADABLE" in result.output
    assert "Traceback" not in result.output
    as_json = json.loads(run("submit", str(path), "--json").output)
    assert as_json["ok"] is False and as_json["code"] == "PLAN_UNREADABLE"


def test_submit_wait_names_the_failed_tenants_and_their_errors(worker, r, plan_file, planted):
    plan_id = unique()
    tenants = [f"{unique('t')}-{i:02d}" for i in range(12)]
    for t in tenants:
        planted.not_a_hash(PREFIX + t)  # every write fails with WRONGTYPE
    result = run(
        "submit", plan_file(plan(plan_id, [bg_tenant(t) for t in tenants], maxConcurrency=12)),
        "--wait", "--timeout", "60",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    # before: only the counts (FAILED 12); now the first 10 by name, with the error
    assert "12 task(s) failed" in result.output
    named = [t for t in tenants if f"{t} FAILED at blue-green-gateway" in result.output]
    assert len(named) == 10 and "... and 2 more" in result.output
    assert result.output.count("WRONGTYPE") >= 10


def test_submit_timeout_shows_what_still_runs_and_exits_3(worker, r, plan_file, session_fleet):
    plan_id, tenant = unique(), unique("slow")
    session_fleet.behave(tenant, Behaviour(never=True))
    result = run("submit", plan_file(plan(plan_id, [bg_tenant(tenant)])), "--wait",
                 "--timeout", "1.5")  # fmt: skip
    assert result.exit_code == 3, result.output
    assert f"plan {plan_id} still RUNNING" in result.output
    report = result.output.split(f"plan {plan_id} still RUNNING", 1)[1].splitlines()
    line = next(line for line in report if line.strip().startswith(tenant))
    # tenant, status, stage (index/count) and the live progress text of its HealthCheck
    assert f"{tenant} RUNNING blue-green-gateway (1/1) 0/2" in line, line
    run("cancel", "--plan", plan_id)
