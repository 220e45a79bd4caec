"""Flower as an operator sees it: readable stage names, labels to filter on, no secrets,
loopback by default and never exposed without authentication."""

from __future__ import annotations

import ast
from typing import Any

import httpx

from tests.helpers import FLOWER_AUTH, bg_tenant, free_port, plan, serve_flower, unique, wait_for

AUTH = FLOWER_AUTH


def test_flower_refuses_to_listen_beyond_loopback_without_auth(start_flower):
    proc = start_flower(f"--port={free_port()}", env={"FLOWER_ADDRESS": "0.0.0.0"})
    assert proc.wait(timeout=30) != 0
    out = proc.log.read_text()
    assert "refusing to start Flower on 0.0.0.0 without authentication" in out
    assert "FLOWER_BASIC_AUTH" in out


def test_flower_shows_stage_tasks_by_name_with_labels_and_no_secrets(worker, start_flower, r):
    base = serve_flower(start_flower, {"FLOWER_BASIC_AUTH": ":".join(AUTH)})
    assert httpx.get(base + "/api/tasks", timeout=5).status_code == 401  # auth is enforced

    def flower_sees_events() -> bool:  # its event receiver connects after the HTTP server
        worker.send_task("deployer.submit_plan", [{"planId": "canary"}])  # rejected, cheap
        return bool(httpx.get(base + "/api/tasks", auth=AUTH, timeout=5).json())

    wait_for(flower_sees_events, timeout=30, interval=0.3, what="flower receiving events")
    plan_id = unique()
    tenants = [bg_tenant(f"{plan_id}-t{i}") for i in range(2)]
    worker.send_task("deployer.submit_plan", [plan(plan_id, tenants)])
    # secret-named fields are unknown to the plan format: refused, and never shown either
    secret = [bg_tenant(f"{plan_id}-s{i}", password="hunter2", apiKey="k-123") for i in range(2)]
    worker.send_task("deployer.submit_plan", [plan(unique(), secret)])
    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
        timeout=30,
        what="plan done",
    )

    def stage_tasks() -> list[dict[str, Any]]:
        tasks = httpx.get(base + "/api/tasks", auth=AUTH, timeout=5).json()
        return [t for t in tasks.values() if plan_id in (t.get("kwargs") or "")]

    seen = wait_for(lambda: len(stage_tasks()) >= 2 and stage_tasks(), what="stage tasks")
    names = sorted(t["name"] for t in seen)
    assert names == [f"stage blue-green-gateway · {plan_id}-t{i}" for i in range(2)]
    for t in seen:
        tags = ast.literal_eval(t["kwargs"])
        assert tags["planId"] == plan_id and tags["stage"] == "blue-green-gateway"
        assert t["state"] == "SUCCESS"
        assert "last stage done: task finished" in t["result"]  # said in words, not None
    everything = httpx.get(base + "/api/tasks", auth=AUTH, timeout=5).text
    assert "hunter2" not in everything and "k-123" not in everything
    assert f"'planId': '{plan_id}', 'tenants': 2" in everything  # the submission, summarised
