"""Times as every read model shows them: ISO-8601 UTC with milliseconds ("…T15:22:37.595Z")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def iso(ms: Any) -> str | None:
    """Milliseconds since the epoch (as stored) to ISO-8601 UTC; None when unset or unreadable."""
    if ms in (None, ""):
        return None
    try:
        value = int(ms)
    except (TypeError, ValueError):
        return None
    stamp = datetime.fromtimestamp(value / 1000, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
