"""Static discovery, the Java key aliases, ALL/RANDOM selection, JSON paths, versions."""

from __future__ import annotations

import random

import pytest

from stages.discovery import DiscoveryError, StaticResolver, instances_for, select
from stages.probe import extract
from stages.steps.health_check import same_version, url_path


def test_static_instances_are_found_by_service_name_or_a_java_key():
    resolver = StaticResolver({"BG_GATEWAY": ["a:1"], "portal": ["p:1"], "ob-campaign": ["o:1"]})
    assert resolver.resolve("blue-green-gateway", None) == ["a:1"]
    assert resolver.resolve("portal", "any-namespace") == ["p:1"]
    assert resolver.resolve("ob-service", None) == ["o:1"]
    assert resolver.resolve("asbc-gateway", None) == []


def test_all_selects_every_instance_once_and_random_exactly_one():
    instances = ["b:2", "a:1", "b:2", "c:3"]
    assert select(instances, "ALL") == ["a:1", "b:2", "c:3"]
    rng = random.Random(7)
    picks = {tuple(select(instances, "RANDOM", rng)) for _ in range(50)}
    assert all(len(p) == 1 for p in picks)
    assert {p[0] for p in picks} == {"a:1", "b:2", "c:3"}


def test_no_instance_is_an_explicit_error_naming_the_service():
    with pytest.raises(DiscoveryError, match="no ob-service instance available"):
        instances_for(StaticResolver({}), "ob-service", "ns", "ALL")


def test_json_paths_and_version_equality():
    body = {"version": 20, "data": {"v": "19"}}
    assert extract(body, "$.version") == 20
    assert extract(body, "$.data.v") == "19"
    assert extract(body, "$.missing") is None
    assert extract(None, "$.version") is None
    assert same_version(20, 20) and same_version("20", 20)
    assert not same_version(21, 20) and not same_version(True, 1) and not same_version(None, 20)


def test_paths_are_paths_never_hosts():
    assert url_path("/actuator/bg-sdk/{tenantId}", "t1") == "/actuator/bg-sdk/t1"
    for bad in ("http://x/y", "//x/y", "/a@b", "x/y"):
        with pytest.raises(Exception, match="not an absolute path"):
            url_path(bad, "t1")
