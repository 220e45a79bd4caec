"""Retention (deployer/retention.py) against a real Redis and a real archive (SQLite and
PostgreSQL): finished plans leave Redis for the archive, each tenant's newest task stays,
a live plan never moves, and archiving twice or after a crash duplicates nothing."""

from __future__ import annotations

from typing import Any

import pytest

from deployer.models import task_id_for
from deployer.retention import Retention
from deployer.settings import get_settings
from deployer.state import keys
from tests.helpers import bg_tenant, plan, unique, wait_for


def run_plan(worker: Any, r: Any, tenants: list[str], version: int) -> str:
    plan_id = unique()
    body = plan(plan_id, [bg_tenant(t, version=version, prev_version=version - 1) for t in tenants])
    worker.send_task("deployer.submit_plan", [body])
    wait_for(lambda: r.hget(keys.plan(plan_id), "status") == "COMPLETED", timeout=60,
             what=f"plan {plan_id} COMPLETED")  # fmt: skip
    return plan_id


def plan_keys(r: Any, plan_id: str) -> list[str]:
    return [k for k in r.scan_iter(f"deployer:plan:{plan_id}*", count=1000)]


def test_a_finished_plan_leaves_redis_for_the_archive_but_each_tenants_newest_task_stays(
    worker, r, archive
):
    tenants = [unique("t") for _ in range(3)]
    first = run_plan(worker, r, tenants, 21)
    second = run_plan(worker, r, tenants, 22)
    retention = Retention(r, get_settings(), archive)
    report = retention.run_pass(older_than=0, only=[first, second])
    assert first in report.archived and second in report.archived
    # the first plan is gone whole: no task of it is any tenant's newest
    assert plan_keys(r, first) == []
    assert not r.exists(keys.events_plan(first))
    assert not any(r.exists(keys.task(task_id_for(first, t))) for t in tenants)
    assert r.zscore(keys.PLANS, first) is None
    # the second keeps its tasks (each its tenant's newest) and a small plan hash, marked
    for t in tenants:
        assert r.exists(keys.task(task_id_for(second, t)))
    assert r.hget(keys.plan(second), "archivedAt")
    assert not r.exists(keys.events_plan(second))
    # the archive holds both, every task and event
    row = archive.plan(first)
    assert row["status"] == "COMPLETED" and row["total"] == 3
    assert archive.task_count(first) == 3
    task = archive.task(task_id_for(first, tenants[0]))
    assert task["plan_version"] == 21 and task["status"] == "COMPLETED"
    assert task["run_kind"] == "FORWARD"
    assert [s["type"] for s in task["stages"]][:1] and any(
        s.get("stage") == "blue-green-gateway" for s in task["stages"]
    )
    events = list(archive.iter_events(first))
    assert events[0]["type"] == "PLAN_CREATED"
    assert "PLAN_COMPLETED" in {e["type"] for e in events}
    history = archive.history(tenants[0])
    assert [h["plan_id"] for h in history] == [second, first]
    assert [h["plan_version"] for h in history] == [22, 21]


def test_a_third_plan_lets_the_second_go_and_archiving_again_duplicates_nothing(worker, r, archive):
    tenants = [unique("t") for _ in range(2)]
    first = run_plan(worker, r, tenants, 31)
    retention = Retention(r, get_settings(), archive)
    retention.run_pass(older_than=0, only=[first])
    counts = archive.counts()
    # nothing changed: the kept plan is not archived again
    again = retention.run_pass(older_than=0, only=[first])
    assert first not in again.archived and archive.counts() == counts
    second = run_plan(worker, r, tenants, 32)
    retention.run_pass(older_than=0, only=[first, second])
    assert plan_keys(r, first) == []
    assert r.hget(keys.plan(second), "archivedAt")
    assert archive.task_count(first) == 2 and archive.task_count(second) == 2


def test_a_plan_that_is_not_finished_or_is_recent_is_never_archived(worker, r, archive):
    tenant = unique("t")
    done = run_plan(worker, r, [tenant], 41)
    retention = Retention(r, get_settings(), archive)
    assert done not in retention.due_plans()  # a week by default
    r.hset(keys.plan(done), "job", "ROLLBACK")  # a plan command in progress
    assert done not in retention.due_plans(older_than=0)
    r.hdel(keys.plan(done), "job")
    r.zadd(keys.PLAN_TIMERS, {done: 1})  # a due timer
    assert done not in retention.due_plans(older_than=0)
    r.zrem(keys.PLAN_TIMERS, done)
    r.hset(keys.plan(done), "status", "PAUSED")
    assert done not in retention.due_plans(older_than=0)
    r.hset(keys.plan(done), "status", "COMPLETED")
    assert done in retention.due_plans(older_than=0)


def test_a_plan_that_changed_after_it_was_copied_is_left_live(worker, r, archive):
    tenants = [unique("t")]
    first = run_plan(worker, r, tenants, 51)
    run_plan(worker, r, tenants, 52)
    retention = Retention(r, get_settings(), archive)
    original = retention.archive.write

    def write_then_touch(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        if kwargs.get("plan"):
            r.hset(keys.plan(first), "updatedAt", int(r.hget(keys.plan(first), "updatedAt")) + 1)

    retention.archive.write = write_then_touch  # type: ignore[method-assign]
    assert retention.archive_plan(first) == "CHANGED"
    assert r.exists(keys.task(task_id_for(first, tenants[0])))
    retention.archive.write = original  # type: ignore[method-assign]
    assert retention.archive_plan(first) == "DONE"
    assert plan_keys(r, first) == []


def test_removal_interrupted_after_the_mark_is_finished_by_the_next_pass(worker, r, archive):
    tenants = [unique("t") for _ in range(5)]
    first = run_plan(worker, r, tenants, 61)
    run_plan(worker, r, tenants, 62)
    settings = get_settings().model_copy(update={"retention_slice": 2})
    retention = Retention(r, settings, archive)
    calls = []
    drop = retention._drop

    def dies_after_one_slice(**kw: Any) -> Any:
        if calls:
            raise ConnectionError("worker killed")
        calls.append(1)
        return drop(**kw)

    retention._drop = dies_after_one_slice  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        retention.archive_plan(first)
    assert r.hget(keys.plan(first), "archiving") == "1"
    assert r.llen(keys.plan_tenants(first)) == 3  # one slice of two went
    retention._drop = drop  # type: ignore[method-assign]
    assert first in retention.run_pass(older_than=0, only=[first]).archived
    assert plan_keys(r, first) == []
    assert archive.task_count(first) == 5


def test_the_schema_head_the_code_skips_alembic_for_is_alembics_head():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from deployer.archive import db

    cfg = Config()
    cfg.set_main_option("script_location", db.SCRIPT_LOCATION)
    assert ScriptDirectory.from_config(cfg).get_current_head() == db.HEAD


def test_the_cli_archives_a_plan_now_lists_it_and_exports_it(worker, r):
    """`deployer archive --plan P`, `plans --status`, `archive export` on the session's
    archive (DEPLOYER_ARCHIVE_URL, tests/conftest.py)."""
    import json

    from tests.helpers import run_cli

    tenants = [unique("t") for _ in range(2)]
    first = run_plan(worker, r, tenants, 81)
    run_plan(worker, r, tenants, 82)
    dry = run_cli("archive", "--older-than", "0", "--plan", first, "--dry-run", "--json")
    assert json.loads(dry.output)["archived"] == [first] and r.exists(keys.plan(first))
    done = json.loads(run_cli("archive", "--older-than", "0", "--plan", first, "--json").output)
    assert done["archived"] == [first] and done["tasksRemoved"] == 2
    assert not r.exists(keys.plan(first))
    listed = json.loads(run_cli("plans", "--status", "COMPLETED", "--since", "1h", "--limit",
                                "500", "--json").output)  # fmt: skip
    assert any(p["planId"] == first and p["archived"] for p in listed["items"])
    exported = run_cli("archive", "export", "--plan", first)
    doc = json.loads(exported.stdout)
    assert doc["plan"]["planId"] == first and len(doc["tasks"]) == 2
    assert doc["events"][0]["type"] == "PLAN_CREATED"
    assert {t["planVersion"] for t in doc["tasks"]} == {81}
    tenant_events = run_cli("events", "--tenant", tenants[0])
    assert "archived plans are not above" in tenant_events.output
    missing = run_cli("archive", "export", "--plan", unique())
    assert missing.exit_code == 2 and "PLAN_NOT_FOUND" in missing.output


def test_a_plan_command_between_the_copy_and_the_mark_keeps_the_plan_live_and_correct(
    worker, r, archive
):
    """The race: a rollback of the plan starts after retention copied it and before the mark.
    The mark (lua/archive_mark.lua) sees the job or the changed hash: the plan stays whole in
    Redis, rolls back, and a later pass archives it as it ended (ROLLED_BACK)."""
    import json

    from tests.helpers import run_cli

    tenants = [unique("t") for _ in range(2)]
    first = run_plan(worker, r, tenants, 91)
    retention = Retention(r, get_settings(), archive)
    mark = retention._mark_archived
    answers: list[Any] = []

    def command_then_mark(*args: Any) -> str:
        answers.append(run_cli("rollback", "--plan", first, "--json"))
        return mark(*args)

    retention._mark_archived = command_then_mark  # type: ignore[method-assign]
    outcome = retention.archive_plan(first)
    assert answers[0].exit_code == 0, answers[0].output
    assert outcome in ("LIVE", "CHANGED")
    assert r.hget(keys.plan(first), "archivedAt") is None
    assert r.hget(keys.plan(first), "archiving") is None
    assert all(r.exists(keys.task(task_id_for(first, t))) for t in tenants)
    wait_for(lambda: r.hget(keys.plan(first), "status") == "ROLLED_BACK", timeout=60,
             what=f"plan {first} ROLLED_BACK")  # fmt: skip
    for t in tenants:
        assert r.hget(keys.task(task_id_for(first, t)), "status") == "ROLLED_BACK"
    # the job of the command finished; the plan is due again and archived as it ended
    wait_for(lambda: r.zscore(keys.PLAN_JOBS, first) is None, timeout=30, what="job done")
    retention._mark_archived = mark  # type: ignore[method-assign]
    assert retention.archive_plan(first) in ("DONE", "KEPT")
    assert archive.plan(first)["status"] == "ROLLED_BACK"
    kinds = {e["type"] for e in archive.iter_events(first)}
    assert "PLAN_ROLLBACK" in kinds, kinds
    assert json.loads(answers[0].output)["ok"] is True


def test_a_command_after_the_mark_is_refused_and_the_removal_finishes(worker, r, archive):
    """Marked (archive_mark.lua), the plan is being removed: a plan command is refused
    PLAN_ARCHIVED by its own script (plan_control.lua / plan_job.lua) and writes nothing, a
    task command TASK_BUSY (its event would go with the plan's stream); the removal
    finishes and the archive holds the plan as it was."""
    from deployer.control import Controller
    from deployer.errors import Code, PlanArchived
    from deployer.lifecycle import Command
    from deployer.planner import Planner
    from deployer.state.store import Store
    from tests.helpers import run_cli

    tenants = [unique("t") for _ in range(2)]
    first = run_plan(worker, r, tenants, 93)
    retention = Retention(r, get_settings(), archive)
    remove = retention._remove
    seen: dict[str, Any] = {}
    store = Store(r, get_settings())
    sent: list[Any] = []
    controller = Controller(Planner(store, get_settings(), sent.extend))

    def commands_then_remove(plan_id: str, *args: Any) -> str:
        assert r.hget(keys.plan(plan_id), "archiving") == "1"
        with pytest.raises(PlanArchived):  # the command's own check
            controller.plans.run(Command.ROLLBACK, plan_id, "ops", "", False, False)
        # a command that read the plan before the mark: its scripts refuse
        with pytest.raises(PlanArchived) as refused:
            controller.commands.plan_control(plan_id, "", "ops", "", "")
        seen["plan"] = refused.value
        with pytest.raises(PlanArchived):
            controller.commands.job_start(plan_id, "ROLLBACK", "ops", "", False, False, 2)
        seen["task"] = run_cli("rollback", "--tenant", tenants[0], "--json")
        seen["job"] = r.exists(keys.plan_job(plan_id)), r.zscore(keys.PLAN_JOBS, plan_id)
        return remove(plan_id, *args)

    retention._remove = commands_then_remove  # type: ignore[method-assign]
    assert retention.archive_plan(first) == "KEPT"
    assert getattr(seen["plan"], "code", None) == Code.PLAN_ARCHIVED, seen["plan"]
    assert seen["task"].exit_code != 0 and "TASK_BUSY" in seen["task"].output, seen["task"].output
    assert seen["job"] == (0, None)
    assert sent == []
    for t in tenants:  # each its tenant's newest: kept live, untouched
        assert r.hget(keys.task(task_id_for(first, t)), "status") == "COMPLETED"
    assert archive.plan(first)["status"] == "COMPLETED"


@pytest.mark.parametrize("touch", ["control", "c:ROLLED_BACK", "drop"])
def test_any_change_of_the_plan_hash_after_the_copy_fails_the_mark(worker, r, archive, touch):
    """updatedAt aside: a field set, changed or removed after the copy was read (the digest
    the mark compares) leaves the plan live."""
    first = run_plan(worker, r, [unique("t")], 95)
    retention = Retention(r, get_settings(), archive)
    original = retention.archive.write

    def write_then_touch(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        if kwargs.get("plan"):
            if touch == "drop":
                r.hdel(keys.plan(first), "submittedBy", "digest")
            else:
                r.hset(keys.plan(first), touch, "0" if touch.startswith("c:") else "X")

    retention.archive.write = write_then_touch  # type: ignore[method-assign]
    assert retention.archive_plan(first) == "CHANGED"
    assert r.hget(keys.plan(first), "archivedAt") is None
    assert r.exists(keys.events_plan(first))


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////proc/deployer-no-such-dir/archive.sqlite3",
        "postgresql+psycopg://deployer:secret@127.0.0.1:1/none",
    ],
)
def test_an_unreachable_archive_keeps_the_plan_in_redis_and_moves_the_failure_counter(
    worker, r, url, caplog
):
    """The archive database down: the pass fails, Redis keeps the plan whole, the exporter's
    deployer_retention_failures_total{reason="archive"} moves and the failure streak counts;
    a later pass against a working archive ends the streak and stamps its success."""
    from deployer.metrics import counters
    from deployer.retention import failure_reason

    def exported() -> dict[str, float]:
        out = {}
        for family in counters(r.hgetall(keys.STATS)):
            for sample in family.samples:
                label = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{label}}}"] = sample.value
        return out

    first = run_plan(worker, r, [unique("t")], 97)
    before = exported()
    settings = get_settings().model_copy(update={"archive_url": url})
    with caplog.at_level("ERROR", logger="deployer.retention"):
        with pytest.raises(Exception) as failed:
            Retention(r, settings).run_pass(older_than=0, only=[first])
    assert failure_reason(failed.value) == "archive"
    after = exported()
    key = "deployer_retention_failures_total{reason=archive}"
    assert after[key] == before.get(key, 0) + 1
    # the first failure of a streak is logged with its cause (a worker's successful pass
    # may end the streak at any time, so the streak gauge itself is asserted healed below)
    assert any("retention pass failed (archive)" in m for m in caplog.messages), caplog.text
    assert "secret" not in caplog.text
    assert r.hget(keys.plan(first), "archivedAt") is None
    assert r.llen(keys.plan_tenants(first)) == 1 and r.exists(keys.events_plan(first))

    # the CLI says it in one line with a stable code (no traceback, no password)

    from tests.helpers import run_cli

    # the process's one Settings object is changed and restored, never replaced: the
    # in-process worker and the API hold it (clearing the cache would leave them another)
    shared = get_settings()
    old = shared.archive_url
    shared.archive_url = url
    try:
        refused = run_cli("archive", "--older-than", "0", "--plan", first)
    finally:
        shared.archive_url = old
    assert refused.exit_code == 2, refused.output
    assert "ARCHIVE_UNAVAILABLE" in refused.output and "Traceback" not in refused.output
    assert "secret" not in refused.output
    assert exported()[key] == after[key] + 1
    assert r.exists(keys.plan(first))

    # the database back (the session's archive): the plan goes, the streak ends
    done = Retention(r, get_settings()).run_pass(older_than=0, only=[first])
    assert done.archived == [first]
    healed = exported()
    assert healed["deployer_retention_failing_passes{}"] == 0
    assert (
        healed["deployer_retention_archived_total{}"]
        >= after.get("deployer_retention_archived_total{}", 0) + 1
    )
    assert healed["deployer_retention_last_success_timestamp_seconds{}"] > 0
