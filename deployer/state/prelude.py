"""The shared Lua prelude's configured lines: history retention and bounds, the events that
notify, written in from the settings before any script is registered; and its key block,
the names of deployer's keys that the scripts use, written in from deployer/state/keys.py.

Apart from deployer/audit.py (which records events through the scripts) so that the script
loader (deployer/state/scripts.py) can configure the prelude without importing the audit trail.

The key block in lua/_prelude.lua is a copy of `key_block()` (tests/unit/test_lua_keys.py
keeps the two the same, and `python -m deployer.state.prelude --write` rewrites it), so the
file reads and runs as it is loaded; it is written in afresh from keys.py either way.
"""

from __future__ import annotations

import re
import sys
from importlib import resources
from pathlib import Path

from deployer.settings import Settings, get_settings
from deployer.state import keys

#: The lines that delimit the key block of the prelude.
KEYS_BEGIN = "-- BEGIN KEYS"
KEYS_END = "-- END KEYS"


def _prefix(template: str) -> str:
    """A template's name up to its one trailing placeholder: the script appends the id."""
    head, brace, tail = template.partition("{")
    if not brace or not tail.endswith("}") or "{" in tail:
        raise ValueError(f"{template!r}: not a name followed by one placeholder")
    return head


def key_names() -> dict[str, str]:
    """The Lua local of each key name the scripts use without being given it (KEYS or ARGV
    name the rest), and its name in keys.py; `_PREFIX`: the id is appended in Lua."""
    return {
        "K_EVENTS": keys.EVENTS,
        "K_STATS": keys.STATS,
        "K_PLAN_TIMERS": keys.PLAN_TIMERS,
        "K_PARKED": keys.PARKED,
        "K_AWAITING_APPROVAL": keys.AWAITING_APPROVAL,
        "K_NOTIFY_OUTBOX": keys.NOTIFY_OUTBOX,
        "K_NOTIFY_ACTIVE": keys.NOTIFY_ACTIVE,
        "K_PLAN_PREFIX": _prefix(keys.PLAN),
        "K_NOTIFY_EVENT_PREFIX": _prefix(keys.NOTIFY_EVENT),
        "K_NOTIFY_DUE_PREFIX": _prefix(keys.NOTIFY_DUE),
    }


def key_block() -> str:
    """The prelude's key block, from keys.py (names are plain: no quoting needed)."""
    lines = [KEYS_BEGIN]
    for local, name in key_names().items():
        if not re.fullmatch(r"[A-Za-z0-9:._-]+", name):
            raise ValueError(f"key name {name!r} needs quoting in Lua")
        lines.append(f"local {local} = '{name}'")
    return "\n".join([*lines, KEYS_END])


def with_keys(prelude: str) -> str:
    """`prelude` with its key block written afresh from keys.py."""
    start = prelude.find(KEYS_BEGIN + "\n")
    end = prelude.find(KEYS_END + "\n", start)
    if start < 0 or end < 0:
        raise RuntimeError("deployer/state/lua/_prelude.lua lost its key block")
    return prelude[:start] + key_block() + prelude[end + len(KEYS_END) :]


#: The lines of the prelude that `configure_prelude` rewrites from the settings.
_RETENTION_LINE = "local EVENTS_RETENTION_MS = 604800000"
_MAXLEN_LINE = "local EVENTS_INDEX_MAXLEN = 1000000"
_EVENTS_MAXLEN_LINE = "local EVENTS_MAXLEN = 100000"
_NOTIFY_EVENTS_LINE = "local NOTIFY_EVENTS = {}"
_NOTIFY_RETENTION_LINE = "local NOTIFY_RETENTION_MS = 86400000"


def configure_prelude(prelude: str, settings: Settings | None = None) -> str:
    """The Lua prelude with the history retention and bounds of `settings`, the names of
    the events that notify (deployer/notify/events.py) and of the keys (keys.py) written in."""
    from deployer.notify.events import ALL

    s = settings or get_settings()
    prelude = with_keys(prelude)
    lines = {
        _RETENTION_LINE: f"local EVENTS_RETENTION_MS = {int(s.events_retention_seconds * 1000)}",
        _MAXLEN_LINE: f"local EVENTS_INDEX_MAXLEN = {int(s.events_index_maxlen)}",
        _EVENTS_MAXLEN_LINE: f"local EVENTS_MAXLEN = {int(s.events_maxlen)}",
        _NOTIFY_EVENTS_LINE: "local NOTIFY_EVENTS = {"
        + ", ".join(f"{name} = true" for name in ALL)
        + "}",
        _NOTIFY_RETENTION_LINE: (
            f"local NOTIFY_RETENTION_MS = {int(s.notify_retention_seconds * 1000)}"
        ),
    }
    for line, configured in lines.items():
        if line not in prelude:
            raise RuntimeError(f"deployer/state/lua/_prelude.lua lost the line {line!r}")
        prelude = prelude.replace(line, configured)
    return prelude


def _file() -> Path:
    return Path(str(resources.files("deployer.state").joinpath("lua/_prelude.lua")))


if __name__ == "__main__":  # python -m deployer.state.prelude --write: refresh the file's copy
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m deployer.state.prelude --write")
    _file().write_text(with_keys(_file().read_text()))
