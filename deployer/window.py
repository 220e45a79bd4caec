"""Maintenance windows: when a plan's waves may start (a strategy's optional `window`).

Pure: no Redis. A window is a time zone and one or more weekly periods ("mon-fri 22:00 to
06:00 Europe/Berlin"); a period whose end is not after its start runs past midnight and
belongs to the day it starts on. Times are wall-clock times in the window's zone, so a
window keeps its local hours across daylight-saving changes (zoneinfo does the arithmetic).
Outside every period no wave starts; a wave that is running when the window closes
finishes (deployer/state/lua/wave_step.lua asks `window_arg` before it starts a wave).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: "HH:MM" (or "HH:MM:SS"), 00:00 to 23:59:59, and 24:00 as an end (the end of the day).
CLOCK_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$|^24:00$"
MAX_PERIODS = 28


class _WindowModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True
    )


class Period(_WindowModel):
    """One weekly period: on each of `days`, from `start` to `end` (local times)."""

    days: Annotated[list[Day], Field(min_length=1, max_length=7)] = Field(
        default_factory=lambda: list(DAYS)
    )
    start: str = Field(pattern=CLOCK_PATTERN)
    end: str = Field(pattern=CLOCK_PATTERN)

    @field_validator("start")
    @classmethod
    def _start_in_day(cls, v: str) -> str:
        if v == "24:00":
            raise ValueError("a period starts at 23:59:59 at the latest")
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> Period:
        if _clock(self.start) == _clock(self.end):
            raise ValueError("start and end are equal: an empty period (00:00 to 24:00 is a day)")
        if len(set(self.days)) != len(self.days):
            raise ValueError("a day is named twice")
        return self


class Window(_WindowModel):
    """`strategy.window`: waves start only inside one of its periods."""

    time_zone: str = Field("UTC", max_length=64)
    periods: Annotated[list[Period], Field(min_length=1, max_length=MAX_PERIODS)]

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v} is not an IANA time zone (e.g. Europe/Berlin, UTC)") from None
        return v


def _clock(text: str) -> tuple[time, bool]:
    """(time, is 24:00)."""
    if text == "24:00":
        return time(0, 0), True
    parts = [int(part) for part in text.split(":")] + [0]
    return time(parts[0], parts[1], parts[2]), False


def _intervals(window: Window, around: datetime) -> list[tuple[datetime, datetime]]:
    """Every period's occurrence from the day before `around` (local) to 8 days after, as
    aware datetimes, sorted by start."""
    zone = ZoneInfo(window.time_zone)
    local = around.astimezone(zone).date()
    out: list[tuple[datetime, datetime]] = []
    for offset in range(-1, 9):
        day: date = local + timedelta(days=offset)
        name = DAYS[day.weekday()]
        for period in window.periods:
            if name not in period.days:
                continue
            start_t, _ = _clock(period.start)
            end_t, midnight = _clock(period.end)
            start = datetime.combine(day, start_t, tzinfo=zone)
            end_day = day + timedelta(days=1) if midnight or end_t <= start_t else day
            end = datetime.combine(end_day, end_t, tzinfo=zone)
            out.append((start, end))
    return sorted(out)


def is_open(window: Window, at: datetime) -> bool:
    return any(start <= at < end for start, end in _intervals(window, at))


def next_open(window: Window, at: datetime) -> datetime | None:
    """When the window next opens after `at` (None: never within a week, which a valid
    window cannot be)."""
    for start, _end in _intervals(window, at):
        if start > at:
            return start
    return None


def window_arg(window: Window | None, now_ms: int) -> str:
    """What the wave step is told: '' (no window), 'OPEN', or 'CLOSED:<ms it opens>'."""
    if window is None:
        return ""
    at = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    if is_open(window, at):
        return "OPEN"
    opens = next_open(window, at)
    when = int(opens.timestamp() * 1000) if opens else now_ms + 3_600_000
    return f"CLOSED:{when}"


__all__ = ["DAYS", "Period", "Window", "is_open", "next_open", "window_arg"]
