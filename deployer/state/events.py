"""The event log as Redis keeps it: the global stream, each plan's stream, each tenant's
references, and the live reads that follow them.

Every event is appended to the bounded global stream `deployer:events` (keys.EVENTS) and,
under the same entry id, to its plan's stream (keys.EVENTS_PLAN), with a reference
`'entryId planId'` pushed on its tenant's list (keys.EVENTS_TENANT) — all by the Lua `emit`
(lua/_prelude.lua) of the script that changed state, or of lua/event_record.lua for an event
decided in Python (`record`). A tenant's list has two markers beside it: the first reference
it ever had (keys.EVENTS_TENANT_BEGAN, never expiring) and a flag set when references were
dropped (keys.EVENTS_TENANT_TRIMMED).

This module reads and writes that layout and nothing more. What an event is, when a history
counts as complete and how it is shown stay with deployer/audit.py and the faces: the readers
here answer the facts those judgements need (`StreamPage`, `TenantPage`, `TenantBounds`), each
in one round trip where it can be. The sync readers take a `redis.Redis`; `LiveFeed` is the
asyncio reader of the global stream for the SSE hub (deployer/web/stream.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from deployer.state import keys, scripts
from deployer.state.prelude import (
    configure_prelude as configure_prelude,  # the history retention the Lua `emit` applies
)

if TYPE_CHECKING:  # the async client is loaded by the web server only
    import redis.asyncio as aioredis

#: One stream entry: its id ("ms-seq") and its fields.
Entry = tuple[str, dict[str, str]]

#: References read per LRANGE while walking a tenant's history back.
_PAGE = 500


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a comparable (ms, sequence) pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _stream(plan_id: str | None) -> str:
    """The plan's own stream, or the global one."""
    return keys.events_plan(plan_id) if plan_id else keys.EVENTS


# ---- writing -------------------------------------------------------------------------------


def record(client: redis.Redis, fields: Mapping[str, Any], maxlen: int) -> str:
    """Append one event through lua/event_record.lua (the same `emit` as every script: the
    plan's stream, the tenant's references, the counters and the notification outbox too);
    its entry id. `fields` are stored in their order, as given."""
    pairs: list[Any] = []
    for name, value in fields.items():
        pairs += [name, value]
    script = scripts.load(client, "event_record")
    return str(script(keys=[keys.EVENTS], args=[maxlen, *pairs]))


# ---- a stream's page -----------------------------------------------------------------------


@dataclass(frozen=True)
class StreamPage:
    """The newest entries of the global stream or of a plan's, and what the stream holds."""

    #: Newest first, at most the count asked for.
    entries: list[Entry]
    #: The oldest entry still kept (None: the stream is empty or not there).
    first: Entry | None
    #: Entries kept now.
    length: int
    #: Entries ever added (Redis/Valkey >= 7 count them; None on older servers or no stream).
    added: int | None
    #: The stream is there at all.
    exists: bool
    #: A plan's page only: the plan's hash is there (its history may have expired whole).
    plan_exists: bool = False

    @property
    def oldest_kept(self) -> str:
        """Id of the oldest kept entry ('' when none is)."""
        return self.first[0] if self.first else ""


def stream_page(
    client: redis.Redis, plan_id: str | None, count: int, before: str | None = None
) -> StreamPage:
    """Up to `count` entries of the plan's stream (None: the global one) older than `before`
    (an entry id, exclusive; None: the newest), with the stream's bounds: one round trip."""
    key = _stream(plan_id)
    pipe = client.pipeline(transaction=False)
    pipe.xrevrange(key, max=f"({before}" if before else "+", min="-", count=count)
    pipe.xinfo_stream(key)
    if plan_id:
        pipe.exists(keys.plan(plan_id))
    page, info, *plan = pipe.execute(raise_on_error=False)
    if isinstance(page, Exception):
        raise page
    plan_exists = bool(plan and plan[0])
    if isinstance(info, redis.ResponseError):  # no such stream: expired whole, or never written
        return StreamPage(list(page), None, 0, None, False, plan_exists)
    if isinstance(info, Exception):
        raise info
    first = info.get("first-entry")
    added = info.get("entries-added")
    return StreamPage(
        entries=list(page),
        first=(str(first[0]), dict(first[1])) if first else None,
        length=int(info.get("length") or 0),
        added=None if added is None else int(added),
        exists=True,
        plan_exists=plan_exists,
    )


# ---- a tenant's references -----------------------------------------------------------------


@dataclass(frozen=True)
class TenantBounds:
    """Where a tenant's kept references begin, and what says older ones are gone."""

    #: Entry id of the oldest kept reference ('' when none is).
    oldest_ref: str
    #: Entry id of the first reference the tenant ever had ('' when it never had one).
    began: str
    #: References were dropped (by age or by the count bound).
    marked: bool
    #: The tenant has a task (its latest-task key is there).
    known: bool


@dataclass(frozen=True)
class TenantPage:
    """One page of a tenant's references, newest first, and the entries they point at."""

    #: (entry id, plan id) of each reference on the page.
    refs: list[tuple[str, str]]
    #: The entries still kept that those references point at (a plan's stream may have
    #: lost some: fewer events than references).
    events: list[Entry]
    #: Matching references older than the page exist.
    more: bool
    #: How many matching references are older than the page (counted only without `before`).
    older: int
    bounds: TenantBounds


def _ref(ref: str) -> tuple[str, str]:
    """A reference `'entryId planId'` as (entry id, plan id)."""
    entry_id, _, plan_id = ref.partition(" ")
    return entry_id, plan_id


def tenant_page(
    client: redis.Redis,
    tenant_id: str,
    plan_id: str | None,
    wanted: int,
    before: str | None = None,
) -> TenantPage:
    """The newest `wanted` references of the tenant (only the plan's, with `plan_id`) older
    than `before`, walked back a chunk at a time; then their entries and the tenant's bounds
    in one round trip."""
    key = keys.events_tenant(tenant_id)
    limit = id_key(before) if before else None
    refs: list[tuple[str, str]] = []  # (entry id, plan id), newest first
    older = 0  # matching references older than the page (not counted when paging)
    more = stop = False
    seen = 0
    end = -1
    while not stop:
        chunk: list[str] = client.lrange(key, end - _PAGE + 1, end)  # type: ignore[assignment]
        for ref in reversed(chunk):
            seen += 1
            entry_id, ref_plan = _ref(ref)
            if (plan_id and ref_plan != plan_id) or (limit and id_key(entry_id) >= limit):
                continue
            if len(refs) < wanted:
                refs.append((entry_id, ref_plan))
                continue
            more = True
            if limit:  # paging back: not counted
                stop = True
            elif not plan_id:  # every older reference matches: counted by position
                older = int(client.llen(key)) - seen + 1
                stop = True
            else:
                older += 1
            if stop:
                break
        if len(chunk) < _PAGE:
            break
        end -= _PAGE
    pipe = client.pipeline(transaction=False)
    for entry_id, ref_plan in refs:
        pipe.xrange(keys.events_plan(ref_plan), min=entry_id, max=entry_id, count=1)
    pipe.lindex(key, 0)
    pipe.get(keys.EVENTS_TENANT_BEGAN.format(tenant_id=tenant_id))
    pipe.exists(keys.EVENTS_TENANT_TRIMMED.format(tenant_id=tenant_id))
    pipe.exists(keys.tenant(tenant_id))
    *found, oldest, began, marked, known = pipe.execute()
    bounds = TenantBounds(
        oldest_ref=_ref(str(oldest or ""))[0],
        began=_ref(str(began or ""))[0],
        marked=bool(marked),
        known=bool(known),
    )
    events: list[Entry] = [hit[0] for hit in found if hit]
    return TenantPage(refs, events, more, older, bounds)


# ---- whole histories -----------------------------------------------------------------------


def iter_entries(
    client: redis.Redis, plan_id: str | None = None, tenant_id: str | None = None, chunk: int = 1000
) -> Iterator[Entry]:
    """Every kept entry of a plan's stream, a tenant's references (only the plan's, with
    both) or the global stream, oldest first, read `chunk` at a time (memory stays bounded
    however long the history)."""
    if not tenant_id:
        key = _stream(plan_id)
        start = "-"
        while True:
            entries: list[Entry] = client.xrange(key, min=start, max="+", count=chunk)  # type: ignore[assignment]
            yield from entries
            if len(entries) < chunk:
                return
            start = f"({entries[-1][0]}"
    key = keys.events_tenant(tenant_id)
    at = 0
    while True:
        refs: list[str] = client.lrange(key, at, at + chunk - 1)  # type: ignore[assignment]
        pipe = client.pipeline(transaction=False)
        for ref in refs:
            entry_id, ref_plan = _ref(ref)
            if not plan_id or ref_plan == plan_id:
                pipe.xrange(keys.events_plan(ref_plan), min=entry_id, max=entry_id, count=1)
        for found in pipe.execute():
            if found:
                yield found[0]
        if len(refs) < chunk:
            return
        at += chunk


def plan_events_live(client: redis.Redis, plan_id: str) -> bool:
    """The plan's events are in Redis: its hash is there and retention has not archived it
    (an archived plan's events are read from the archive). One round trip.

    A read of the plan hash's `archivedAt`, kept here until the plan record reads it."""
    pipe = client.pipeline(transaction=False)
    pipe.hget(keys.plan(plan_id), "archivedAt")
    pipe.exists(keys.plan(plan_id))
    archived_at, exists = pipe.execute()
    return archived_at is None and bool(exists)


# ---- following -----------------------------------------------------------------------------


def newest_id(client: redis.Redis, plan_id: str | None = None) -> str:
    """Id of the newest entry of the plan's stream (None: the global one); "0-0" when the
    stream is not there yet (following from it then misses nothing)."""
    newest: list[Entry] = client.xrevrange(_stream(plan_id), count=1)  # type: ignore[assignment]
    return str(newest[0][0]) if newest else "0-0"


def read_after(
    client: redis.Redis, plan_id: str | None, after: str, block_ms: int, count: int
) -> list[Entry]:
    """Entries of the plan's stream (None: the global one) after `after`, waiting up to
    `block_ms` for the first; [] when none came."""
    answer: Any = client.xread({_stream(plan_id): after}, block=block_ms, count=count)
    return [entry for _stream_key, entries in answer or [] for entry in entries]


class LiveFeed:
    """The global stream read with asyncio (the SSE hub's reader and its catch-ups).

    The client is the hub's: its socket timeout must outlast a blocking read."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def last_id(self) -> str:
        """The last id the global stream generated ("0-0" when it is not there yet): a new
        reader starts after it."""
        try:
            info: dict[str, Any] = await self.client.xinfo_stream(keys.EVENTS)
        except redis.ResponseError:
            if await self.client.exists(keys.EVENTS):
                raise
            return "0-0"
        return str(info["last-generated-id"])

    async def read_after(self, after: str, count: int, block_ms: int) -> list[Entry]:
        """Up to `count` entries after `after`, waiting up to `block_ms` for the first."""
        answer: Any = await self.client.xread({keys.EVENTS: after}, count=count, block=block_ms)
        return list(answer[0][1]) if answer else []

    async def between(self, after: str, until: str, count: int) -> list[Entry]:
        """Up to `count` entries after `after` (exclusive) up to `until` (inclusive)."""
        got: Any = await self.client.xrange(keys.EVENTS, f"({after}", until, count=count)
        return list(got or [])
