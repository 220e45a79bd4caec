"""The shared Lua prelude's configured lines: history retention and bounds, and the events
that notify, written in from the settings before any script is registered.

Apart from deployer/audit.py (which records events through the scripts) so that the script
loader (deployer/state/scripts.py) can configure the prelude without importing the audit trail.
"""

from __future__ import annotations

from deployer.settings import Settings, get_settings

#: The lines of the prelude that `configure_prelude` rewrites from the settings.
_RETENTION_LINE = "local EVENTS_RETENTION_MS = 604800000"
_MAXLEN_LINE = "local EVENTS_INDEX_MAXLEN = 1000000"
_EVENTS_MAXLEN_LINE = "local EVENTS_MAXLEN = 100000"
_NOTIFY_EVENTS_LINE = "local NOTIFY_EVENTS = {}"
_NOTIFY_RETENTION_LINE = "local NOTIFY_RETENTION_MS = 86400000"


def configure_prelude(prelude: str, settings: Settings | None = None) -> str:
    """The Lua prelude with the history retention and bounds of `settings`, and the names
    of the events that notify (deployer/notify/events.py), written in."""
    from deployer.notify.events import ALL

    s = settings or get_settings()
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
