"""Event history for the API, from `deployer.audit.history` (complete per plan and tenant).

A page answers where to continue (`nextCursor`, an entry id; None once the oldest kept event
was read) and whether older history was trimmed by retention — never silently partial.
"""

from __future__ import annotations

from typing import Any

import redis

from deployer import audit


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
) -> dict[str, Any]:
    """Up to `limit` events (newest first) of `plan` and/or `tenant` older than `before`."""
    page = audit.history(r, plan_id=plan, tenant_id=tenant, count=limit, before=before)
    items = [{"id": entry_id, **fields} for entry_id, fields in page.events]
    return {
        "items": items,
        "nextCursor": items[-1]["id"] if page.more and items else None,
        "trimmed": page.reaches_trimmed_part,
        "scanned": len(items),
    }
