"""`deployer diff` names the nested field that changed, and a regenerated timestamp is
volatile, not a change.

Before: the text cut each value to 60 characters, so a change past them (the eighth route of
a tenant's gateway config) showed two identical-looking prefixes; and ob-campaign always
read "changed", its `timestamp` being set anew by every run.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from deployer.cli import app
from deployer.diff import would_write
from deployer.models import TenantConfig
from deployer.settings import get_settings
from stages.factory import forward_stages
from tests.helpers import plan, unique

runner = CliRunner()
PREFIX = "icc_ai_ops_srv:tenant_config:"
SERVICES = ["blue-green-gateway", "ob-service"]


def gateway_tenant(tenant_id: str, last_target: str) -> dict:
    routes = [
        {"key": f"r{i}", "sourceIp": f"10.0.0.{i}", "targetDomain": f"gw-{i}.green.example"}
        for i in range(7)
    ]
    routes.append({"key": "r7", "sourceIp": "10.0.0.7", "targetDomain": last_target})
    return {"tenantId": tenant_id, "planVersion": 20, "deployUnitName": "green",
            "networkEndpoints": routes, "serviceNames": SERVICES}  # fmt: skip


def live(r, config: dict, **older: object) -> None:
    """Store what a run of `config` wrote (an earlier run: another timestamp)."""
    model = TenantConfig.model_validate(config)
    writes = would_write(model, forward_stages(model, get_settings()))
    ob = json.loads(writes["ob-campaign"])
    ob.update(older)
    writes["ob-campaign"] = json.dumps(ob, separators=(",", ":"))
    r.hset(PREFIX + config["tenantId"], mapping={k: v for k, v in writes.items() if v})


def test_diff_shows_the_one_nested_field_that_changed_and_a_timestamp_as_volatile(r, plan_file):
    moved, same = unique("t"), unique("t")
    live(r, gateway_tenant(moved, "gw-7.blue.example"), timestamp=1)
    live(r, gateway_tenant(same, "gw-7.green.example"), timestamp=1)
    wanted = [gateway_tenant(t, "gw-7.green.example") for t in (moved, same)]
    path = plan_file(plan(unique(), wanted))

    text = runner.invoke(app, ["diff", path], catch_exceptions=False)
    assert text.exit_code == 0, text.output
    lines = [line.strip() for line in text.stdout.splitlines()]
    at = lines.index("~ icc-bg-gateway")
    assert lines[at + 1] == '$.routes[7].targetUri: "gw-7.blue.example" → "gw-7.green.example"'
    assert not lines[at + 2].startswith("$.")  # that one nested field, nothing else
    volatile = "· ob-campaign: only $.timestamp differs (volatile: set anew by every run)"
    assert lines.count(volatile) == 2  # both tenants: not a change
    assert "1 tenant(s) change, 1 unchanged" in text.stdout

    out = json.loads(runner.invoke(app, ["diff", path, "--json"]).stdout)
    by = {t["tenantId"]: t for t in out["tenants"]}
    changed = {c["field"]: c for c in by[moved]["changes"]}
    assert changed["icc-bg-gateway"]["change"] == "changed"
    assert (changed["ob-campaign"]["change"], changed["ob-campaign"]["volatile"]) == (
        "volatile",
        ["$.timestamp"],
    )
    assert [c["change"] for c in by[same]["changes"]] == ["volatile"]
    assert out["summary"]["changing"] == 1 and out["summary"]["unchanged"] == 1
