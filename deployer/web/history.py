"""Event history for the API: the one function to swap for `deployer.audit.history()`.

Until per-plan and per-tenant streams exist, this scans `deployer:events` newest first, at
most `scan` entries per request, and answers where to continue (`nextCursor`, an entry
id; None once the oldest kept event was read) — never silently partial.
"""

from __future__ import annotations

from typing import Any

import redis

from deployer import keys

SCAN = 50_000
CHUNK = 2_000


def matches(fields: dict[str, str], plan: str | None, tenant: str | None) -> bool:
    if plan and fields.get("planId") != plan:
        return False
    return not (tenant and fields.get("tenantId") != tenant)


def history(
    r: redis.Redis,
    plan: str | None = None,
    tenant: str | None = None,
    limit: int = 100,
    before: str | None = None,
    scan: int = SCAN,
) -> dict[str, Any]:
    """Up to `limit` events (newest first) of `plan` and/or `tenant` older than `before`."""
    items: list[dict[str, Any]] = []
    high = f"({before}" if before else "+"
    scanned, last = 0, None
    exhausted = False
    while len(items) < limit and scanned < scan:
        want = min(CHUNK, scan - scanned)
        batch: list[tuple[str, dict[str, str]]] = r.xrevrange(  # type: ignore[assignment]
            keys.EVENTS, max=high, min="-", count=want
        )
        if not batch:
            exhausted = True
            break
        for entry_id, fields in batch:
            scanned += 1
            last = entry_id
            if matches(fields, plan, tenant):
                items.append({"id": entry_id, **fields})
                if len(items) == limit:
                    break
        high = f"({last}"
        if len(batch) < want and len(items) < limit:
            exhausted = True
            break
    return {
        "items": items,
        "nextCursor": None if exhausted else last,
        "scanned": scanned,
    }
