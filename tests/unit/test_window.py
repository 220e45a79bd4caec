"""Maintenance windows (deployer/window.py): when waves may start, in the window's own time
zone, across midnight and daylight-saving changes, and what an invalid one is refused for."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from deployer.strategy import Strategy
from deployer.window import Window, is_open, next_open, window_arg

NIGHTS = Window.model_validate(
    {"timeZone": "Europe/Berlin",
     "periods": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "22:00", "end": "06:00"}]}
)  # fmt: skip


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("at", "open_"),
    [
        (utc(2026, 3, 2, 20, 59), False),  # Monday 21:59 Berlin (UTC+1)
        (utc(2026, 3, 2, 21, 0), True),  # Monday 22:00: opens
        (utc(2026, 3, 3, 4, 59), True),  # Tuesday 05:59: Monday's period runs past midnight
        (utc(2026, 3, 3, 5, 0), False),  # Tuesday 06:00: closed (the end is exclusive)
        (utc(2026, 3, 7, 0, 0), True),  # Saturday 01:00: Friday's night
        (utc(2026, 3, 7, 21, 30), False),  # Saturday 22:30: no period on Saturdays
    ],
)
def test_a_window_is_open_inside_its_periods_in_its_own_zone(at, open_):
    assert is_open(NIGHTS, at) is open_


def test_the_next_opening_skips_days_without_a_period():
    saturday_noon = utc(2026, 3, 7, 11, 0)
    assert next_open(NIGHTS, saturday_noon) == utc(2026, 3, 9, 21, 0)  # Monday 22:00 Berlin


def test_local_hours_hold_across_a_daylight_saving_change():
    # Berlin moves to UTC+2 on 2026-03-29: 22:00 local is 20:00 UTC from then on
    assert next_open(NIGHTS, utc(2026, 3, 27, 12, 0)) == utc(2026, 3, 27, 21, 0)
    assert next_open(NIGHTS, utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 30, 20, 0)


def test_the_wave_step_is_told_open_or_when_it_opens():
    ms = lambda d: int(d.timestamp() * 1000)  # noqa: E731
    assert window_arg(None, ms(utc(2026, 3, 7, 11, 0))) == ""
    assert window_arg(NIGHTS, ms(utc(2026, 3, 2, 22, 0))) == "OPEN"
    assert window_arg(NIGHTS, ms(utc(2026, 3, 7, 11, 0))) == f"CLOSED:{ms(utc(2026, 3, 9, 21, 0))}"


def test_a_whole_day_is_00_00_to_24_00():
    days = Window.model_validate({"periods": [{"days": ["sun"], "start": "00:00", "end": "24:00"}]})
    assert is_open(days, utc(2026, 3, 8, 23, 59)) and not is_open(days, utc(2026, 3, 9, 0, 0))


@pytest.mark.parametrize(
    ("window", "field"),
    [
        (
            {"timeZone": "Mars/Olympus", "periods": [{"start": "01:00", "end": "02:00"}]},
            "window.timeZone",
        ),  # fmt: skip
        ({"periods": [{"start": "01:00", "end": "01:00"}]}, "window.periods.0"),
        ({"periods": [{"start": "25:00", "end": "01:00"}]}, "window.periods.0.start"),
        ({"periods": [{"start": "24:00", "end": "01:00"}]}, "window.periods.0.start"),
        ({"periods": [{"start": "1:00", "end": "02:00"}]}, "window.periods.0.start"),
        (
            {"periods": [{"days": ["mon", "mon"], "start": "01:00", "end": "02:00"}]},
            "window.periods.0",
        ),  # fmt: skip
        (
            {"periods": [{"days": ["monday"], "start": "01:00", "end": "02:00"}]},
            "window.periods.0.days.0",
        ),  # fmt: skip
        ({"periods": []}, "window.periods"),
        ({"periods": [{"start": "01:00", "end": "02:00"}], "cron": "* * * * *"}, "window.cron"),
    ],
)
def test_an_invalid_window_is_refused_naming_the_field(window, field):
    with pytest.raises(ValidationError) as caught:
        Strategy.model_validate({"window": window})
    fields = {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}
    assert field in fields, fields
