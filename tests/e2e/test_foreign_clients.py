"""Messages built without deployer's code (raw kombu; celery-node's exact envelope) are
accepted and run by a real `celery worker`."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import redis
from kombu import Connection

from tests.helpers import bg_tenant, plan, unique, wait_for, worker_env

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def fleet_worker(spawn_worker):
    """A real worker subprocess; DEPLOYER_INSTANCES points it at the session fleet."""
    spawn_worker("foreign", concurrency=2)


def completed(r: redis.Redis, plan_id: str) -> bool:
    return r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED"


def test_raw_kombu_and_celery_node_envelopes_are_accepted_and_run(fleet_worker, redis_url, r):
    # 1. raw kombu, Celery protocol 2: headers exactly as celery-node sends them.
    by_kombu = unique()
    with Connection(redis_url) as conn:
        conn.Producer().publish(
            json.dumps([[plan(by_kombu, [bg_tenant(f"{by_kombu}-t")])], {}, {}]),
            exchange="",
            routing_key="deployer.control",
            content_type="application/json",
            content_encoding="utf-8",
            headers={"lang": "js", "task": "deployer.submit_plan", "id": str(uuid.uuid4())},
        )
    # 2. no library at all: the JSON envelope celery-node's Redis broker LPUSHes, plan as text.
    by_lpush = unique()
    body = json.dumps([[json.dumps(plan(by_lpush, [bg_tenant(f"{by_lpush}-t")]))], {}, {}])
    r.lpush(
        "deployer.control",
        json.dumps(
            {
                "body": base64.b64encode(body.encode()).decode(),
                "headers": {"lang": "js", "task": "deployer.submit_plan", "id": str(uuid.uuid4())},
                "content-type": "application/json",
                "content-encoding": "utf-8",
                "properties": {
                    "body_encoding": "base64",
                    "delivery_info": {"exchange": "", "routing_key": "deployer.control"},
                    "delivery_mode": 2,
                    "delivery_tag": str(uuid.uuid4()),
                },
            }
        ),
    )
    # Generous: the stages queue may still hold an earlier e2e test's waiting tenants, and a
    # loaded CI machine took more than 30 s once; this checks acceptance, not speed.
    wait_for(lambda: completed(r, by_kombu) and completed(r, by_lpush), timeout=120, what="both")


NODE_SCRIPT = ROOT / "docs" / "examples" / "submit.js"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_documented_node_example_submits_a_plan_that_completes(fleet_worker, redis_url, r):
    probe = subprocess.run(
        ["node", "-e", "require.resolve('celery-node')"], cwd=NODE_SCRIPT.parent, check=False
    )
    if probe.returncode != 0:
        pytest.skip("celery-node not installed (cd docs/examples && npm install)")
    plan_id = unique()
    plan_file = NODE_SCRIPT.parent / f".{plan_id}.json"
    plan_file.write_text(
        json.dumps(plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(3)]))
    )
    try:
        out = subprocess.run(
            ["node", str(NODE_SCRIPT), str(plan_file)],
            env=worker_env(DEPLOYER_BROKER_URL=redis_url, DEPLOYER_REDIS_URL=redis_url),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        plan_file.unlink()
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"plan {plan_id}: COMPLETED" in out.stdout
    assert completed(r, plan_id)
