"""The HTTP API of progressive rollout: which tenants are in which wave, approvals bound to
their wave, against a real worker and fleet."""

from __future__ import annotations

import json

import httpx

from tests.helpers import bg_tenant, plan, run_cli, unique, wait_for


def field(r, plan_id, name):
    return r.hget(f"deployer:plan:{plan_id}", name)


def submit(worker, r, plan_id, tenants, **extra):
    worker.send_task("deployer.submit_plan", [plan(plan_id, tenants, **extra)])
    wait_for(lambda: r.exists(f"deployer:plan:{plan_id}"), what="plan stored")


def test_which_tenants_are_in_which_wave_in_status_and_the_api(worker, r, api):
    tenants = [unique("wt") for _ in range(7)]
    plan_id = unique("members")
    strategy = {"canary": [tenants[5]], "waves": {"type": "linear", "size": 3},
                "approval": "first"}  # fmt: skip
    submit(worker, r, plan_id, [bg_tenant(t) for t in tenants], strategy=strategy)
    wait_for(lambda: field(r, plan_id, "waveState") == "AWAITING_APPROVAL", timeout=30,
             what="waiting")  # fmt: skip

    first = json.loads(run_cli("status", plan_id, "--wave", "1", "--limit", "2", "--json").output)
    assert [t["tenantId"] for t in first["items"]] == tenants[0:2]
    assert first["total"] == 3 and first["nextCursor"] == "2"
    assert first["wave"]["state"] == "AWAITING_APPROVAL"
    rest = run_cli("status", plan_id, "--wave", "1", "--cursor", "2", "--json")
    assert [t["tenantId"] for t in json.loads(rest.output)["items"]] == [tenants[2]]
    page = httpx.get(f"{api}/api/v1/plans/{plan_id}/waves/2/tenants").json()
    assert [t["tenantId"] for t in page["items"]] == [tenants[3], tenants[4], tenants[6]]
    assert {t["wave"] for t in page["items"]} == {2} and page["wave"]["state"] == "PENDING"
    canary = httpx.get(f"{api}/api/v1/plans/{plan_id}/tasks", params={"wave": 0}).json()
    assert [t["tenantId"] for t in canary["items"]] == [tenants[5]]
    assert httpx.get(f"{api}/api/v1/plans/{plan_id}/waves/9/tenants").status_code == 404
    # the API approves a wave by its number; without one it is refused
    no_wave = httpx.post(f"{api}/api/v1/plans/{plan_id}/approve", json={})
    assert no_wave.status_code == 422 and no_wave.json()["code"] == "WAVE_REQUIRED"
    wrong = httpx.post(f"{api}/api/v1/plans/{plan_id}/approve", json={"wave": 2})
    assert wrong.status_code == 409 and wrong.json()["code"] == "WAVE_NOT_AWAITING_APPROVAL"
    right = httpx.post(f"{api}/api/v1/plans/{plan_id}/approve", json={"wave": 1, "by": "qa"})
    assert right.status_code == 200, right.text
    wait_for(lambda: field(r, plan_id, "status") == "COMPLETED", timeout=60, what="COMPLETED")
