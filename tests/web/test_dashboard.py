"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright),
against the real API, Redis, worker and simulated fleet. Screenshots of every step are saved
in the test's tmp_path (printed at the end of each test)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployer.fleet import Behaviour
from tests.helpers import bg_tenant, plan, unique, wait_for

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (.ci/run installs Debian's chromium)"
)
PREFIX = "icc_ai_ops_srv:tenant_config:"


@pytest.fixture(scope="module")
def browser() -> Any:
    with playwright.sync_playwright() as p:
        # Playwright's own browser download is not used: the system chromium is
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any, tmp_path: Path) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.shots = []  # type: ignore[attr-defined]
    yield pg
    context.close()
    print("screenshots:", *pg.shots, sep="\n  ")  # type: ignore[attr-defined]


def shot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.shots.append(path)


def number(page: Any, status: str) -> int:
    return int(page.inner_text(f"#count-{status}"))


def confirm(page: Any, command: str, reason: str) -> str:
    """Click a command button, check the confirmation dialog, confirm; returns the toast."""
    page.click(f"button.cmd-{command}")
    dialog = page.locator("dialog#confirm")
    assert dialog.is_visible()
    assert command in page.inner_text("#confirm-text")
    page.fill("#confirm-reason", reason)
    page.click("#confirm-yes")
    page.wait_for_function("document.querySelector('#toast').classList.contains('show')")
    return str(page.inner_text("#toast"))


def test_live_counts_then_pause_stops_tenants_and_resume_completes(
    page, api, session_fleet, tmp_path
):
    plan_id, prefix = unique("dash"), unique("live")
    session_fleet.behave(prefix, Behaviour(delay=0.5))
    tenants = [f"{prefix}-{i:02d}" for i in range(16)]
    body = plan(plan_id, [bg_tenant(t) for t in tenants], maxConcurrency=2)
    assert httpx.post(f"{api}/api/v1/plans", json=body, timeout=30).status_code == 201

    page.goto(f"{api}/plans/{plan_id}")
    page.evaluate("window.__sameDocument = 42")  # gone if the page ever reloads
    page.wait_for_selector("#live.on")
    start = number(page, "COMPLETED")
    page.wait_for_function(
        f"Number(document.querySelector('#count-COMPLETED').textContent) > {start}"
    )
    page.wait_for_selector("#tasks tbody tr[data-tenant]")
    shot(page, tmp_path, "1-running")

    assert "OK" in confirm(page, "pause", "change window closed")
    page.wait_for_function("document.querySelector('#plan-status').textContent === 'PAUSED'")
    assert number(page, "RUNNING") == 0 and number(page, "PAUSED") > 0
    page.select_option("#f-status", "PAUSED")
    page.wait_for_function(
        "[...document.querySelectorAll('#tasks tbody tr[data-tenant] .status')]"
        ".every(s => s.textContent === 'PAUSED') && "
        "document.querySelectorAll('#tasks tbody tr[data-tenant]').length > 0"
    )
    stopped = httpx.get(f"{api}/api/v1/plans/{plan_id}").json()
    assert stopped["status"] == "PAUSED" and stopped["counts"].get("COMPLETED", 0) < 16
    assert not stopped["counts"].get("RUNNING")
    shot(page, tmp_path, "2-paused")

    page.select_option("#f-status", "")
    assert "OK" in confirm(page, "resume", "window open again")
    page.wait_for_function(
        "document.querySelector('#plan-status').textContent === 'COMPLETED'", timeout=60_000
    )
    assert number(page, "COMPLETED") == 16 and number(page, "PAUSED") == 0
    assert page.evaluate("window.__sameDocument") == 42
    shot(page, tmp_path, "3-completed")


def test_a_failed_tenants_error_is_on_its_page_and_retry_fixes_it(page, api, r, tmp_path, planted):
    plan_id, bad, good = unique("dash"), unique("bad"), unique("ok")
    planted.not_a_hash(PREFIX + bad)  # its write fails with WRONGTYPE
    body = plan(plan_id, [bg_tenant(good), bg_tenant(bad)])
    assert httpx.post(f"{api}/api/v1/plans", json=body, timeout=30).status_code == 201
    wait_for(
        lambda: httpx.get(f"{api}/api/v1/plans/{plan_id}").json()["status"] == "FAILED",
        timeout=60,
        what="plan FAILED",
    )

    page.goto(f"{api}/")
    shot(page, tmp_path, "4-plans")
    page.click(f"a[href='/plans/{plan_id}']")
    page.fill("#f-q", bad[-6:])
    page.wait_for_function("document.querySelectorAll('#tasks tbody tr[data-tenant]').length === 1")
    row = page.locator(f"#tasks tr[data-tenant='{bad}']")
    assert "FAILED" in row.inner_text() and "WRONGTYPE" in row.inner_text()
    shot(page, tmp_path, "5-plan-failed")
    row.locator("a").first.click()
    page.wait_for_selector("#failure:not([hidden])")
    assert "WRONGTYPE" in page.inner_text("#failure-error")
    assert page.inner_text("#failure-stage") == "blue-green-gateway"
    assert page.inner_text("#failure-code") == "STEP_FAILED"
    assert page.locator(".stage.st-FAILED").count() == 1
    # only what a FAILED task allows: no Pause, no Resume
    shown = {b.get_attribute("data-command") for b in page.locator("button.cmd").all()}
    assert shown == {"cancel", "retry", "rollback"}, shown
    flower = str(page.get_attribute("a.button", "href"))  # Flower, searched for its stages
    assert flower.endswith(f"/tasks?name={bad}"), flower
    shot(page, tmp_path, "6-task-failed")

    r.delete(PREFIX + bad)
    page.evaluate("window.__sameDocument = 7")
    assert "OK" in confirm(page, "retry", "key fixed")
    page.wait_for_function(
        "document.querySelector('#task-status').textContent === 'COMPLETED'", timeout=60_000
    )
    assert page.locator("#failure").is_hidden()
    assert page.evaluate("window.__sameDocument") == 7
    page.wait_for_function("!document.querySelector('button.cmd-retry')")  # redrawn, no reload
    assert {b.get_attribute("data-command") for b in page.locator("button.cmd").all()} == {
        "rollback"}  # fmt: skip
    shot(page, tmp_path, "7-task-completed")


def test_a_tasks_flower_link_lists_that_tenants_stage_tasks_in_a_real_flower(
    browser, serve_app, worker, r, tmp_path, start_flower
):
    from deployer.settings import Settings
    from tests.helpers import FLOWER_AUTH as AUTH
    from tests.helpers import serve_flower

    flower = serve_flower(start_flower, {"FLOWER_BASIC_AUTH": ":".join(AUTH)})

    def flower_sees_events() -> bool:  # its event receiver connects after the HTTP server
        worker.send_task("deployer.submit_plan", [{"planId": "canary"}])  # rejected, cheap
        return bool(httpx.get(flower + "/api/tasks", auth=AUTH, timeout=5).json())

    wait_for(flower_sees_events, timeout=30, interval=0.3, what="flower receiving events")
    dashboard = serve_app(Settings(flower_url=flower))
    plan_id, tenant = unique("fl"), unique("flt")
    body = plan(plan_id, [bg_tenant(tenant), bg_tenant(unique("other"))])
    assert httpx.post(f"{dashboard}/api/v1/plans", json=body, timeout=30).status_code == 201
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED", what="done")

    context = browser.new_context(
        viewport={"width": 1280, "height": 800},
        http_credentials={"username": AUTH[0], "password": AUTH[1]},
    )
    try:
        page = context.new_page()
        page.goto(f"{dashboard}/plans/{plan_id}/tenants/{tenant}")
        with context.expect_page() as opened:
            page.click("a.button:has-text('Flower')")
        flower_page = opened.value
        flower_page.wait_for_selector(f"#tasks-table tbody tr:has-text('{tenant}')", timeout=30_000)
        rows = flower_page.locator("#tasks-table tbody tr")
        assert rows.count() >= 1 and all(
            tenant in rows.nth(i).inner_text() for i in range(rows.count())
        )
        path = tmp_path / "8-flower.png"
        flower_page.screenshot(path=str(path), full_page=True)
        print("screenshot:", path)
    finally:
        context.close()


def test_the_api_docs_render_from_local_files_only(page, api, tmp_path):
    outside: list[str] = []
    page.on(
        "request",
        lambda req: None if req.url.startswith(api) else outside.append(req.url),
    )
    page.goto(f"{api}/docs")
    page.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/api/v1/plans/{planId}/tasks" in p.replace("\u200b", "") for p in paths)
    assert outside == []  # no CDN: the page works on a host without internet
    shot(page, tmp_path, "9-docs")


def test_with_a_token_the_dashboard_and_docs_work_after_login_and_nothing_without(
    page, serve_app, worker, tmp_path
):
    """With a token configured, the page's files and the API description need it too; a
    browser that logged in (the cookie) loads them all, so the dashboard stays live."""
    from deployer.settings import Settings

    base = serve_app(Settings(api_token="full-token-x", api_read_token="read-token-x"))
    for path in ("/openapi.json", "/docs", "/static/app.js", "/static/swagger/swagger-ui.css"):
        res = httpx.get(base + path)
        assert (res.status_code, res.json()["code"]) == (401, "UNAUTHORIZED"), path
    refused: list[str] = []
    page.on("response", lambda res: refused.append(res.url) if res.status >= 400 else None)
    page.goto(f"{base}/login?token=read-token-x")  # redirected to the plans page
    page.wait_for_selector("#live.live.on")  # app.js ran and its event stream is open
    shot(page, tmp_path, "10-token-dashboard")
    page.goto(f"{base}/docs")
    page.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=30_000)
    assert refused == []


def commands(page: Any) -> set[str]:
    return {str(b.get_attribute("data-command")) for b in page.locator("#actions button.cmd").all()}


def test_the_strategy_panel_and_buttons_follow_the_rollout(page, api, r, tmp_path):
    """Strategy, budget, bake countdown and stop reason on the plan page; a button only
    where its command is legal now (Approve only while a wave awaits approval)."""
    plan_id = unique("dash-waves")
    tenants = [unique("dw") for _ in range(3)]
    strategy = {"canary": 1, "waves": {"type": "linear", "size": 1}, "bakeSeconds": 600,
                "approval": "first",
                "failureBudget": {"max": 1, "scope": "plan", "onExceed": "rollback"}}  # fmt: skip
    body = plan(plan_id, [bg_tenant(t) for t in tenants], strategy=strategy)
    assert httpx.post(f"{api}/api/v1/plans", json=body, timeout=30).status_code == 201
    key = f"deployer:plan:{plan_id}"
    wait_for(lambda: r.hget(key, "waveState") == "BAKING", timeout=30, what="wave 0 baking")

    page.goto(f"{api}/plans/{plan_id}")
    page.wait_for_selector("#live.on")
    spec = page.inner_text("#strategy")
    assert "600 s after each wave" in spec and "first" in spec
    assert "at most 1 failed per plan, then rollback" in spec
    assert page.inner_text("#budget") == "0 / 1 failed (plan, on exceed rollback)"
    page.wait_for_function("document.querySelector('#bake').textContent.includes('left')")
    first = page.inner_text("#bake")
    assert first.startswith(("9:", "10:")), first  # 600 s bake, counting down
    page.wait_for_function(f"document.querySelector('#bake').textContent !== {first!r}")
    assert page.inner_text("#wave-state") == "BAKING"
    # the canary is COMPLETED (roll it back), nothing FAILED (no retry), nothing awaits
    # approval (no approve), a wave bakes (promote); not paused (no resume)
    assert commands(page) == {"pause", "cancel", "rollback", "promote", "budget"}
    page.click(".wave-link[data-wave='1']")  # the waves table filters the tenant table
    page.wait_for_function(
        "[...document.querySelectorAll('#tasks tbody td.wave')].map(td => td.textContent)"
        ".join() === '1'"
    )
    shot(page, tmp_path, "10-strategy-baking")

    assert "OK" in confirm(page, "promote", "canary looks fine")
    page.wait_for_function("document.querySelector('#wave-state').textContent === "
                           "'AWAITING_APPROVAL'")  # fmt: skip
    page.wait_for_selector("#actions button.cmd-approve")
    assert "promote" not in commands(page) and "approve" in commands(page)
    assert page.get_attribute("button.cmd-approve", "data-wave") == "1"
    shot(page, tmp_path, "11-awaiting-approval")
    assert "OK" in confirm(page, "approve", "go")
    page.wait_for_function("document.querySelector('#wave-now').textContent === 'wave 1' && "
                           "document.querySelector('#wave-state').textContent === 'BAKING'",
                           timeout=60_000)  # fmt: skip
    assert "approve" not in commands(page)
    assert "approved: dashboard" in page.inner_text("#waves tr[data-wave='1']")

    page.click("button.cmd-budget")
    assert page.locator("#confirm-budget").is_visible()
    page.fill("#confirm-budget", "2")
    page.click("#confirm-yes")
    page.wait_for_function("document.querySelector('#budget').textContent.startsWith('0 / 2')")
    assert "OK" in confirm(page, "pause", "hold on")
    page.wait_for_function("document.querySelector('#plan-status').textContent === 'PAUSED'")
    page.wait_for_selector("#actions button.cmd-resume")
    assert "pause" not in commands(page) and "resume" in commands(page)
    shot(page, tmp_path, "12-paused")
    assert "OK" in confirm(page, "cancel", "done here")
    page.wait_for_function("document.querySelector('#plan-status').textContent === 'CANCELLED'")
    page.wait_for_function("document.querySelector('#stop-reason').textContent === "
                           "'plan cancelled'")  # fmt: skip
    assert commands(page) <= {"rollback"}
    shot(page, tmp_path, "13-cancelled")


def test_an_earlier_waves_exceeded_budget_is_named_on_the_plan_page(page, api, r, tmp_path):
    """Scope wave: the wave step judges a failed task's own wave. When that is an earlier
    wave than the current one, the page names it instead of reading "not exceeded"."""
    plan_id = unique("dash-budget")
    strategy = {"canary": 1, "waves": {"type": "linear", "size": 1}, "bakeSeconds": 600,
                "failureBudget": {"max": 0, "scope": "wave", "onExceed": "pause"}}  # fmt: skip
    body = plan(plan_id, [bg_tenant(unique("db")) for _ in range(3)], strategy=strategy)
    assert httpx.post(f"{api}/api/v1/plans", json=body, timeout=30).status_code == 201
    key = f"deployer:plan:{plan_id}"
    wait_for(lambda: r.hget(key, "waveState") == "BAKING", timeout=30, what="wave 0 baking")
    promoted = httpx.post(f"{api}/api/v1/plans/{plan_id}/promote", json={"reason": "go"},
                          timeout=30)  # fmt: skip
    assert promoted.status_code == 200, promoted.text
    wait_for(lambda: r.hget(key, "wave") == "1" and r.hget(key, "waveState") == "BAKING",
             timeout=30, what="wave 1 baking")  # fmt: skip
    page.goto(f"{api}/plans/{plan_id}")
    page.wait_for_selector("#live.on")
    assert page.inner_text("#budget") == "0 / 0 failed (wave, on exceed pause)"
    # what wave_step.lua records when a task of wave 0 fails while wave 1 runs
    now_ms = str(int(time.time() * 1000))
    r.hset(key, mapping={"budgetExceededWave": "0", "budgetExceededUsed": "1",
                         "budgetExceededMax": "0", "budgetExceededAt": now_ms})  # fmt: skip
    page.reload()
    page.wait_for_selector("#live.on")
    page.wait_for_function("document.querySelector('#budget').textContent.includes('wave 0')")
    assert page.inner_text("#budget") == (
        "0 / 0 failed (wave, on exceed pause) — exceeded in wave 0 (1 / 0)"
    )
    assert "err" in (page.get_attribute("#budget", "class") or "")
    shot(page, tmp_path, "14-budget-exceeded-earlier-wave")


def test_a_held_gate_shows_its_answer_on_the_plan_page(page, api, r, tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tasks.runtime import planner, settings

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer = b"waiting for QA sign-off"
            self.send_response(503)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # the process's settings and the planner's (made earlier: another test in this process may
    # have cleared the settings cache since), so the intake and the gate caller both know it
    held = {id(x): x for x in (settings(), planner().settings)}.values()
    for s in held:
        s.gates["dash-gate"] = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        plan_id = unique("dash-gate")
        body = plan(plan_id, [bg_tenant(unique("dg"))], strategy={"gate": "dash-gate"})
        assert httpx.post(f"{api}/api/v1/plans", json=body, timeout=30).status_code == 201
        wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "gateStatus") == "503",
                 timeout=30, what="the gate refused")  # fmt: skip
        page.goto(f"{api}/plans/{plan_id}")
        page.wait_for_function("document.querySelector('#gate').textContent.includes('held')")
        text = page.inner_text("#gate")
        assert "dash-gate: held — 503 “waiting for QA sign-off”" in text, text
        assert "asked again at" in text
        assert page.inner_text("#wave-state") == "AWAITING_GATE"
        assert "approve" not in commands(page) and "promote" not in commands(page)
        shot(page, tmp_path, "14-gate-held")
        assert httpx.post(f"{api}/api/v1/plans/{plan_id}/cancel", json={}).status_code == 200
    finally:
        for s in held:
            s.gates.pop("dash-gate", None)
        server.shutdown()
