"""Secrets never reach logs, events, rejections or status; URL passwords are never printed."""

from __future__ import annotations

import json
import uuid

import pytest
from kombu import Connection, Exchange

from deployer.client import DeployerClient
from deployer.fleet import Behaviour, Fleet
from deployer.redact import SECRET_FIELDS
from deployer.settings import DEFAULT_INSTANCES, Settings, redact_url
from tests.helpers import bg_tenant, plan, unique, wait_for

pytestmark = pytest.mark.e2e

SECRET = "s3cr3t-" + uuid.uuid4().hex[:8]


def _with_secrets(cfg: dict) -> dict:
    for name in ("password", "secret", "token", "apiKey", "authorization", "credentials"):
        cfg[name] = f"{SECRET}-{name}"
    cfg["networkEndpoints"][0]["password"] = SECRET
    return cfg


def _everything_visible(r, plan_ids: list[str]) -> str:
    parts = [json.dumps(r.xrange("deployer:events")), json.dumps(r.xrange("deployer:rejections"))]
    for p in plan_ids:
        parts.append(json.dumps(r.hgetall(f"deployer:plan:{p}")))
        for tid in r.lrange(f"deployer:plan:{p}:tenants", 0, -1):
            parts.append(json.dumps(r.hgetall(f"deployer:task:{tid}")))
    return "\n".join(parts)


def test_secret_fields_never_appear_in_logs_events_rejections_or_status(spawn_worker, r):
    assert {"password", "secret", "token", "apikey", "authorization", "credentials"} <= {
        f.lower() for f in SECRET_FIELDS
    }
    worker = spawn_worker("secrets")
    good, bad = unique(), unique()
    client = DeployerClient()
    # secret-named fields are unknown to the plan format: a plan carrying them is refused
    # (rejections name the field, never its value); the plain plan completes
    client.submit(plan(good, [bg_tenant(f"{good}-t0")]))
    client.submit(plan(bad, [_with_secrets(bg_tenant(f"{bad}-t0"))]))  # rejected
    # ... and a malformed message carrying secrets in its body.
    with Connection(Settings().broker_url) as conn:
        conn.Producer().publish(
            json.dumps({"password": SECRET}),
            exchange=Exchange("deployer.control", type="direct"),
            routing_key="deployer.control",
            headers={"task": "deployer.submit_plan", "id": str(uuid.uuid4())},
            content_type="application/json",
            content_encoding="utf-8",
        )
    wait_for(lambda: r.hget(f"deployer:plan:{good}", "status") == "COMPLETED", what="good plan")
    rejected = wait_for(lambda: client.rejection(bad), what="bad plan rejected")
    assert "tenants[0].password" in rejected["errors"]
    wait_for(lambda: "malformed message dropped" in worker.log.read_text(), what="drop logged")
    assert SECRET not in worker.log.read_text()
    assert SECRET not in _everything_visible(r, [good, bad])


@pytest.mark.faults
def test_a_password_protected_redis_works_and_its_password_is_never_printed(
    redis_server, supervisor
):
    password = "pw-" + uuid.uuid4().hex[:10]
    server = redis_server("auth", password=password)
    s = Settings()
    free = {svc: ["127.0.0.1:0"] * len(a) for svc, a in DEFAULT_INSTANCES.items()}
    fleet = Fleet(free, server.url, s.key_prefix, s.pubsub_topic, s.verify_path, Behaviour())
    fleet.start()
    try:
        for name in ("DEPLOYER_BROKER_URL", "DEPLOYER_REDIS_URL", "DEPLOYER_TARGET_REDIS_URL"):
            supervisor.env[name] = server.url
        supervisor.env["DEPLOYER_INSTANCES"] = json.dumps(fleet.addresses)
        supervisor.start("w1")
        plan_id = unique()
        DeployerClient(Settings(broker_url=server.url)).submit(
            plan(plan_id, [bg_tenant(f"{plan_id}-t0")])
        )
        r = server.client()
        wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED", what="done")
        assert password not in supervisor.logs_text()
        assert password not in redact_url(server.url)
    finally:
        fleet.stop()
