"""deploy/prometheus and deploy/grafana stay true to the exporter: every rule and panel
parses (YAML/JSON, the rule file's structure, a PromQL sanity parse of each expression), and
every metric an expression names is one `deployer metrics` exports (read from a real
collector on a real Redis, not from a list)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.metrics import registry_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "deployer-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "deployer.json"

#: PromQL functions and aggregations the assets may call.
FUNCTIONS = {"sum", "max", "min", "avg", "count", "rate", "increase", "irate", "delta",
             "histogram_quantile", "time", "absent", "topk", "bottomk", "clamp_min",
             "clamp_max", "abs", "round", "sort", "sort_desc", "label_replace"}  # fmt: skip
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "le", "inf", "nan"}  # fmt: skip
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
MATCHER = re.compile(r'^\s*[A-Za-z_][A-Za-z0-9_]*\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*$')
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$|^\$__rate_interval$|^\$__interval$")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects, after a sanity parse that fails on
    unbalanced brackets, malformed label matchers or range durations, and unknown functions."""
    depth = 0
    for ch in expr:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        assert depth >= 0, f"unbalanced ')' in {expr!r}"
    assert depth == 0, f"unbalanced '(' in {expr!r}"

    def matchers(m: re.Match[str]) -> str:
        body = m.group(1).strip()
        parts = re.split(r',(?=(?:[^"]*"[^"]*")*[^"]*$)', body)  # commas outside quotes
        for part in filter(None, (p.strip() for p in parts)):
            assert MATCHER.match(part), f"bad label matcher {part!r} in {expr!r}"
        return " "

    rest = re.sub(r"\{([^{}]*)\}", matchers, expr)
    assert "{" not in rest and "}" not in rest, f"unbalanced braces in {expr!r}"

    def ranges(m: re.Match[str]) -> str:
        assert DURATION.match(m.group(1)), f"bad range {m.group(1)!r} in {expr!r}"
        return " "

    rest = re.sub(r"\[([^\]]*)\]", ranges, rest)
    rest = re.sub(r'"(?:[^"\\]|\\.)*"', " ", rest)  # string arguments (label_replace)
    # label lists of by (...), on (...), ...: labels, not metrics
    rest = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", rest)
    names: set[str] = set()
    for m in IDENT.finditer(rest):
        word, after = m.group(0), rest[m.end() :].lstrip()
        if word in FUNCTIONS:
            continue
        if after.startswith("("):
            raise AssertionError(f"unknown function {word!r} in {expr!r}")
        if word in KEYWORDS or word.startswith("$"):
            continue
        names.add(word)
    return names


def test_the_sanity_parse_reads_names_and_catches_mistakes() -> None:
    expr = 'sum by (stage, code) (increase(deployer_task_failures_total{code=~"A|B"}[10m])) > 0'
    assert metric_names(expr) == {"deployer_task_failures_total"}
    assert metric_names("time() - max(x_seconds)") == {"x_seconds"}
    for bad in ("sum(x", 'x{a="b"', "x{a=b}", "x[10]", "summ(x)"):
        with pytest.raises(AssertionError):
            metric_names(bad)


@pytest.fixture(scope="module")
def exported(redis_url: str) -> set[str]:
    """What a real collector serves, on a real Redis with one field of each counter kind."""
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.hset("deployer:stats", mapping={"sd|assets-stage|50": 1, "sds|assets-stage": 10,
                                       "sdc|assets-stage": 1, "retok|ms": 1})  # fmt: skip
    names: set[str] = set()
    for family in registry_for(r, receivers=["ops"]).collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    return names


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    assert isinstance(doc, dict) and set(doc) == {"groups"}
    out = []
    for group in doc["groups"]:
        assert isinstance(group["name"], str) and group["rules"]
        out += group["rules"]
    return out


def test_the_alert_rules_are_well_formed() -> None:
    seen = set()
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]), rule
        assert rule["alert"] not in seen
        seen.add(rule["alert"])
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        if "for" in rule:
            assert DURATION.match(rule["for"]), rule["for"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    # what an on-call engineer is paged for
    assert {"DeployerPlanFailing", "DeployerBudgetExceeded", "DeployerApprovalWaiting",
            "DeployerNoWorkerHeartbeat", "DeployerDeadLettersRising",
            "DeployerParkedTasksStuck", "DeployerRetentionFailing",
            "DeployerRetentionStale"} <= seen  # fmt: skip


def test_every_metric_a_rule_names_is_exported(exported: set[str]) -> None:
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, (rule["alert"], names - exported)


def panels() -> list[dict[str, Any]]:
    dash = json.loads(DASHBOARD.read_text())
    return [p for p in dash["panels"] if p["type"] != "row"]


def test_the_dashboard_is_provisioning_ready() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and "id" not in dash  # provisioned: no instance id
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    source = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/deployer-prometheus.yaml")
                            .read_text())["datasources"][0]  # fmt: skip
    variable = dash["templating"]["list"][0]
    assert variable["type"] == "datasource" and variable["current"]["value"] == source["uid"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/deployer.yaml")
                              .read_text())["providers"][0]  # fmt: skip
    assert provider["type"] == "file" and provider["options"]["path"]
    for p in panels():
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"][
            "w"] <= 24  # fmt: skip


def test_every_metric_a_panel_names_is_exported(exported: set[str]) -> None:
    used: set[str] = set()
    for p in panels():
        for target in p["targets"]:
            names = metric_names(target["expr"])
            assert names <= exported, (p["title"], names - exported)
            used |= names
    # the dashboard answers the on-call questions
    assert {"deployer_task_failures_total", "deployer_rejections_total",
            "deployer_gate_answers_total", "deployer_notifications_total",
            "deployer_dead_letters_total", "deployer_parked_tasks",
            "deployer_redrives_total"} <= used  # fmt: skip
