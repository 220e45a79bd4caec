"""Secrets never reach Flower, logs or status output; ordinary fields stay readable."""

from __future__ import annotations

import json

from deployer.redact import MASK, redact


def test_the_listed_secret_fields_are_masked_at_any_depth():
    obj = {
        "password": "p1",
        "nested": [{"Secret": "s1", "apiKey": "k1", "api_key": "k2", "API-KEY": "k3"}],
        "headers": {"Authorization": "Bearer t", "credentials": {"user": "u"}, "token": "t1"},
    }
    out = redact(obj)
    assert out["password"] == MASK
    assert out["nested"][0] == {"Secret": MASK, "apiKey": MASK, "api_key": MASK, "API-KEY": MASK}
    assert out["headers"] == {"Authorization": MASK, "credentials": MASK, "token": MASK}
    assert obj["password"] == "p1"  # a copy: the real arguments are untouched


def test_fields_that_merely_end_in_key_stay_visible():
    obj = {"key": "r1", "deployUnitKey": "u7", "monkey": "m", "tenantId": "t"}
    assert redact(obj) == obj


def test_a_secret_inside_a_json_string_is_masked_too():
    text = json.dumps({"planId": "p", "tenants": [{"tenantId": "t", "password": "hunter2"}]})
    out = redact([text])
    assert "hunter2" not in out[0]
    assert json.loads(out[0])["tenants"][0] == {"tenantId": "t", "password": MASK}


def test_tuples_and_scalars_keep_their_shape():
    assert redact(("a", 1, None, {"secret": 2})) == ("a", 1, None, {"secret": MASK})
    assert redact("not json {") == "not json {"


def test_any_mapping_is_redacted_and_names_are_normalised_however_long():
    from types import MappingProxyType

    from deployer.redact import is_secret

    long_name = "x" * 100 + "_token"
    shown = redact({"a": MappingProxyType({"Api-Key": "k", "n": 1}), long_name: "v", "t": True})
    assert shown == {"a": {"Api-Key": MASK, "n": 1}, long_name: "v", "t": True}
    assert redact({"API_KEY": "k"}, fields=["api-key"]) == {"API_KEY": MASK}
    assert is_secret("PASS_WORD") and is_secret("x-y", fields=["XY"]) and not is_secret("key")
