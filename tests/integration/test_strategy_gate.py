"""Gate webhooks: a real loopback HTTP server answering 500 holds the wave, 2xx
releases it; the plan names the gate, the operator's settings hold its URL."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import bg_tenant, plan, unique, wait_for


class Gate:
    def __init__(self) -> None:
        self.status = 500
        self.calls: list[dict] = []
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                gate.calls.append(json.loads(body))
                self.send_response(gate.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/confirm"


@pytest.fixture()
def gate(worker):
    from tasks.runtime import settings

    s = settings()  # the one Settings object the in-process worker's planner reads
    g = Gate()
    old_recheck = s.gate_recheck_seconds
    s.gates["qa-gate"] = g.url
    s.gate_recheck_seconds = 0.3
    yield g
    s.gates.pop("qa-gate", None)
    s.gate_recheck_seconds = old_recheck
    g.server.shutdown()


def test_a_gate_answering_500_holds_the_wave_and_2xx_releases_it(worker, r, gate):
    tenants = [unique("gt") for _ in range(2)]
    plan_id = unique("gate")
    payload = plan(plan_id, [bg_tenant(t) for t in tenants],
                   strategy={"canary": 1, "gate": "qa-gate"})  # fmt: skip
    worker.send_task("deployer.submit_plan", [payload])
    key = f"deployer:plan:{plan_id}"
    wait_for(lambda: len([c for c in gate.calls if c["planId"] == plan_id]) >= 3, timeout=30,
             what="the gate asked again after saying no")  # fmt: skip
    assert r.hget(key, "waveState") == "AWAITING_GATE"
    for t in tenants:  # held: nothing sent
        task = r.hgetall(f"deployer:task:{r.get(f'deployer:tenant:{t}')}")
        assert task["status"] == "PENDING" and "dispatchedAt" not in task

    gate.status = 204
    wait_for(lambda: r.hget(key, "status") == "COMPLETED", timeout=30, what="plan COMPLETED")
    waves = [c["wave"] for c in gate.calls if c["planId"] == plan_id]
    assert set(waves) == {0, 1} and waves[-1] == 1
    passed = [f["wave"] for _, f in r.xrange("deployer:events")
              if f.get("planId") == plan_id and f["type"] == "WAVE_GATE_PASSED"]  # fmt: skip
    assert passed == ["0", "1"]


def test_a_plan_naming_an_unconfigured_gate_is_rejected(worker, r):
    plan_id = unique("nogate")
    since = f"{int(time.time() * 1000) - 1000}-0"
    payload = plan(plan_id, [bg_tenant(unique("ng"))], strategy={"gate": "nobody-configured"})
    worker.send_task("deployer.submit_plan", [payload])
    found = wait_for(
        lambda: [
            f for _, f in r.xrange("deployer:rejections", min=since) if f["planId"] == plan_id
        ],  # fmt: skip
        what="rejection",
    )
    assert "strategy.gate" in found[0]["errors"]
    assert not r.exists(f"deployer:plan:{plan_id}")
