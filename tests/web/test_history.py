"""The deployment history over HTTP: the plans list with archived plans, a tenant's history
(typed, in the OpenAPI), an archived plan and task answering with no commands, and the
history page in a real Chromium (screenshot in the test's tmp_path)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployer.retention import Retention
from deployer.settings import get_settings
from deployer.state import keys
from tests.helpers import bg_tenant, plan, unique, wait_for


def run_plan(api: str, r: Any, tenants: list[str], version: int) -> str:
    plan_id = unique("hist")
    body = plan(plan_id, [bg_tenant(t, version=version, prev_version=version - 1) for t in tenants])
    assert httpx.post(f"{api}/api/v1/plans", json=body, timeout=30).status_code == 201
    wait_for(lambda: r.hget(keys.plan(plan_id), "status") == "COMPLETED", timeout=60,
             what="plan COMPLETED")  # fmt: skip
    return plan_id


@pytest.fixture()
def archived(api: str, r: Any) -> dict[str, Any]:
    """Two plans on the same two tenants, both archived (the first gone from Redis)."""
    tenants = [unique("ht"), unique("ht")]
    first = run_plan(api, r, tenants, 71)
    second = run_plan(api, r, tenants, 72)
    Retention(r, get_settings()).run_pass(older_than=0, only=[first, second])
    assert not r.exists(keys.plan(first))
    return {"tenants": tenants, "first": first, "second": second}


def test_the_api_lists_archived_plans_and_a_tenants_history_newest_first(api, archived):
    first, second = archived["first"], archived["second"]
    listed = httpx.get(f"{api}/api/v1/plans", params={"limit": 500}).json()
    where = {p["planId"]: p["archived"] for p in listed["items"]}
    assert where[first] is True and where[second] is True
    plan_view = httpx.get(f"{api}/api/v1/plans/{first}").json()
    assert plan_view["archived"] is True and plan_view["commands"] == []
    history = httpx.get(f"{api}/api/v1/tenants/{archived['tenants'][0]}/history").json()
    assert [(h["planId"], h["planVersion"]) for h in history["items"][:2]] == [
        (second, 72), (first, 71)]  # fmt: skip
    task = httpx.get(f"{api}/api/v1/archive/plans/{first}/tenants/{archived['tenants'][0]}")
    assert task.status_code == 200 and task.json()["planVersion"] == 71
    assert task.json()["commands"] == [] and task.json()["timeline"]
    refused = httpx.post(f"{api}/api/v1/plans/{first}/rollback", json={})
    assert "PLAN_ARCHIVED" in refused.text
    schema = httpx.get(f"{api}/openapi.json").json()
    assert "TenantHistory" in schema["components"]["schemas"]


def test_a_bad_history_cursor_is_refused(api):
    got = httpx.get(f"{api}/api/v1/tenants/t1/history", params={"cursor": "nope"})
    assert got.status_code == 422 and got.json()["code"] == "REQUEST_INVALID"


playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (.ci/run installs it)")
def test_the_history_page_lists_every_deployment_and_an_archived_plan_has_no_buttons(
    api, archived, tmp_path: Path
):
    tenant, first = archived["tenants"][0], archived["first"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 700})
        page.goto(f"{api}/tenants/{tenant}/history")
        rows = page.locator("#history tbody tr[data-task]")
        assert rows.count() == 2
        assert "72" in rows.nth(0).inner_text() and "71" in rows.nth(1).inner_text()
        assert "archived" in rows.nth(1).inner_text()
        page.screenshot(path=str(tmp_path / "history.png"), full_page=True)
        page.click(f"text={first}")
        page.wait_for_selector("#timeline")
        page.goto(f"{api}/plans/{first}")
        page.wait_for_selector("#archived-note")
        assert page.locator("button.cmd").count() == 0
        page.screenshot(path=str(tmp_path / "archived-plan.png"), full_page=True)
        browser.close()
    print("screenshots:", tmp_path / "history.png", tmp_path / "archived-plan.png")
