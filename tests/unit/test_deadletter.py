"""The pure parts of the armor: redaction of heads, depth of JSON text, ids of unparsed
messages, the envelope and header checks, the worker's own argument reprs."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from deployer.deadletter import (
    HEAD_BYTES,
    DeadLetter,
    head,
    json_depth_exceeds,
    peek_plan_id,
    peek_raw,
    redact_text,
)
from tasks.guard import _check_headers, allowed, check_body, worker_reprs
from tasks.transport import check_envelope, raw_limit

#: Fixed, not random: test ids carry it, and parallel workers must collect the same tests.
SECRET = "s3cr3t-e7d179"


def nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"x": value}
    return value


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"planId": "p", "password": SECRET}),
        json.dumps({"a": {"apiKey": SECRET, "b": 1}}),
        json.dumps({"token": [SECRET, {"x": SECRET}], "next": 1}),
        json.dumps({"plan": json.dumps({"planId": "p", "secret": SECRET})}),  # escaped inside
        json.dumps([[json.dumps({"tenants": [{"api_key": SECRET}]})], {}, {}]),
        f'{{"password": "{SECRET}',  # cut mid-value
        f"user=a&password={SECRET}&b=1",
        f"Authorization: Bearer {SECRET}\nnext: 1",
        repr({"credentials": SECRET}),
    ],
)
def test_secret_values_are_masked_in_text_that_may_not_parse(text):
    assert SECRET not in redact_text(text)


def test_data_that_is_not_secret_stays_visible():
    text = json.dumps({"planId": "p-1", "deployUnitKey": "k1", "key": "r1", "tenantId": "t"})
    assert redact_text(text) == text


def test_a_head_is_bounded_and_masks_a_secret_that_crosses_its_end():
    text = json.dumps({"pad": "x" * (HEAD_BYTES - 20), "password": SECRET * 10})
    shown = head(text)
    assert len(shown) <= HEAD_BYTES and "s3cr3t" not in shown and '"password": "***' in shown


def test_base64_runs_are_elided_from_heads():
    encoded = base64.b64encode(json.dumps({"password": SECRET}).encode()).decode()
    assert encoded not in head(json.dumps({"body": encoded}))


@pytest.mark.parametrize(
    ("depth", "limit", "deeper"),
    [(10, 64, False), (64, 64, False), (65, 64, True), (500, 64, True)],
)
def test_json_depth_is_measured_on_text_without_recursion(depth, limit, deeper):
    text = json.dumps(nested(depth))
    assert json_depth_exceeds(text, limit) is deeper
    assert json_depth_exceeds(text.encode(), limit) is deeper


def test_brackets_inside_strings_do_not_count():
    assert not json_depth_exceeds(json.dumps({"a": '[[[[[[[[[[{{{{{{\\"]]'}), 3)
    assert json_depth_exceeds("[[[1]]]", 2) and not json_depth_exceeds("[[[1]]]", 3)


def test_a_hundred_thousand_shallow_tenants_are_not_deep():
    tenants = [{"tenantId": f"t{i}", "x": [{"y": [1]}]} for i in range(10**5)]
    plan = {"planId": "p", "tenants": tenants}
    assert not json_depth_exceeds(json.dumps(plan), 64)


def test_the_plan_id_is_read_from_a_plan_its_message_or_an_escaped_string():
    assert peek_plan_id(json.dumps([[{"planId": "p-1", "tenants": []}], {}, {}])) == "p-1"
    assert peek_plan_id(json.dumps([[json.dumps({"planId": "p-2"})], {}, {}])) == "p-2"
    assert peek_plan_id('[[{"planId": 42}]]') == "42"
    assert peek_plan_id('[[{"planId": "bad id:*"}]]') == ""
    assert peek_plan_id("garbage") == ""


def test_ids_of_an_unparsed_envelope_are_read_from_its_head_and_tail():
    message = [[{"planId": "p-3", "pad": "x" * 100_000}], {}, {}]
    body = base64.b64encode(json.dumps(message).encode())
    raw = json.dumps(
        {
            "body": body.decode(),
            "headers": {"task": "deployer.submit_plan", "id": "id-1"},
            "properties": {"delivery_info": {"exchange": "", "routing_key": "deployer.control"}},
        }
    )
    peek = peek_raw(raw.encode()[:-1])  # truncated: not JSON any more
    assert (peek.task, peek.id, peek.queue) == ("deployer.submit_plan", "id-1", "deployer.control")
    assert peek_plan_id(peek.body) == "p-3"


def test_every_dead_letter_field_is_bounded():
    letter = DeadLetter(reason="r" * 5000, task="t" * 5000, id="i" * 5000, head="h" * 5000)
    fields = letter.fields(1)
    assert all(len(str(v)) <= HEAD_BYTES for v in fields.values())


def _env(**change: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "body": base64.b64encode(b"[[], {}, {}]").decode(),
        "headers": {"task": "deployer.pause", "id": "x"},
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "properties": {
            "body_encoding": "base64",
            "delivery_tag": "tag",
            "delivery_info": {"exchange": "", "routing_key": "deployer.control"},
        },
    }
    env.update(change)
    return env


def _props(**change: Any) -> dict[str, Any]:
    props = {**_env()["properties"], **change}
    return {k: v for k, v in props.items() if v is not None}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([1], "envelope is a JSON list"),
        (None, "envelope is a JSON NoneType"),
        (_env(properties=None), "properties are not an object"),
        (_env(properties=_props(delivery_tag=None)), "no delivery_tag"),
        (_env(properties=_props(delivery_tag=True)), "no delivery_tag"),
        (_env(properties=_props(delivery_info={"exchange": ""})), "routing_key"),
        (_env(properties=_props(body_encoding="rot13")), "body_encoding"),
        (_env(properties=_props(priority=999)), "priority"),
        (_env(headers=[1]), "headers are not an object"),
        (_env(headers={"compression": "application/x-gzip"}), "compressed"),
        (_env(body=5), "body is not a string"),
        (_env(body="abc"), "not valid base64"),
        (_env(body="ab=c"), "not valid base64"),
        (_env(**{"content-type": 5}), "content-type"),
    ],
)
def test_envelopes_kombu_would_crash_on_are_named(payload, reason):
    problem = check_envelope(payload)
    assert problem is not None and reason in problem


def test_celery_node_and_kombu_envelopes_pass():
    assert check_envelope(_env()) is None
    assert check_envelope(_env(properties=_props(priority=3, delivery_tag=7))) is None
    assert check_envelope(_env(body="", headers=None)) is None


def test_the_raw_limit_leaves_room_for_base64():
    assert raw_limit(3 * 1024) >= 4 * 1024


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"stamped_headers": "abc"}, "stamped_headers"),
        ({"groups": [1]}, "groups"),
        ({"stamps": [1]}, "stamps"),
        ({"timelimit": [1e300, None]}, "timelimit"),
        ({"timelimit": [True, None]}, "timelimit"),
        ({"retries": "3"}, "retries"),
        ({"retries": -1}, "retries"),
        ({"group_index": "1"}, "group_index"),
        ({"ignore_result": "no"}, "ignore_result"),
        ({"argsrepr": ["x"]}, "argsrepr"),
        ({"compression": "zlib"}, "compressed"),
    ],
)
def test_headers_celery_reads_must_have_its_types(headers, reason):
    problem = _check_headers(headers)
    assert problem is not None and reason in problem


def test_headers_deployer_and_celery_node_send_pass():
    assert _check_headers({"lang": "js", "task": "deployer.pause", "id": "x"}) is None
    assert _check_headers({"retries": 2, "timelimit": [None, None], "stamped_headers": []}) is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([[], {}, {"chord": {"x": 1}}], "chord"),
        ([[], {}, {"chain": [1]}], "chain"),
        ([[], {}, {"id": "x"}], "unknown keys"),
    ],
)
def test_embed_holds_only_what_celery_sends(body, reason):
    problem = check_body(body)
    assert isinstance(problem, str) and reason in problem


def test_only_deployers_own_registered_tasks_are_allowed():
    tasks = {"deployer.pause": object(), "celery.chord_unlock": object()}
    assert allowed("deployer.pause", tasks)
    assert not allowed("celery.chord_unlock", tasks) and not allowed("deployer.nope", tasks)


@pytest.mark.parametrize("as_text", [False, True])
def test_worker_reprs_carry_labels_and_no_secret(as_text):
    plan: Any = {
        "planId": "p-9",
        "password": SECRET,
        "tenants": [{"tenantId": "t", "apiKey": SECRET, "token": SECRET}],
    }
    if as_text:
        plan = json.dumps(plan)
    args, kwargs = worker_reprs("deployer.submit_plan", [plan], {"token": SECRET})
    assert SECRET not in args + kwargs and "p-9" in args
    args, kwargs = worker_reprs("deployer.pause", [{"planId": "p-9", "password": SECRET}], {})
    assert SECRET not in args + kwargs and "p-9" in args


def test_a_long_plan_string_is_labelled_without_being_parsed():
    text = json.dumps({"planId": "p-big", "tenants": [{"password": SECRET, "pad": "x" * 70_000}]})
    args, _ = worker_reprs("deployer.submit_plan", [text], {})
    assert "p-big" in args and SECRET not in args


def test_a_plan_sent_as_a_json_string_has_the_same_depth_bound_as_an_object():
    """`deployer submit --dry-run` (a string) called a plan valid that the worker refuses."""
    from deployer.errors import PlanValidationError
    from deployer.intake import parse_plan
    from deployer.settings import Settings
    from tests.helpers import bg_tenant, plan

    deep = plan("p-deep", [bg_tenant("t1", annotations=nested(100))])
    with pytest.raises(PlanValidationError) as info:
        parse_plan(json.dumps(deep), Settings())
    assert info.value.errors == [{"field": "(plan)", "reason": "nested too deeply"}]
    shallow = plan("p-ok", [bg_tenant("t1")])
    assert parse_plan(json.dumps(shallow), Settings()).plan_id == "p-ok"


@pytest.mark.parametrize(
    ("body", "secret"),
    [
        ("GET / HTTP/1.1\r\nAuthorization: Bearer abc.def-ghi_123\r\n", "abc.def-ghi_123"),
        ("curl -H 'X-Forward: Bearer s3cr3t-t0ken.v2' http://x", "s3cr3t-t0ken.v2"),
        ("call with token bearer qwerty~uiop/1 please", "qwerty~uiop/1"),
        ("proxy: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("broker amqp://deployer:hunter2-pw@rabbit:5672//", "hunter2-pw"),
        ("redis://:r3dis-pass@10.0.0.1:6379/0 down", "r3dis-pass"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-nature_x end", "eyJzdWIiOiIxIn0"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow-key-body\n", "MIIEow-key-body"),
        ("gh token ghp_abcdefghijklmnopqrstuvwxyz0123 in a log", "ghp_abcdefghijklmnop"),
        ("slack xoxb-123456789012-abcdefghij ok", "xoxb-123456789012"),
        ("aws AKIAABCDEFGHIJKLMNOP key", "AKIAABCDEFGHIJKLMNOP"),
    ],
)
def test_heads_of_bodies_that_are_not_json_mask_secrets_by_their_shape(body, secret):
    shown = head(body.encode())
    assert secret not in shown, shown
    assert "***" in shown


def test_text_without_secrets_stays_readable():
    text = "planId p-1 tenant t-9 stage portal: version 20, see https://example.com/a?b=1"
    assert head(text.encode()) == text
