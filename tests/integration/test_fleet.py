"""Plans against the simulated fleet through a real worker: all four services, lost
broadcasts, a fleet that never converges, and `deployer fleet` itself."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from importlib import resources

import httpx

from deployer.fleet import Behaviour
from deployer.models import Plan
from deployer.settings import DEFAULT_INSTANCES, Settings
from stages.factory import build_stages
from tests.helpers import (
    ROOT,
    bg_tenant,
    plan,
    start_on_free_ports,
    unique,
    wait_for,
    worker_env,
)
from tests.stepkit import PREFIX, prime


def full_tenant(tenant: str, version: int = 20) -> dict:
    return {
        "tenantId": tenant,
        "planVersion": version,
        "deployUnitName": "green",
        "trunkGroup": "tg-green",
        "calledNumberRules": "4001,4002",
        "networkEndpoints": [{"key": "r1", "sourceIp": "10.0.0.1", "targetDomain": "gw.green"}],
        "sourceTenantDeployConfig": {
            "tenantId": tenant,
            "planVersion": 19,
            "deployUnitName": "blue",
        },
    }


def task_of(r, tenant: str) -> dict[str, str]:
    return r.hgetall(f"deployer:task:{r.get(f'deployer:tenant:{tenant}')}")


def plan_done(r, plan_id: str) -> str | None:
    status = r.hget(f"deployer:plan:{plan_id}", "status")
    return status if status in ("COMPLETED", "FAILED") else None


def test_a_tenant_using_all_four_services_completes_against_the_fleet(worker, r, session_fleet):
    plan_id = unique("all4")
    tenant = f"{plan_id}-t1"
    session_fleet.behave(plan_id, Behaviour(delay=0.3))
    worker.send_task("deployer.submit_plan", [plan(plan_id, [full_tenant(tenant)])])
    assert wait_for(lambda: plan_done(r, plan_id), what="plan done") == "COMPLETED"
    data = r.hgetall(f"{PREFIX}{tenant}")
    assert set(data) == {"icc-bg-gateway", "ob-campaign", "metadata"}
    assert data["metadata"] == '{"version":20}'
    ob = json.loads(data["ob-campaign"])
    assert (ob["tenantId"], ob["sourceUnitName"], ob["targetUnitName"]) == (tenant, "blue", "green")
    assert [q["service"] for q in session_fleet.requests(tenant)] == ["asbc-gateway", "portal"]


def test_a_fleet_that_loses_the_broadcast_converges_by_re_reading_on_poll(worker, r, session_fleet):
    plan_id = unique("lost")
    tenant = f"{plan_id}-t1"
    prime(session_fleet, r, tenant, 19)
    session_fleet.behave(plan_id, Behaviour(lose_broadcast=True, delay=0.3))
    worker.send_task("deployer.submit_plan", [plan(plan_id, [bg_tenant(tenant)])])
    assert wait_for(lambda: plan_done(r, plan_id), what="plan done") == "COMPLETED"
    assert session_fleet.broadcasts(tenant) == 0
    assert session_fleet.stats(plan_id)["polls"] >= 4  # 2 instances: "not yet", then v20


def test_a_fleet_that_never_converges_fails_the_task_naming_the_instances(worker, r, session_fleet):
    plan_id = unique("never")
    tenant = f"{plan_id}-t1"
    prime(session_fleet, r, tenant, 19)
    session_fleet.behave(plan_id, Behaviour(never=True))
    worker.send_task("deployer.submit_plan", [plan(plan_id, [bg_tenant(tenant)])])
    assert wait_for(lambda: plan_done(r, plan_id), what="plan done") == "FAILED"
    task = task_of(r, tenant)
    assert task["status"] == "FAILED"
    reason = task["lastError"]
    assert reason.startswith("stage blue-green-gateway, step bg-verify: 2 of 2")
    assert f"after {Settings().verify_max_attempts} attempts" in reason
    for address in session_fleet.addresses["blue-green-gateway"]:
        assert f"{address} answered version 19" in reason


def test_the_demo_plan_needs_only_the_default_instances():
    text = resources.files("deployer").joinpath("examples/demo-plan.json").read_text()
    demo = Plan.model_validate_json(text)
    services = set()
    for tenant in demo.tenants:
        services |= {s.service for s in build_stages(tenant, tenant.previous_config, Settings())}
    assert services == set(DEFAULT_INSTANCES) == {
        "asbc-gateway", "portal", "blue-green-gateway", "ob-service",
    }  # fmt: skip
    assert Settings.model_fields["instances"].default_factory() == DEFAULT_INSTANCES


def test_deployer_fleet_serves_the_configured_instances_until_terminated(r):
    tenant = unique("cli")
    r.hset(f"{PREFIX}{tenant}", mapping={"icc-bg-gateway": "{}", "metadata": '{"version":5}'})

    def start(ports: list[int]) -> subprocess.Popen[str]:
        instances = {"blue-green-gateway": [f"127.0.0.1:{p}" for p in ports]}
        env = worker_env(DEPLOYER_INSTANCES=json.dumps(instances), DEPLOYER_FLEET_DELAY_SECONDS="0")
        return subprocess.Popen(
            [sys.executable, "-c", "from deployer.cli import main; main()", "fleet"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def answers(ports: list[int]) -> list[dict] | None:
        try:
            return [
                httpx.get(f"http://127.0.0.1:{p}/actuator/bg-sdk/{tenant}", timeout=1).json()
                for p in ports
            ]
        except httpx.HTTPError:
            return None

    proc, ports = start_on_free_ports(2, start, lambda ports: answers(ports) is not None)
    try:
        assert answers(ports) == [{"tenantId": tenant, "version": 5}] * 2
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert "simulated fleet" in out
