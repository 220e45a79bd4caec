"""The history settings reach the Lua prelude, and its index keys match deployer/state/keys.py."""

from __future__ import annotations

from importlib import resources

from deployer import audit
from deployer.settings import Settings
from deployer.state import keys

PRELUDE = resources.files("deployer.state").joinpath("lua/_prelude.lua").read_text()


def test_retention_and_bound_are_written_into_the_prelude():
    text = audit.configure_prelude(
        PRELUDE, Settings(events_retention_seconds=3600, events_index_maxlen=5000)
    )
    assert "local EVENTS_RETENTION_MS = 3600000\n" in text
    assert "local EVENTS_INDEX_MAXLEN = 5000\n" in text
    default = audit.configure_prelude(PRELUDE, Settings())
    assert "local EVENTS_RETENTION_MS = 604800000\n" in default


def test_the_lua_index_keys_are_the_templates_of_keys_py():
    assert "events_key .. ':plan:' .. plan_id" in PRELUDE
    assert "events_key .. ':tenant:' .. tenant_id" in PRELUDE
    assert keys.events_plan("p1") == keys.EVENTS + ":plan:p1"
    assert keys.events_tenant("t1") == keys.EVENTS + ":tenant:t1"
