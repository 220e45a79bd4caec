"""`deployer metrics` serves what an operator graphs, scraped over real HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, bg_tenant, plan, start_on_free_port, unique, wait_for, worker_env

DEPLOYER = Path(sys.executable).parent / "deployer"


@pytest.fixture()
def metrics_url() -> Iterator[str]:
    def start(port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(DEPLOYER), "metrics", "--port", str(port)],
            cwd=ROOT,
            env=worker_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def up(port: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    proc, port = start_on_free_port(start, up, timeout=20)
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # reaps it and closes its pipe


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_show_tasks_per_plan_stage_durations_and_rollbacks(worker, r, metrics_url):
    plan_id = unique()
    worker.send_task(
        "deployer.submit_plan", [plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(3)])]
    )
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED", what="done")
    m = scrape(metrics_url)
    assert value(m, "deployer_plan_tasks", plan_id=plan_id, status="COMPLETED") == 3
    assert value(m, "deployer_plan_tasks", plan_id=plan_id, status="FAILED") == 0
    assert value(m, "deployer_plan_info", plan_id=plan_id, status="COMPLETED") == 1
    assert value(m, "deployer_stage_duration_seconds_count", stage="blue-green-gateway") >= 3
    assert value(m, "deployer_task_transitions_total", status="COMPLETED") >= 3
    assert value(m, "deployer_inflight_tasks") >= 0
    assert (("deployer_lease_conflicts_total", frozenset({("plan_id", plan_id)}))) in m

    worker.send_task("deployer.rollback", [{"planId": plan_id}], {"by": "test"})
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "ROLLED_BACK", what="back")
    wait_for(
        lambda: value(scrape(metrics_url), "deployer_rollbacks_total", outcome="rolled_back") >= 3,
        what="rollbacks counted",
    )
    m = scrape(metrics_url)
    assert value(m, "deployer_plan_tasks", plan_id=plan_id, status="ROLLED_BACK") == 3
    assert value(m, "deployer_rollbacks_total", outcome="started") >= 3
