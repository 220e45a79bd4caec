"""The audit trail: complete per-plan and per-tenant event history, and refusals recorded.

Every event goes to the bounded global stream `deployer:events` (the live feed) and, in the
same script (the Lua `emit` in deployer/state/lua/_prelude.lua), under the same entry id to the
stream `deployer:events:plan:{planId}`, with a reference `'entryId planId'` appended to the
list `deployer:events:tenant:{tenantId}` (a list of references costs ~350 bytes for ten
events where a stream of its own costs ~4.7 KB, times 100,000 tenants). The global stream is
capped by count, so a busy system pushes a quiet plan's events out of it within minutes;
the per-plan streams and per-tenant references are trimmed by age instead
(`DEPLOYER_EVENTS_RETENTION_SECONDS`, a week by default, with a count bound for safety), so
`history` is complete for as long as it is kept, and says so when older entries are gone
(a plan's history begins with PLAN_CREATED; a tenant's first reference is kept for good).

Python code never XADDs events itself: it calls `record`, which runs the same `emit`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from deployer.settings import Settings, get_settings
from deployer.state import keys, scripts
from deployer.state.prelude import (
    configure_prelude as configure_prelude,  # re-exported: its old home
)

#: References read per LRANGE while walking a tenant's history back.
_PAGE = 500

Entry = tuple[str, dict[str, str]]


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
    script = scripts.load(r, "event_record")
    return str(script(keys=[keys.EVENTS], args=[s.events_maxlen, *pairs]))


#: The first event of every plan: a plan's history that starts elsewhere lost its beginning.
FIRST_PLAN_EVENT = "PLAN_CREATED"


@dataclass(frozen=True)
class History:
    """One page of filtered history, newest first."""

    events: list[Entry] = field(default_factory=list)
    #: Older entries exist (kept) beyond this page: ask again with `before=` the last id.
    more: bool = False
    #: Entries older than the oldest kept one were removed (retention or the count bound),
    #: or the whole history expired. Only meaningful when `more` is False.
    trimmed: bool = False
    #: Id of the oldest entry still kept ('' when none is).
    oldest_kept: str = ""
    #: How many kept entries are older than this page (None: not counted, with `before`).
    older: int | None = None

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

    Complete for as long as it is kept: read from the plan's own stream, or through the
    tenant's references into the streams of its plans, not filtered out of the global one.
    `before` (an entry id, exclusive) pages back. With neither id: the newest entries of the
    global stream. `trimmed` says when older history is gone, `oldest_kept` since when.
    """
    if tenant_id:
        return _tenant_history(r, tenant_id, plan_id, max(int(count), 0), before)
    key = keys.events_plan(plan_id) if plan_id else keys.EVENTS
    wanted = max(int(count), 0)
    top = f"({before}" if before else "+"
    page: list[Entry] = r.xrevrange(key, max=top, min="-", count=wanted + 1)  # type: ignore[assignment]
    trimmed, oldest, length = _stream_state(r, key, plan_id)
    shown = page[:wanted]
    older = None if before else max(length - len(shown), 0)
    return History(shown, len(page) > wanted, trimmed, oldest, older)


def iter_history(
    r: redis.Redis, plan_id: str | None = None, tenant_id: str | None = None, chunk: int = 1000
) -> Iterator[Entry]:
    """Every kept event of a plan, a tenant or one task, oldest first, read `chunk` at a time
    (memory stays bounded however long the history)."""
    if not tenant_id:
        key = keys.events_plan(plan_id) if plan_id else keys.EVENTS
        start = "-"
        while True:
            entries: list[Entry] = r.xrange(key, min=start, max="+", count=chunk)  # type: ignore[assignment]
            yield from entries
            if len(entries) < chunk:
                return
            start = f"({entries[-1][0]}"
    key = keys.events_tenant(tenant_id)
    at = 0
    while True:
        refs: list[str] = r.lrange(key, at, at + chunk - 1)  # type: ignore[assignment]
        pipe = r.pipeline(transaction=False)
        for ref in refs:
            entry_id, _, ref_plan = ref.partition(" ")
            if not plan_id or ref_plan == plan_id:
                pipe.xrange(keys.events_plan(ref_plan), min=entry_id, max=entry_id, count=1)
        for found in pipe.execute():
            if found:
                yield found[0]
        if len(refs) < chunk:
            return
        at += chunk


def _tenant_history(
    r: redis.Redis, tenant_id: str, plan_id: str | None, wanted: int, before: str | None
) -> History:
    key = keys.events_tenant(tenant_id)
    limit = id_key(before) if before else None
    refs: list[tuple[str, str]] = []  # (entry id, plan id), newest first
    older = 0  # matching references older than the page (not counted when paging)
    more = stop = False
    seen = 0
    end = -1
    while not stop:
        chunk: list[str] = r.lrange(key, end - _PAGE + 1, end)  # type: ignore[assignment]
        for ref in reversed(chunk):
            seen += 1
            entry_id, _, ref_plan = ref.partition(" ")
            if (plan_id and ref_plan != plan_id) or (limit and id_key(entry_id) >= limit):
                continue
            if len(refs) < wanted:
                refs.append((entry_id, ref_plan))
                continue
            more = True
            if limit:  # paging back: not counted
                stop = True
            elif not plan_id:  # every older reference matches: counted by position
                older = int(r.llen(key)) - seen + 1
                stop = True
            else:
                older += 1
            if stop:
                break
        if len(chunk) < _PAGE:
            break
        end -= _PAGE
    pipe = r.pipeline(transaction=False)
    for entry_id, ref_plan in refs:
        pipe.xrange(keys.events_plan(ref_plan), min=entry_id, max=entry_id, count=1)
    events: list[Entry] = [found[0] for found in pipe.execute() if found]
    oldest_ref, began, marked = _tenant_bounds(r, tenant_id)
    counted = None if limit else older
    if oldest_ref:
        oldest = oldest_ref.partition(" ")[0]
        gone = (
            len(events) < len(refs)
            or marked
            or bool(began and id_key(began.partition(" ")[0]) < id_key(oldest))
        )
        return History(events, more, gone, oldest, counted)
    # no references at all: expired whole (trimmed) if the tenant ever had a task
    gone = bool(began) or bool(r.exists(keys.tenant(tenant_id)))
    return History(events, more, gone, "", counted)


def _tenant_bounds(r: redis.Redis, tenant_id: str) -> tuple[str, str, bool]:
    """(oldest kept reference, the first reference ever, references were dropped) of a tenant."""
    pipe = r.pipeline(transaction=False)
    pipe.lindex(keys.events_tenant(tenant_id), 0)
    pipe.get(keys.EVENTS_TENANT_BEGAN.format(tenant_id=tenant_id))
    pipe.exists(keys.EVENTS_TENANT_TRIMMED.format(tenant_id=tenant_id))
    oldest, began, marked = pipe.execute()
    return str(oldest or ""), str(began or ""), bool(marked)


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a comparable (ms, sequence) pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _stream_state(r: redis.Redis, key: str, plan_id: str | None) -> tuple[bool, str, int]:
    """Whether entries older than the oldest kept one are gone, that oldest id, the length."""
    try:
        info: dict[str, Any] = r.xinfo_stream(key)
    except redis.ResponseError:  # no such stream: expired whole, or never indexed
        return (bool(plan_id and r.exists(keys.plan(plan_id))), "", 0)
    first = info.get("first-entry")
    oldest = str(first[0]) if first else ""
    length = int(info.get("length") or 0)
    if plan_id:
        # A plan's history begins with PLAN_CREATED: kept history that starts with anything
        # else lost its beginning, whether trimmed by age or by count, or expired whole and
        # begun again by a later event (a rollback weeks after the plan ran).
        fields: dict[str, Any] = first[1] if first else {}
        return (bool(first) and fields.get("type") != FIRST_PLAN_EVENT, oldest, length)
    # Redis/Valkey >= 7 count every entry ever added; fewer kept means some were trimmed
    added = info.get("entries-added")
    if added is not None:
        return (int(added) > length, oldest, length)
    # older servers: the oldest kept entry sits at the retention's edge
    retention_ms = get_settings().events_retention_seconds * 1000
    age = time.time() * 1000 - int(oldest.split("-")[0] or 0)
    return (bool(oldest) and age >= retention_ms - 3600_000, oldest, length)
