"""A rollback that cannot restore a service says so: in the command's answer, on the task,
in an event, and beforehand in `deployer diff --rollback`; `--strict` (task kwarg `strict`,
API field `strict`) refuses it with ROLLBACK_INCOMPLETE.

Before: a tenant whose previous snapshot had no trunkGroup (the README quick start's
tenant-002) was rolled back with its asbc-gateway stage silently skipped: the traffic switch
to the new trunk group was never undone, and nothing said so.
"""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from deployer import audit
from deployer.cli import app
from deployer.models import task_id_for
from deployer.state import keys
from tests.helpers import plan, unique, wait_for

runner = CliRunner()
PREFIX = "icc_ai_ops_srv:tenant_config:"
NO_TRUNK = "the previous config has no trunkGroup; what the forward run applied there stays"


def switched_tenant(tenant_id: str) -> dict[str, Any]:
    """Switched to trunk group tg-green (asbc-gateway) and to unit green (blue-green
    gateway); its snapshot knows the unit it came from, but no trunk group."""
    return {
        "tenantId": tenant_id,
        "planVersion": 20,
        "deployUnitName": "green",
        "trunkGroup": "tg-green",
        "calledNumberRules": "4001020,4001021",
        "networkEndpoints": [
            {"key": "r1", "sourceIp": "10.0.0.1", "targetDomain": "gw.green.example"}
        ],
        "serviceNames": ["asbc-gateway", "blue-green-gateway"],
        "sourceTenantDeployConfig": {
            "tenantId": tenant_id,
            "planVersion": 19,
            "deployUnitName": "blue",
            "networkEndpoints": [
                {"key": "r1", "sourceIp": "10.0.0.1", "targetDomain": "gw.blue.example"}
            ],
        },
    }


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def deployed(plan_file, tenants: list[str]) -> str:
    plan_id = unique()
    body = plan(plan_id, [switched_tenant(t) for t in tenants])
    done = cli("submit", plan_file(body), "--wait", "--timeout", "60")
    assert done.exit_code == 0, done.output
    return plan_id


def test_a_rollback_names_the_service_it_cannot_restore_and_strict_refuses_it(worker, r, plan_file):
    tenant, other = unique("t"), unique("t")
    plan_id = deployed(plan_file, [tenant, other])
    task_key = keys.task(task_id_for(plan_id, tenant))

    # Beforehand: the rollback diff names it, with the changes the rollback does make.
    shown = cli("diff", "--rollback", "--tenant", tenant, "--json")
    assert shown.exit_code == 0, shown.output
    (entry,) = json.loads(shown.stdout)["tenants"]
    assert entry["unrestored"] == [{"service": "asbc-gateway", "reason": NO_TRUNK}]
    assert entry["version"] == {"before": 20, "after": 19, "change": "down"}
    assert [c["field"] for c in entry["changes"]] == ["icc-bg-gateway", "metadata"]
    text = cli("diff", "--rollback", "--tenant", tenant).stdout
    assert f"! not restored asbc-gateway: {NO_TRUNK}" in text
    assert '$.routes[0].targetUri: "gw.green.example" → "gw.blue.example"' in text
    assert "1 cannot restore every service" in text
    whole = json.loads(cli("diff", "--rollback", "--plan", plan_id, "--json").stdout)
    assert whole["summary"] == {"tenants": 2, "changing": 2, "unchanged": 0, "unrestorable": 2,
                                "refused": 0}  # fmt: skip

    # --strict refuses it, with a stable code, and changes nothing.
    strict = cli("rollback", "--tenant", tenant, "--strict")
    assert strict.exit_code == 2
    assert "ROLLBACK_INCOMPLETE" in strict.output and "asbc-gateway" in strict.output
    assert r.hget(task_key, "status") == "COMPLETED"
    refusal = audit.history(r, tenant_id=tenant, count=1).events[0][1]
    assert (refusal["type"], refusal["code"]) == ("COMMAND_REFUSED", "ROLLBACK_INCOMPLETE")
    # ... as does the rollback task's own kwarg, sent by any client
    worker.send_task("deployer.rollback", [{"tenantId": other}], {"strict": True})
    wait_for(
        lambda: (
            audit.history(r, tenant_id=other, count=1).events[0][1].get("code")
            == "ROLLBACK_INCOMPLETE"
        ),
        what="the strict rollback task refused",
    )
    assert r.hget(keys.task(task_id_for(plan_id, other)), "status") == "COMPLETED"

    # Without it: rolled back, and the answer, the task and an event name the service.
    done = cli("rollback", "--tenant", tenant, "--wait", "--timeout", "60")
    assert done.exit_code == 0, done.output
    assert f"cannot restore asbc-gateway ({NO_TRUNK})" in done.output
    view = json.loads(cli("task", "--tenant", tenant, "--json").stdout)
    assert view["status"] == "ROLLED_BACK"
    assert view["unrestored"] == [{"service": "asbc-gateway", "reason": NO_TRUNK}]
    assert "not restored asbc-gateway" in cli("task", "--tenant", tenant).stdout
    events = [f for _, f in audit.history(r, tenant_id=tenant, count=50).events]
    (incomplete,) = [f for f in events if f["type"] == "ROLLBACK_INCOMPLETE"]
    assert incomplete["services"] == "asbc-gateway" and NO_TRUNK in incomplete["reason"]
    assert r.hget(PREFIX + tenant, "metadata") == '{"version":19}'
    # the blue-green gateway was restored (its snapshot has what it needs)
    assert "gw.blue.example" in r.hget(PREFIX + tenant, "icc-bg-gateway")

    # A whole plan's answer lists each tenant's unrestored services.
    answer = json.loads(cli("rollback", "--plan", plan_id, "--json").stdout)
    assert answer["ok"] and answer["unrestored"] == [
        {"tenantId": other, "service": "asbc-gateway", "reason": NO_TRUNK}
    ]
    assert "1 tenant(s) cannot restore every service" in answer["message"]
