"""The public models (deployer/public.py) describe the JSON the faces already gave: every read
model of a live plan — with waves, budget and gate, and without — passes through its model
unchanged, and `deployer status/task --json` print exactly the read models' JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from deployer import public, views
from deployer.cli import app
from deployer.redis_client import client_for
from deployer.settings import get_settings
from deployer.state.store import Store
from deployer.web import history
from tests.helpers import bg_tenant, plan, unique, wait_for

runner = CliRunner()


def cli_json(*args: str) -> Any:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return json.loads(result.output)


def same(model: type[public.PublicModel], data: dict[str, Any]) -> None:
    """`data` conforms to `model` and comes back as the same JSON (nothing added, nothing
    dropped, no value changed)."""
    assert public.conform(model, data) == data

    # and strictly: the model names every field the answer has (none only passes through)
    def unknown(m: public.PublicModel) -> set[str]:
        return set(m.model_extra or {})

    assert not unknown(model.model_validate(data)), model.__name__


@pytest.fixture(scope="module")
def finished_plans(worker: Any, redis_url: str) -> Iterator[dict[str, Any]]:
    """A plain plan and a plan with waves, a bake and a failure budget, both finished or
    baking, and their tenants."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    plain, waved = unique("pm"), unique("pmw")
    plain_tenants = [unique("t") for _ in range(2)]
    waved_tenants = [unique("w") for _ in range(3)]
    worker.send_task("deployer.submit_plan", [plan(plain, [bg_tenant(t) for t in plain_tenants])])
    strategy = {"canary": 1, "waves": {"type": "linear", "size": 1}, "bakeSeconds": 600,
                "failureBudget": {"max": 1, "scope": "plan", "onExceed": "pause"}}  # fmt: skip
    body = plan(waved, [bg_tenant(t) for t in waved_tenants], strategy=strategy)
    worker.send_task("deployer.submit_plan", [body])
    wait_for(lambda: r.hget(f"deployer:plan:{plain}", "status") == "COMPLETED", timeout=60,
             what="plain plan COMPLETED")  # fmt: skip
    wait_for(lambda: r.hget(f"deployer:plan:{waved}", "waveState") == "BAKING", timeout=60,
             what="waved plan baking")  # fmt: skip
    yield {"plain": (plain, plain_tenants), "waved": (waved, waved_tenants)}
    # no bake left behind: later tests wait for every plan timer to be done
    runner.invoke(app, ["promote", "--plan", waved, "--all"], catch_exceptions=False)
    wait_for(lambda: r.hget(f"deployer:plan:{waved}", "status") == "COMPLETED", timeout=60,
             what="waved plan COMPLETED")  # fmt: skip
    wait_for(lambda: r.zscore("deployer:plan-timers", waved) is None, timeout=30,
             what="no timer of the waved plan")  # fmt: skip


def test_every_read_model_passes_through_its_public_model_unchanged(finished_plans):
    store = Store(client_for(get_settings().state_url), get_settings())
    for plan_id, tenants in finished_plans.values():
        view = views.plan_view(store, plan_id)
        assert view is not None
        same(public.PlanView, view)
        task = views.plan_task_view(store, plan_id, tenants[0])
        assert task is not None
        same(public.TaskView, task)
        same(public.TaskPage, views.task_page(store, plan_id))
        same(public.TaskPage, views.task_page(store, plan_id, status="COMPLETED"))
        same(public.TenantTasks, views.tenant_tasks(store, tenants[0]))
        same(public.EventPage, history.history(store.r, plan=plan_id))
    waved, _ = finished_plans["waved"]
    view = views.plan_view(store, waved)
    assert view is not None and view["waves"] and view["budget"]  # the rollout fields are there
    same(public.WavePage, {"planId": waved, **views.wave_page(store, waved, 0)})
    same(public.PlanPage, views.plans_page(store, 20))


def test_status_and_task_json_print_the_read_models_json(finished_plans):
    store = Store(client_for(get_settings().state_url), get_settings())
    plain, tenants = finished_plans["plain"]
    assert cli_json("status", plain, "--json") == views.plan_view(store, plain)
    assert cli_json("task", "--tenant", tenants[0], "--plan", plain, "--json") == (
        views.plan_task_view(store, plain, tenants[0])
    )
    waved, _ = finished_plans["waved"]
    assert cli_json("status", waved, "--json") == views.plan_view(store, waved)
    assert cli_json("status", waved, "--wave", "0", "--json") == {
        "planId": waved, **views.wave_page(store, waved, 0)
    }  # fmt: skip


def test_a_command_answer_keeps_its_json_through_the_command_result_model(finished_plans):
    plain, _ = finished_plans["plain"]
    answer = cli_json("pause", "--plan", plain, "--json")  # a finished plan: refused
    assert answer["ok"] is False and answer["code"]
    same(public.Problem, answer)
    waved, tenants = finished_plans["waved"]
    done = cli_json("pause", "--tenant", tenants[0], "--plan", waved, "--json")
    assert set(done) >= {"ok", "code", "message"}
    assert public.conform(public.CommandResult, done) == done


def test_the_client_reads_typed_views_that_dump_back_to_the_same_json(finished_plans):
    from deployer.client import DeployerClient

    store = Store(client_for(get_settings().state_url), get_settings())
    client = DeployerClient()
    waved, tenants = finished_plans["waved"]
    typed = client.plan_view(waved)
    assert isinstance(typed, public.PlanView) and typed.waves and typed.budget is not None
    assert typed.model_dump(mode="json", by_alias=True, exclude_unset=True) == (
        views.plan_view(store, waved)
    )
    task = client.task_view(tenants[0], waved)
    assert isinstance(task, public.TaskView) and task.tenant_id == tenants[0]
    assert client.plan_view(unique("absent")) is None
    assert client.task_view(unique("absent")) is None
