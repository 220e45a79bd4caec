"""A plan's progressive-rollout strategy: the wire model and the wave plan.

Pure: no Redis, no Celery. `plan_waves` fixes, at submit time, which tenants go in which
wave; the store keeps that assignment with the plan (deployer/waves.py drives it). Waves are
numbered from 0 (the canary when there is one), never overlap, and cover every tenant once.

Amounts (`canary`, `waves.size`, `failureBudget.max`) are a count or a share of the plan's
tenants written "5%": a share of a wave size rounds up (a wave is never empty), a share of a
failure budget rounds down (5% of 7 tenants tolerates no failure: the safe side).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from deployer.window import Window

#: A share of the plan's tenants: "5%", "12.5%".
PERCENT_PATTERN = r"^(100(\.0+)?|\d{1,2}(\.\d+)?)%$"
_PERCENT = re.compile(PERCENT_PATTERN)
#: Gate names are looked up in settings (DEPLOYER_GATES); never a URL from the plan.
GATE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
#: Each wave keeps a few fields in the plan hash: a strategy making more is refused.
MAX_WAVES = 1000
MAX_BAKE_SECONDS = 7 * 24 * 3600

Amount = Annotated[int, Field(ge=0)] | Annotated[str, Field(pattern=PERCENT_PATTERN)]


class StrategyModel(BaseModel):
    """camelCase on the wire like every plan field; unknown fields are refused (a typo in a
    safety setting must not silently give an unsafe rollout); strict types like the rest of
    the plan's edge (deployer.models.EdgeModel): "300" is not a number of seconds."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True
    )


class Waves(StrategyModel):
    type: Literal["linear", "exponential"]
    #: linear: tenants per wave; exponential: the first wave's size (then size * factor^k).
    size: Amount
    factor: float = Field(2.0, gt=1.0, le=100.0)

    @field_validator("size")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if v == 0 or (isinstance(v, str) and float(v[:-1]) == 0):
            raise ValueError("a wave must hold at least one tenant")
        return v

    @model_validator(mode="before")
    @classmethod
    def _factor_only_exponential(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("type") == "linear" and "factor" in data:
            raise ValueError("factor applies to exponential waves only")
        return data


class FailureBudget(StrategyModel):
    #: Failed tenants tolerated; one more exceeds the budget.
    max: Amount
    scope: Literal["plan", "wave"] = "plan"
    on_exceed: Literal["pause", "rollback"] = "pause"


class Strategy(StrategyModel):
    """The `strategy` of a plan: a public contract (README, "Progressive rollout");
    absent = no waves."""

    canary: list[Annotated[str, Field(max_length=128)]] | Amount | None = None
    waves: Waves | None = None
    bake_seconds: int = Field(0, ge=0, le=MAX_BAKE_SECONDS)
    approval: Literal["none", "first", "every"] = "none"
    gate: str | None = Field(None, pattern=GATE_PATTERN)
    failure_budget: FailureBudget | None = None
    #: When waves may start (deployer/window.py); absent = any time.
    window: Window | None = None

    @field_validator("canary")
    @classmethod
    def _distinct(cls, v: list[str] | int | str | None) -> list[str] | int | str | None:
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError("canary names a tenant twice")
        return v


def share(amount: int | str, total: int, *, round_up: bool) -> int:
    """An amount as a number of tenants out of `total`."""
    if isinstance(amount, int):
        return amount
    value = total * float(amount[:-1]) / 100.0
    return math.ceil(value - 1e-9) if round_up else math.floor(value + 1e-9)


def canary_size(strategy: Strategy, total: int) -> int:
    canary = strategy.canary
    if canary is None:
        return 0
    if isinstance(canary, list):
        return len(canary)
    return min(total, max(1, share(canary, total, round_up=True)) if canary else 0)


def wave_sizes(total: int, strategy: Strategy) -> list[int]:
    """How many tenants each wave holds, canary first; sums to `total`, none empty."""
    sizes: list[int] = []
    first = min(canary_size(strategy, total), total)
    if first:
        sizes.append(first)
    rest = total - first
    waves = strategy.waves
    if waves is None:
        if rest:
            sizes.append(rest)
        return sizes
    base = max(1, share(waves.size, total, round_up=True))
    k = 0
    while rest > 0:
        step = base if waves.type == "linear" else math.ceil(base * waves.factor**k - 1e-9)
        step = min(step, rest)
        sizes.append(step)
        rest -= step
        k += 1
        if len(sizes) > MAX_WAVES:
            break
    return sizes


def plan_waves(tenant_ids: list[str], strategy: Strategy) -> list[list[str]]:
    """The tenants of each wave: named canaries (in the canary's order) or the first ones of
    the plan, then the rest in plan order, cut by `wave_sizes`."""
    if isinstance(strategy.canary, list):
        named = set(strategy.canary)
        first = [t for t in strategy.canary if t in set(tenant_ids)]
        rest = [t for t in tenant_ids if t not in named]
        ordered = first + rest
    else:
        ordered = list(tenant_ids)
    out: list[list[str]] = []
    start = 0
    for size in wave_sizes(len(tenant_ids), strategy):
        out.append(ordered[start : start + size])
        start += size
    return out


def budget_limit(budget: FailureBudget, total: int) -> int:
    """Failures tolerated out of `total` tenants (the plan's, or the wave's for scope wave)."""
    return share(budget.max, total, round_up=False)


def strategy_errors(
    strategy: Strategy | None, tenant_ids: set[str], total: int, gates: dict[str, str]
) -> list[dict[str, str]]:
    """What the plan's tenants and the operator's settings make wrong in a valid strategy."""
    if strategy is None:
        return []
    errors: list[dict[str, str]] = []
    if isinstance(strategy.canary, list):
        for i, name in enumerate(strategy.canary):
            if name not in tenant_ids:
                errors.append(
                    {"field": f"strategy.canary[{i}]", "reason": f"{name} is not in the plan"}
                )
    if strategy.gate is not None and strategy.gate not in gates:
        errors.append(
            {
                "field": "strategy.gate",
                "reason": f"no gate named {strategy.gate} is configured (DEPLOYER_GATES)",
            }
        )
    if total and len(wave_sizes(total, strategy)) > MAX_WAVES:
        errors.append(
            {"field": "strategy.waves", "reason": f"more than {MAX_WAVES} waves; use larger ones"}
        )
    return errors
