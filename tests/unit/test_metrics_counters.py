"""The exporter's reading of `deployer:stats` (the fields the Lua prelude writes)."""

from __future__ import annotations

import re
from importlib import resources

from deployer.deadletter import dead_letter_kind
from deployer.metrics import STAGE_BUCKETS, counters

PRELUDE = resources.files("deployer.state").joinpath("lua/_prelude.lua").read_text()


def samples(stats: dict[str, str]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in counters(stats):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_the_lua_buckets_are_the_exporters() -> None:
    listed = re.search(r"STAGE_BUCKETS_MS = \{([^}]*)\}", PRELUDE)
    assert listed is not None
    assert [int(x) for x in listed.group(1).replace("\n", "").split(",")] == [
        int(b * 1000) for b in STAGE_BUCKETS
    ]


def test_stats_fields_become_labelled_counters_and_a_cumulative_histogram() -> None:
    m = samples({
        "ev|TASK_FAILED": "3", "ev|TASK_REDRIVEN": "2", "ev|TASK_ROLLED_BACK": "1",
        "ev|WAVE_GATE_PASSED": "4", "ev|GATE_REFUSED": "5", "rd|worker_lost": "2",
        "fail|portal|STEP_FAILED": "3", "rej|PLAN_CONFLICT": "1", "dl|envelope": "6",
        "nt|ops|PLAN_COMPLETED|delivered": "1", "sd|portal|50": "2", "sd|portal|1000": "1",
        "sd|portal|inf": "1", "sds|portal": "700500", "sdc|portal": "4", "junk": "x",
    })  # fmt: skip
    assert m[("deployer_task_failures_total", (("code", "STEP_FAILED"), ("stage", "portal")))] == 3
    assert m[("deployer_task_transitions_total", (("status", "FAILED"),))] == 3
    assert ("deployer_task_transitions_total", (("status", "REDRIVEN"),)) not in m
    assert m[("deployer_lease_redrives_total", ())] == 2
    assert m[("deployer_redrives_total", (("reason", "worker_lost"),))] == 2
    assert m[("deployer_rollbacks_total", (("outcome", "rolled_back"),))] == 1
    assert m[("deployer_gate_answers_total", (("answer", "refused"),))] == 5
    assert m[("deployer_rejections_total", (("code", "PLAN_CONFLICT"),))] == 1
    assert m[("deployer_dead_letters_total", (("kind", "envelope"),))] == 6
    key = (("event", "PLAN_COMPLETED"), ("outcome", "delivered"), ("receiver", "ops"))
    assert m[("deployer_notifications_total", key)] == 1
    bucket = "deployer_stage_duration_seconds_bucket"
    assert m[(bucket, (("le", "0.05"), ("stage", "portal")))] == 2
    assert m[(bucket, (("le", "1.0"), ("stage", "portal")))] == 3
    assert m[(bucket, (("le", "600.0"), ("stage", "portal")))] == 3
    assert m[(bucket, (("le", "+Inf"), ("stage", "portal")))] == 4
    assert m[("deployer_stage_duration_seconds_count", (("stage", "portal"),))] == 4
    assert m[("deployer_stage_duration_seconds_sum", (("stage", "portal"),))] == 700.5


def test_dead_letter_reasons_map_to_a_bounded_kind() -> None:
    assert dead_letter_kind("envelope is not JSON (JSONDecodeError)") == "envelope"
    assert dead_letter_kind("header timelimit must be [hard, soft]") == "header"
    assert dead_letter_kind("embed.chord is refused") == "embed"
    assert dead_letter_kind("a reason nobody wrote yet: 12345") == "other"
