"""What Flower shows for a message: labels to filter on, a summary, never a secret."""

from __future__ import annotations

import ast

from tasks.reprs import RedactingAMQP, reprs


def _ctx(**extra):
    return {
        "planId": "p1",
        "taskId": "task-p1_t1",
        "tenantId": "t1",
        "runKind": "FORWARD",
        "token": "lease-token",
        "stageCount": 3,
        "stageIndex": 1,
        "additionalData": {"planVersion": 20},
        **extra,
    }


def test_a_stage_task_shows_plan_tenant_and_stage_as_filterable_kwargs():
    spec = {"name": "blue-green-gateway", "steps": [{"params": {"password": "hunter2"}}]}
    argsrepr, kwargsrepr = reprs("deployer.run_stage", [_ctx(), spec], {})
    tags = ast.literal_eval(kwargsrepr)  # Flower parses it the same way for kwargs:k=v
    assert tags == {
        "planId": "p1",
        "tenantId": "t1",
        "stage": "blue-green-gateway",
        "stageIndex": 1,
        "stageCount": 3,
        "runKind": "FORWARD",
        "planVersion": 20,
    }
    assert "tenantId=t1" in argsrepr and "stage=blue-green-gateway" in argsrepr
    assert "hunter2" not in argsrepr + kwargsrepr
    assert "lease-token" not in argsrepr + kwargsrepr


def test_a_plan_submission_is_summarised_not_dumped():
    plan = {"planId": "p9", "tenants": [{"tenantId": f"t{i}", "password": "x"} for i in range(500)]}
    argsrepr, _ = reprs("deployer.submit_plan", [plan], {})
    assert ast.literal_eval(argsrepr) == ({"planId": "p9", "tenants": 500},)


def test_a_control_verb_shows_its_target_and_masks_secrets():
    argsrepr, kwargsrepr = reprs(
        "deployer.pause", [{"planId": "p1"}], {"by": "ops", "reason": "token=abc", "token": "t"}
    )
    assert ast.literal_eval(argsrepr) == ({"planId": "p1"},)
    assert ast.literal_eval(kwargsrepr) == {
        "planId": "p1",
        "by": "ops",
        "reason": "token=abc",
        "token": "***",
    }


def test_the_project_app_builds_messages_with_redacted_reprs():
    from tasks import app

    assert isinstance(app.amqp, RedactingAMQP)
    msg = app.amqp.as_task_v2("id-1", "deployer.cancel", [{"tenantId": "t", "secret": "s"}], {})
    assert "'s'" not in msg.headers["argsrepr"]
    assert msg.sent_event is None or "'s'" not in msg.sent_event["args"]


def _publish(msg):
    """What Celery's send_task_message does with a built message: the publish hook runs on
    its very headers and body."""
    from celery.signals import before_task_publish

    before_task_publish.send(sender=msg.headers["task"], body=msg.body, headers=msg.headers)


def test_a_message_published_as_built_keeps_the_reprs_written_when_it_was_built():
    from tasks import app

    msg = app.amqp.as_task_v2("id-2", "deployer.run_stage", [_ctx(), {"name": "s1"}], {})
    argsrepr, kwargsrepr = msg.headers["argsrepr"], msg.headers["kwargsrepr"]
    _publish(msg)
    # not computed a second time: the very same strings
    assert msg.headers["argsrepr"] is argsrepr and msg.headers["kwargsrepr"] is kwargsrepr


def test_reprs_overridden_between_build_and_publish_are_redacted_again():
    from tasks import app

    msg = app.amqp.as_task_v2("id-3", "deployer.cancel", [{"tenantId": "t", "secret": "s"}], {})
    # apply_async(headers={...}) is merged over the built headers before the hook runs
    msg.headers.update(argsrepr="({'secret': 'hunter2'},)", kwargsrepr="{'token': 'abc'}")
    _publish(msg)
    assert "hunter2" not in msg.headers["argsrepr"]
    assert "abc" not in msg.headers["kwargsrepr"]
    assert ast.literal_eval(msg.headers["argsrepr"]) == ({"tenantId": "t", "secret": "***"},)


def test_a_message_built_elsewhere_is_redacted_at_publish_even_after_one_of_ours():
    from celery import Celery

    from tasks import app

    app.amqp.as_task_v2("id-4", "deployer.cancel", [{"tenantId": "t"}], {})  # never published
    other = Celery("other-app", set_as_current=False)
    args = [{"tenantId": "t", "password": "pw"}]
    msg = other.amqp.as_task_v2("id-5", "deployer.cancel", args, {})
    assert "pw" in msg.headers["argsrepr"]  # a plain Celery app writes the real arguments
    _publish(msg)
    assert "'pw'" not in msg.headers["argsrepr"]
