"""The strategy model and the wave plan: sizes for 1, 7, 100 and 10,000 tenants."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deployer.strategy import Strategy, budget_limit, plan_waves, strategy_errors, wave_sizes


def ids(n: int) -> list[str]:
    return [f"t{i}" for i in range(n)]


def strat(**kw: object) -> Strategy:
    return Strategy.model_validate(kw)


def assert_partition(waves: list[list[str]], tenants: list[str]) -> None:
    flat = [t for w in waves for t in w]
    assert sorted(flat) == sorted(tenants) and len(flat) == len(set(flat))
    assert all(waves), "no empty wave"


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, [1]),
        (7, [3, 3, 1]),
        (100, [3] * 33 + [1]),
        (10_000, [3] * 3333 + [1]),
    ],
)
def test_linear_count_waves_have_the_fixed_size_and_the_remainder_last(n, expected):
    s = strat(waves={"type": "linear", "size": 3})
    if len(expected) > 1000:
        assert strategy_errors(s, set(ids(n)), n, {})[0]["field"] == "strategy.waves"
        return
    assert wave_sizes(n, s) == expected
    assert_partition(plan_waves(ids(n), s), ids(n))


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, [1]), (7, [2, 2, 2, 1]), (100, [25] * 4), (10_000, [2500] * 4)],
)
def test_linear_share_waves_are_that_share_of_the_plan_rounded_up(n, expected):
    s = strat(waves={"type": "linear", "size": "25%"})
    assert wave_sizes(n, s) == expected
    assert_partition(plan_waves(ids(n), s), ids(n))


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, [1]),
        (7, [1, 2, 4]),
        (100, [1, 2, 4, 8, 16, 32, 37]),
        (10_000, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 1809]),
    ],
)
def test_exponential_waves_grow_by_the_factor(n, expected):
    s = strat(waves={"type": "exponential", "size": 1, "factor": 2})
    assert wave_sizes(n, s) == expected
    assert_partition(plan_waves(ids(n), s), ids(n))


def test_ten_thousand_tenants_in_ten_exponential_waves():
    s = strat(waves={"type": "exponential", "size": 10, "factor": 2})
    sizes = wave_sizes(10_000, s)
    assert sizes == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 4890]


@pytest.mark.parametrize("n", [1, 7, 100, 10_000])
def test_a_named_canary_is_wave_zero_alone_and_in_no_other_wave(n):
    tenants = ids(n)
    canary = [tenants[-1]] + ([tenants[0]] if n > 1 else [])
    s = strat(canary=canary, waves={"type": "linear", "size": "50%"})
    waves = plan_waves(tenants, s)
    assert waves[0] == canary
    assert not set(canary) & {t for w in waves[1:] for t in w}
    assert_partition(waves, tenants)


def test_counted_and_shared_canaries():
    assert wave_sizes(100, strat(canary=2)) == [2, 98]
    assert wave_sizes(100, strat(canary="5%")) == [5, 95]
    assert wave_sizes(7, strat(canary="5%")) == [1, 6]  # a share rounds up: never empty
    assert wave_sizes(1, strat(canary=3)) == [1]
    assert plan_waves(ids(4), strat(canary=1))[0] == ["t0"]


def test_failure_budget_shares_round_down():
    s = strat(failureBudget={"max": "5%", "scope": "wave", "onExceed": "rollback"})
    assert s.failure_budget is not None
    assert budget_limit(s.failure_budget, 100) == 5
    assert budget_limit(s.failure_budget, 7) == 0
    assert budget_limit(strat(failureBudget={"max": 3}).failure_budget, 7) == 3  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        {"waves": {"type": "linear", "size": 0}},
        {"waves": {"type": "linear", "size": "0%"}},
        {"waves": {"type": "linear", "size": 2, "factor": 2}},
        {"waves": {"type": "exponential", "size": 2, "factor": 1}},
        {"waves": {"type": "zigzag", "size": 2}},
        {"approval": "sometimes"},
        {"gate": "http://evil.example/hook"},
        {"bakeSeconds": -1},
        {"failureBudget": {"max": "150%"}},
        {"canary": ["a", "a"]},
        {"canery": 2},
    ],
)
def test_invalid_strategies_are_refused(bad):
    with pytest.raises(ValidationError):
        Strategy.model_validate(bad)


def test_strategy_errors_name_unknown_canaries_and_gates():
    s = strat(canary=["t1", "ghost"], gate="qa")
    errors = strategy_errors(s, set(ids(3)), 3, {})
    assert {"field": "strategy.canary[1]", "reason": "ghost is not in the plan"} in errors
    assert any(e["field"] == "strategy.gate" for e in errors)
    assert strategy_errors(strat(gate="qa", canary=["t1"]), set(ids(3)), 3, {"qa": "x"}) == []


def test_the_plan_schema_covers_the_strategy():
    from deployer.models import Plan

    schema = Plan.model_json_schema(by_alias=True)
    assert "strategy" in schema["properties"]
    props = schema["$defs"]["Strategy"]["properties"]
    assert set(props) == {"canary", "waves", "bakeSeconds", "approval", "gate", "failureBudget",
                          "window"}  # fmt: skip
    assert set(schema["$defs"]["FailureBudget"]["properties"]) == {"max", "scope", "onExceed"}
    assert schema["$defs"]["Strategy"]["additionalProperties"] is False
