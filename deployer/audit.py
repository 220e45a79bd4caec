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
Redis's side of it — the keys, the scripts, the reads — is deployer/state/events.py; here is
what an event is (its fields, its time), and when a history counts as complete.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from deployer.settings import Settings, get_settings
from deployer.state import events
from deployer.state.events import Entry as Entry
from deployer.state.events import StreamPage
from deployer.state.events import configure_prelude as configure_prelude  # its old home
from deployer.state.events import id_key as id_key  # re-exported: its old home


def record(r: redis.Redis, fields: dict[str, Any], settings: Settings | None = None) -> str:
    """Append one event (global stream and its plan/tenant indices); returns its id.

    For events Python decides (a refused command, a plan command's summary); the scripts
    that change state emit their own in the same round trip. A field given as None is left
    out; an event without `ts` is stamped now (ms).
    """
    s = settings or get_settings()
    kept = {k: v for k, v in fields.items() if v is not None}
    if "ts" not in fields:
        kept["ts"] = int(time.time() * 1000)
    return events.record(r, kept, s.events_maxlen)


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
    wanted = max(int(count), 0)
    if tenant_id:
        return _tenant_history(r, tenant_id, plan_id, wanted, before)
    page = events.stream_page(r, plan_id, wanted + 1, before)
    shown = page.entries[:wanted]
    older = None if before else max(page.length - len(shown), 0)
    return History(
        shown, len(page.entries) > wanted, _trimmed(page, plan_id), page.oldest_kept, older
    )


def iter_history(
    r: redis.Redis, plan_id: str | None = None, tenant_id: str | None = None, chunk: int = 1000
) -> Iterator[Entry]:
    """Every kept event of a plan, a tenant or one task, oldest first, read `chunk` at a time
    (memory stays bounded however long the history)."""
    return events.iter_entries(r, plan_id, tenant_id, chunk)


def _tenant_history(
    r: redis.Redis, tenant_id: str, plan_id: str | None, wanted: int, before: str | None
) -> History:
    page = events.tenant_page(r, tenant_id, plan_id, wanted, before)
    counted = None if before else page.older
    b = page.bounds
    if b.oldest_ref:
        # gone: an entry a kept reference points at, references dropped, or the first
        # reference ever is older than the oldest kept one
        gone = (
            len(page.events) < len(page.refs)
            or b.marked
            or bool(b.began and id_key(b.began) < id_key(b.oldest_ref))
        )
        return History(page.events, page.more, gone, b.oldest_ref, counted)
    # no references at all: expired whole (trimmed) if the tenant ever had a task
    return History(page.events, page.more, bool(b.began) or b.known, "", counted)


def _trimmed(page: StreamPage, plan_id: str | None) -> bool:
    """Whether entries older than the oldest kept one of a stream are gone."""
    if not page.exists:  # expired whole (a plan that is still there), or never written
        return bool(plan_id) and page.plan_exists
    if plan_id:
        # A plan's history begins with PLAN_CREATED: kept history that starts with anything
        # else lost its beginning, whether trimmed by age or by count, or expired whole and
        # begun again by a later event (a rollback weeks after the plan ran).
        return page.first is not None and page.first[1].get("type") != FIRST_PLAN_EVENT
    # Redis/Valkey >= 7 count every entry ever added; fewer kept means some were trimmed
    if page.added is not None:
        return page.added > page.length
    # older servers: the oldest kept entry sits at the retention's edge
    retention_ms = get_settings().events_retention_seconds * 1000
    oldest = page.oldest_kept
    age = time.time() * 1000 - int(oldest.split("-")[0] or 0)
    return bool(oldest) and age >= retention_ms - 3600_000
