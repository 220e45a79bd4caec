"""`deployer diff` / `submit --dry-run`: exact per-field changes against the live
hashes, versions up/down/same, tenants another plan owns, the wave plan; writes nothing."""

from __future__ import annotations

import json

import redis
from typer.testing import CliRunner

from deployer.cli import app
from deployer.diff import would_write
from deployer.models import TenantConfig
from deployer.settings import get_settings
from stages.factory import forward_stages
from tests.helpers import bg_tenant, plan, task_rows, unique, wait_for

PREFIX = "icc_ai_ops_srv:tenant_config:"
runner = CliRunner()


#: Written every second by the live session worker's heartbeat thread, whatever a diff does.
LIVENESS = (b"deployer:worker:", b"deployer:workers", b"deployer:worker-holds:")


def snapshot(url: str) -> dict[bytes, bytes | None]:
    """Every key of the test database (state and target alike) and its serialized value,
    but for the worker heartbeats."""
    raw = redis.Redis.from_url(url)
    return {k: raw.dump(k) for k in sorted(raw.scan_iter(count=1000)) if not k.startswith(LIVENESS)}


def test_diff_shows_exact_changes_owners_and_waves_and_writes_nothing(r, redis_url, tmp_path):
    settings = get_settings()
    names = ("up", "same", "down", "new", "nover", "own")
    up, same, down, new, unversioned, owned = (unique(f"df-{n}") for n in names)
    tenants = [bg_tenant(up), bg_tenant(same), bg_tenant(down), bg_tenant(new),
               bg_tenant(unversioned, version=None), bg_tenant(owned)]  # fmt: skip
    writes = {
        t["tenantId"]: would_write(
            TenantConfig.model_validate(t),
            forward_stages(TenantConfig.model_validate(t), settings),
        )
        for t in tenants
    }
    old_bg = '{"tenantId":"x","routes":[]}'
    r.hset(PREFIX + up, mapping={"icc-bg-gateway": old_bg, "metadata": '{"version":19}'})
    r.hset(PREFIX + same, mapping={k: v for k, v in writes[same].items() if v is not None})
    r.hset(PREFIX + down, mapping={"icc-bg-gateway": old_bg, "metadata": '{"version":25}'})
    r.hset(PREFIX + unversioned, mapping={"icc-bg-gateway": old_bg, "metadata": '{"version":3}'})
    r.hset(PREFIX + owned, "metadata", '{"version":19}')
    # another plan holds `owned` (stored, not started: still PENDING)
    from deployer.state.store import Store

    other = unique("other")
    store = Store(r, settings)
    assert store.create_plan(*task_rows(plan(other, [bg_tenant(owned)]), settings), 2, "o-")

    plan_id = unique("diff")
    payload = plan(plan_id, tenants, strategy={"canary": [new], "waves": {"type": "linear",
                                                                          "size": 2}})  # fmt: skip
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(payload))

    # Other tests' plans may still be moved on by the session worker (a wave step's due
    # time, a reconciler's re-drive): wait for that, and take the first of a few rounds in
    # which nothing else wrote. A diff that wrote would write in every round.
    # A plan whose gate keeps refusing is re-checked for ever: wait only until no step is due
    # within the next few seconds (scores are epoch ms), not until no plan waits at all.
    def quiet_for_a_while() -> bool:
        soon = (r.time()[0] + 5) * 1000
        return not r.zrangebyscore("deployer:plan-timers", "-inf", soon)

    wait_for(quiet_for_a_while, timeout=30, what="no wave step due soon")
    for _ in range(8):
        before = snapshot(redis_url)
        out = runner.invoke(app, ["diff", str(path), "--json"], catch_exceptions=False)
        dry = runner.invoke(app, ["submit", str(path), "--dry-run", "--json"],
                            catch_exceptions=False)  # fmt: skip
        text = runner.invoke(app, ["diff", str(path)], catch_exceptions=False)
        if snapshot(redis_url) == before:
            break
    else:
        raise AssertionError("every key before and after a diff: never identical")
    assert out.exit_code == dry.exit_code == text.exit_code == 0, out.output
    d = json.loads(out.output)
    assert json.loads(dry.output)["diff"]["tenants"] == d["tenants"]
    by = {t["tenantId"]: t for t in d["tenants"]}

    new_bg = writes[up]["icc-bg-gateway"]
    assert by[up]["changes"] == [
        {"field": "icc-bg-gateway", "change": "changed", "before": old_bg, "after": new_bg},
        {"field": "metadata", "change": "changed", "before": '{"version":19}',
         "after": '{"version":20}'},
    ]  # fmt: skip
    assert by[up]["version"] == {"before": 19, "after": 20, "change": "up"}
    assert by[same]["changes"] == [] and by[same]["version"]["change"] == "same"
    assert by[down]["version"] == {"before": 25, "after": 20, "change": "down"}
    assert by[new]["changes"] == [
        {"field": "icc-bg-gateway", "change": "added", "after": writes[new]["icc-bg-gateway"]},
        {"field": "metadata", "change": "added", "after": '{"version":20}'},
    ]
    assert by[new]["version"]["change"] == "new"
    assert {"field": "metadata", "change": "removed", "before": '{"version":3}'} in by[unversioned][
        "changes"
    ]
    assert by[unversioned]["version"]["change"] == "none"
    assert by[owned]["otherPlan"] == {"planId": other, "taskStatus": "PENDING",
                                      "running": True, "newer": False}  # fmt: skip
    assert all("otherPlan" not in by[t] for t in (up, same, down, new, unversioned))
    assert (d["planExists"], d["submit"]) == (False, "create")
    assert d["summary"] == {"tenants": 6, "changing": 5, "unchanged": 1, "ownedElsewhere": 1}
    assert [w["tenants"] for w in d["waves"]] == [[new], [up, same], [down, unversioned],
                                                  [owned]]  # fmt: skip
    assert "version 25 → 20 (down)" in text.output and f"plan {other}" in text.output


def test_diff_refuses_exactly_what_submit_refuses(r, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(plan(unique(), [bg_tenant("a")], strategy={"canary": ["zz"]})))
    out = runner.invoke(app, ["diff", str(path), "--json"])
    assert out.exit_code == 2
    body = json.loads(out.output)
    assert body["code"] == "PLAN_INVALID"
    assert {"field": "strategy.canary[0]", "reason": "zz is not in the plan"} in body["errors"]
