"""The API's rollback takes `strict` like the CLI and the task (tests/integration/
test_rollback_unrestored.py has the rest): refused 409 ROLLBACK_INCOMPLETE, else the answer
names the services it cannot restore."""

from __future__ import annotations

import httpx

from tests.helpers import unique
from tests.integration.test_rollback_unrestored import NO_TRUNK, deployed


def test_the_api_takes_strict_too(api, plan_file):
    tenant = unique("t")
    plan_id = deployed(plan_file, [tenant])
    url = f"{api}/api/v1/plans/{plan_id}/tenants/{tenant}/rollback"
    refused = httpx.post(url, json={"strict": True}, timeout=30)
    assert refused.status_code == 409 and refused.json()["code"] == "ROLLBACK_INCOMPLETE"
    done = httpx.post(url, json={}, timeout=30).json()
    assert done["ok"] and done["unrestored"] == [
        {"tenantId": tenant, "service": "asbc-gateway", "reason": NO_TRUNK}
    ]
