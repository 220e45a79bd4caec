"""The rollout written by hand with plain Celery: the task bodies deployer is measured against.

Same stages, bodies and checks as deployer's demo plan — ASBC POST, portal POST, then for
blue-green-gateway and ob-service a MULTI/EXEC HSET of field + `metadata`, the same PUBLISH,
and GETs of every instance until each reports the version, re-polled with
`self.retry(countdown=0.25)` — and none of deployer's guarantees: no lease, no fencing, no
checkpoint, no events, no pause/cancel.

Plain functions of `(self, ...)`, imported by nothing of deployer's: `handwritten_app.py`
registers them on a plain Celery app (the figure the issue's goal is about: as a user would
run it) and `handwritten_tasks.py` on deployer's own app (the older second figure).
"""

from __future__ import annotations

import json
import os
import random
import time
from functools import lru_cache
from typing import Any

import httpx
import redis

TOPIC = "icc_ai_ops_srv:tenant_config:topic"
PREFIX = "icc_ai_ops_srv:tenant_config:"
#: The list the last stage pushes its end time to (the driver waits on its length).
DONE = "bench:hand:done"


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["DEPLOYER_REDIS_URL"], decode_responses=True)


@lru_cache(maxsize=1)
def _http() -> httpx.Client:
    return httpx.Client(timeout=5.0, limits=httpx.Limits(max_keepalive_connections=20))


def post(self: Any, tenant: dict[str, Any], stage: str) -> dict[str, Any]:
    """POST the stage's body to one instance (RANDOM, as deployer's default) and check it."""
    s = tenant["stages"][stage]
    body = dict(s["body"])
    if s.get("timestampField"):
        body[s["timestampField"]] = str(int(time.time() * 1000))
    url = f"http://{random.choice(s['instances'])}{s['path']}"
    answer = _http().post(url, json=body, headers=s["headers"])
    data = answer.json()
    for path, want in s.get("expectJson", {}).items():  # "$.code" only, in the demo plan
        if data.get(path.removeprefix("$.")) != want:
            raise RuntimeError(f"{stage} answered {data}")
    return tenant


def write_verify(
    self: Any, tenant: dict[str, Any], stage: str, written: bool = False
) -> dict[str, Any]:
    """Write field + metadata atomically and publish once, then poll every instance."""
    s, tid, version = tenant["stages"][stage], tenant["tenantId"], tenant["version"]
    if not written:
        pipe = _redis().pipeline(transaction=True)
        pipe.hset(PREFIX + tid, mapping={s["field"]: s["value"], "metadata": s["metadata"]})
        pipe.execute()
        message = {"tenantId": tid, "appName": s["appName"], "version": version,
                   "timestamp": int(time.time() * 1000)}  # fmt: skip
        _redis().publish(TOPIC, json.dumps(message, separators=(",", ":")))
    for inst in s["instances"]:
        got = _http().get(f"http://{inst}{s['verifyPath']}").json().get("version")
        if got != version:
            raise self.retry(args=(tenant, stage, True), countdown=0.25)
    if stage == next(reversed(tenant["stages"])):
        # The rollout's end, recorded by its last stage with one command (as deployer's last
        # stage records `endedAt` in its end-of-stage script): no extra task per tenant.
        _redis().rpush(DONE, time.time())
    return tenant
