"""The audit trail: complete per-plan and per-tenant event history, and refusals recorded.

Every event goes to the bounded global stream `deployer:events` (the live feed) and, in the
same script (the Lua `emit` in deployer/lua/_prelude.lua), under the same entry id to
`deployer:events:plan:{planId}` and `deployer:events:tenant:{tenantId}`. The global stream is
capped by count, so a busy system pushes a quiet plan's events out of it within minutes;
the per-plan and per-tenant streams are trimmed by age instead
(`DEPLOYER_EVENTS_RETENTION_SECONDS`, a week by default, with a count bound for safety), so
`history` is complete for as long as it is kept, and says so when older entries are gone.

Python code never XADDs events itself: it calls `record`, which runs the same `emit`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis

from deployer import keys
from deployer.settings import Settings, get_settings

#: The two lines of the prelude that `configure_prelude` rewrites from the settings.
_RETENTION_LINE = "local EVENTS_RETENTION_MS = 604800000"
_MAXLEN_LINE = "local EVENTS_INDEX_MAXLEN = 1000000"
#: Entries read per XREVRANGE while filtering a tenant's stream by plan.
_PAGE = 500

Entry = tuple[str, dict[str, str]]


def configure_prelude(prelude: str, settings: Settings | None = None) -> str:
    """The Lua prelude with the history retention and bound of `settings` written in."""
    s = settings or get_settings()
    return prelude.replace(
        _RETENTION_LINE, f"local EVENTS_RETENTION_MS = {int(s.events_retention_seconds * 1000)}"
    ).replace(_MAXLEN_LINE, f"local EVENTS_INDEX_MAXLEN = {int(s.events_index_maxlen)}")


def record(r: redis.Redis, fields: dict[str, Any], settings: Settings | None = None) -> str:
    """Append one event (global stream and its plan/tenant indices); returns its id.

    For events Python decides (a refused command, a plan command's summary); the scripts
    that change state emit their own in the same round trip.
    """
    from deployer.store import lua_script  # the store loads this module's prelude settings

    s = settings or get_settings()
    pairs: list[Any] = []
    for k, v in fields.items():
        if v is not None:
            pairs += [k, v]
    if "ts" not in fields:
        pairs += ["ts", int(time.time() * 1000)]
    script = r.register_script(lua_script("event_record"))
    return str(script(keys=[keys.EVENTS], args=[s.events_maxlen, *pairs]))


@dataclass(frozen=True)
class History:
    """One page of filtered history, newest first."""

    events: list[Entry] = field(default_factory=list)
    #: Older entries exist (kept) beyond this page: ask again with `before=` the last id.
    more: bool = False
    #: Entries older than the oldest kept one were removed (retention or the count bound),
    #: or the whole stream expired. Only meaningful when `more` is False.
    trimmed: bool = False
    #: Id of the oldest entry still kept ('' when none is).
    oldest_kept: str = ""

    @property
    def reaches_trimmed_part(self) -> bool:
        """This page goes back to where kept history starts, and older was removed."""
        return self.trimmed and not self.more


def history(
    r: redis.Redis,
    plan_id: str | None = None,
    tenant_id: str | None = None,
    count: int = 50,
    before: str | None = None,
) -> History:
    """The newest `count` events of a plan, a tenant, or one (plan, tenant) task, newest first.

    Complete: read from the plan's or the tenant's own stream, not filtered out of the global
    one. With both ids, the tenant's stream is filtered by plan (a tenant sees few plans).
    `before` (an entry id, exclusive) pages back. With neither id: the global stream.
    """
    if tenant_id:
        key = keys.events_tenant(tenant_id)
    elif plan_id:
        key = keys.events_plan(plan_id)
    else:
        key = keys.EVENTS
    wanted = max(int(count), 0)
    only_plan = plan_id if tenant_id else None
    size = _PAGE if only_plan else min(_PAGE, wanted + 1)
    selected: list[Entry] = []
    top = f"({before}" if before else "+"
    more = False
    while not more:
        page: list[Entry] = r.xrevrange(key, max=top, min="-", count=size)  # type: ignore[assignment]
        for entry_id, fields in page:
            if only_plan and fields.get("planId") != only_plan:
                continue
            if len(selected) == wanted:
                more = True  # one older match exists beyond the page asked for
                break
            selected.append((entry_id, fields))
        if len(page) < size:
            break
        top = f"({page[-1][0]}"
    trimmed, oldest = _trimmed(r, key, plan_id, tenant_id)
    return History(selected, more, trimmed, oldest)


def _trimmed(
    r: redis.Redis, key: str, plan_id: str | None, tenant_id: str | None
) -> tuple[bool, str]:
    """Whether entries older than the oldest kept one are gone, and that oldest id."""
    try:
        info: dict[str, Any] = r.xinfo_stream(key)
    except redis.ResponseError:  # no such stream: expired whole, or never indexed
        owner = keys.tenant(tenant_id) if tenant_id else keys.plan(plan_id) if plan_id else None
        return (bool(owner and r.exists(owner)), "")
    first = info.get("first-entry")
    oldest = str(first[0]) if first else ""
    # Redis/Valkey >= 7 count every entry ever added; fewer kept means some were trimmed
    added = info.get("entries-added")
    if added is not None:
        return (int(added) > int(info.get("length") or 0), oldest)
    # older servers: the oldest kept entry sits at the retention's edge
    retention_ms = get_settings().events_retention_seconds * 1000
    age = time.time() * 1000 - int(oldest.split("-")[0] or 0)
    return (bool(oldest) and age >= retention_ms - 3600_000, oldest)
