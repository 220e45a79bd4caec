"""The audit trail: complete per-plan and per-tenant event history, and refusals recorded.

Every event goes to the bounded global stream `deployer:events` (the live feed) and, in the
same script (the Lua `emit` in deployer/lua/_prelude.lua), under the same entry id to the
stream `deployer:events:plan:{planId}`, with a reference `'entryId planId'` appended to the
list `deployer:events:tenant:{tenantId}` (a list of references costs ~350 bytes for ten
events where a stream of its own costs ~4.7 KB, times 100,000 tenants). The global stream is
capped by count, so a busy system pushes a quiet plan's events out of it within minutes;
the per-plan streams and per-tenant references are trimmed by age instead
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

#: The lines of the prelude that `configure_prelude` rewrites from the settings.
_RETENTION_LINE = "local EVENTS_RETENTION_MS = 604800000"
_MAXLEN_LINE = "local EVENTS_INDEX_MAXLEN = 1000000"
_EVENTS_MAXLEN_LINE = "local EVENTS_MAXLEN = 100000"
_NOTIFY_EVENTS_LINE = "local NOTIFY_EVENTS = {}"
_NOTIFY_RETENTION_LINE = "local NOTIFY_RETENTION_MS = 86400000"
#: References read per LRANGE while walking a tenant's history back.
_PAGE = 500

Entry = tuple[str, dict[str, str]]


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
            raise RuntimeError(f"deployer/lua/_prelude.lua lost the line {line!r}")
        prelude = prelude.replace(line, configured)
    return prelude


def record(r: redis.Redis, fields: dict[str, Any], settings: Settings | None = None) -> str:
    """Append one event (global stream and its plan/tenant indices); returns its id.

    For events Python decides (a refused command, a plan command's summary); the scripts
    that change state emit their own in the same round trip.
    """
    s = settings or get_settings()
    pairs: list[Any] = []
    for k, v in fields.items():
        if v is not None:
            pairs += [k, v]
    if "ts" not in fields:
        pairs += ["ts", int(time.time() * 1000)]
    from deployer import scripts  # the loader imports this module for its prelude

    script = scripts.load(r, "event_record")
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

    Complete: read from the plan's own stream, or through the tenant's references into the
    streams of its plans, not filtered out of the global one. `before` (an entry id,
    exclusive) pages back. With neither id: the newest entries of the global stream.
    """
    if tenant_id:
        return _tenant_history(r, tenant_id, plan_id, max(int(count), 0), before)
    key = keys.events_plan(plan_id) if plan_id else keys.EVENTS
    wanted = max(int(count), 0)
    top = f"({before}" if before else "+"
    page: list[Entry] = r.xrevrange(key, max=top, min="-", count=wanted + 1)  # type: ignore[assignment]
    trimmed, oldest = _stream_trimmed(r, key, plan_id)
    return History(page[:wanted], len(page) > wanted, trimmed, oldest)


def _tenant_history(
    r: redis.Redis, tenant_id: str, plan_id: str | None, wanted: int, before: str | None
) -> History:
    key = keys.events_tenant(tenant_id)
    limit = id_key(before) if before else None
    refs: list[tuple[str, str]] = []  # (entry id, plan id), newest first
    more = False
    end = -1
    while not more:
        chunk: list[str] = r.lrange(key, end - _PAGE + 1, end)  # type: ignore[assignment]
        for ref in reversed(chunk):
            entry_id, _, ref_plan = ref.partition(" ")
            if (plan_id and ref_plan != plan_id) or (limit and id_key(entry_id) >= limit):
                continue
            if len(refs) == wanted:
                more = True
                break
            refs.append((entry_id, ref_plan))
        if len(chunk) < _PAGE:
            break
        end -= _PAGE
    pipe = r.pipeline(transaction=False)
    for entry_id, ref_plan in refs:
        pipe.xrange(keys.events_plan(ref_plan), min=entry_id, max=entry_id, count=1)
    events: list[Entry] = [found[0] for found in pipe.execute() if found]
    oldest: list[str] = r.lrange(key, 0, 0)  # type: ignore[assignment]
    if oldest:
        gone = len(events) < len(refs) or bool(r.exists(keys.EVENTS_TENANT_TRIMMED.format(
            tenant_id=tenant_id)))  # fmt: skip
        return History(events, more, gone, oldest[0].partition(" ")[0])
    # no references at all: expired whole (trimmed) if the tenant ever had a task
    return History(events, more, bool(r.exists(keys.tenant(tenant_id))), "")


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a comparable (ms, sequence) pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _stream_trimmed(r: redis.Redis, key: str, plan_id: str | None) -> tuple[bool, str]:
    """Whether entries older than the oldest kept one are gone, and that oldest id."""
    try:
        info: dict[str, Any] = r.xinfo_stream(key)
    except redis.ResponseError:  # no such stream: expired whole, or never indexed
        return (bool(plan_id and r.exists(keys.plan(plan_id))), "")
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
