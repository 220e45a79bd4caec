"""deployer/state/keys.py is the one owner of deployer's key names: the Lua scripts use the
locals of the prelude's key block (written in from keys.py when a script is loaded) and spell
no key name of their own."""

from __future__ import annotations

import re
from importlib import resources
from typing import get_args

from deployer.state import keys, prelude, scripts

LUA = resources.files("deployer.state").joinpath("lua")


def _sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in LUA.iterdir() if p.name.endswith(".lua")}


def _outside_the_block(name: str, text: str) -> str:
    if name != "_prelude.lua":
        return text
    start = text.index(prelude.KEYS_BEGIN)
    end = text.index(prelude.KEYS_END) + len(prelude.KEYS_END)
    return text[:start] + text[end:]


def test_the_prelude_file_holds_the_block_generated_from_keys_py() -> None:
    text = LUA.joinpath("_prelude.lua").read_text()
    assert prelude.key_block() in text, "run: python -m deployer.state.prelude --write"


def test_no_script_spells_a_key_name_outside_the_generated_block() -> None:
    spelled = {
        f"{name}:{i}: {line.strip()}"
        for name, text in _sources().items()
        for i, line in enumerate(_outside_the_block(name, text).splitlines(), 1)
        if "deployer:" in line
    }
    assert spelled == set()


def test_every_key_local_a_script_uses_is_in_the_block_and_every_one_is_used() -> None:
    names = set(prelude.key_names())
    used = {
        m
        for name, text in _sources().items()
        for m in re.findall(r"\bK_[A-Z_]+\b", _outside_the_block(name, text))
    }
    assert used == names


def test_the_block_names_the_keys_of_keys_py() -> None:
    names = prelude.key_names()
    assert names["K_EVENTS"] == keys.EVENTS
    assert names["K_PLAN_TIMERS"] == keys.PLAN_TIMERS
    assert names["K_PLAN_PREFIX"] + "p1" == keys.plan("p1")
    assert names["K_NOTIFY_EVENT_PREFIX"] + "1-0" == keys.notify_event("1-0")
    assert names["K_NOTIFY_DUE_PREFIX"] + "ops" == keys.notify_due("ops")


def test_every_loaded_script_but_the_targets_carries_the_block_from_keys_py() -> None:
    block = prelude.key_block()
    for name in get_args(scripts.ScriptName):
        assert (block in scripts.source(name)) is (name != "kv_write"), name


def test_the_block_is_written_afresh_when_a_script_is_loaded() -> None:
    stale = LUA.joinpath("_prelude.lua").read_text().replace(keys.STATS, "deployer:old-stats")
    assert "deployer:old-stats" not in prelude.with_keys(stale)
    assert f"local K_STATS = '{keys.STATS}'" in prelude.with_keys(stale)
