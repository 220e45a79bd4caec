"""The live event stream as Server-Sent Events (`GET /api/v1/events/stream`).

One reader per server process (`Hub`): a single `XREAD BLOCK` loop on `deployer:events`
(explicit socket timeout: redis-py's default would cut a block short) fans every batch out
to all open streams. Before, each stream held a Redis connection of its own: 1,000 streams
were 1,000 connections, and at Redis's `maxclients` the workers themselves were refused.
Now the streams of a process cost the hub's reader and one connection for catching up.

Each stream filters by plan/tenant and sends one SSE message per event with the stream entry
id as the SSE `id`, so a browser reconnecting with `Last-Event-ID` resumes where it stopped
(what it missed is read with XRANGE first). A comment line every block timeout keeps proxies
from closing an idle stream. A stream that falls too far behind is ended (its client
reconnects and catches up). Streams are capped in total (`api_max_streams`: 503
STREAMS_FULL) and per token (`api_max_streams_per_token`: 429 TOO_MANY_STREAMS).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from deployer.errors import Code
from deployer.redact import redact
from deployer.settings import Settings
from deployer.state.events import Entry, LiveFeed
from deployer.web.history import matches

log = logging.getLogger("deployer.web")

BLOCK_MS = 5000
BATCH = 1000
#: Batches a stream may have waiting before it is ended as too slow.
BACKLOG = 256
#: The hub's Redis connections: the blocking reader, and catch-ups (they wait for one).
CONNECTIONS = 2

Entries = list[Entry]


def sse(entry_id: str, fields: dict[str, Any]) -> str:
    data = json.dumps({"id": entry_id, **redact(fields)}, separators=(",", ":"))
    # no `event:` name: every entry is a `message` (its `type` is in the data), so one
    # EventSource.onmessage sees them all
    return f"id: {entry_id}\ndata: {data}\n\n"


def _after(entry_id: str, cursor: str) -> bool:
    a, _, b = entry_id.partition("-")
    c, _, d = cursor.partition("-")
    return (int(a), int(b or 0)) > (int(c), int(d or 0))


class StreamRefused(Exception):
    """Too many streams: `status` and `code` say which limit."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(eq=False)
class Subscription:
    """One open stream: what it wants, where it is, what the hub handed it."""

    holder: str | None
    plan: str | None
    tenant: str | None
    cursor: str  # the last entry id sent (or skipped) to this stream
    queue: asyncio.Queue[Entries | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=BACKLOG)
    )

    def offer(self, entries: Entries | None) -> bool:
        """Hand a batch over; False when the stream is too far behind (it is ended)."""
        try:
            self.queue.put_nowait(entries)
            return True
        except asyncio.QueueFull:
            return False

    def end(self) -> None:
        """End this stream (too far behind): its waiting batches make way for the end."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    def render(self, entries: Entries) -> str:
        out = []
        for entry_id, fields in entries:
            if not _after(entry_id, self.cursor):
                continue  # already sent while catching up
            self.cursor = entry_id
            if matches(fields, self.plan, self.tenant):
                out.append(sse(entry_id, fields))
        return "".join(out)


class Hub:
    """The process's one reader of `deployer:events`, and its streams."""

    def __init__(
        self,
        url: str,
        max_streams: int,
        max_per_holder: int,
        block_ms: int = BLOCK_MS,
        settings: Settings | None = None,
    ) -> None:
        self.url = url
        self.settings = settings
        self.max_streams = max_streams
        self.max_per_holder = max_per_holder
        self.block_ms = block_ms
        self.subs: set[Subscription] = set()
        self.cursor = ""  # the last entry id read ("" until the reader starts)
        self._redis: aioredis.Redis | None = None
        self._feed: LiveFeed | None = None
        self._reader: asyncio.Task[None] | None = None

    def redis(self) -> aioredis.Redis:
        if self._redis is None:  # created in the server's loop, on first use
            from deployer import redisurl
            from deployer.redis_client import client_options, connect_async
            from deployer.settings import get_settings

            settings = self.settings or get_settings()
            timeouts = {"socket_timeout": self.block_ms / 1000 + 10, "socket_connect_timeout": 5}
            if redisurl.is_sentinel(self.url):  # a pool that follows the sentinels' master
                self._redis = connect_async(
                    self.url, settings, max_connections=CONNECTIONS, **timeouts
                )
                return self._redis
            options = client_options(settings, redisurl.parse(self.url), **timeouts)
            options.pop("retry_on_error")  # a blocking read is re-issued by the reader loop
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=CONNECTIONS, timeout=30, **options
            )
            self._redis = aioredis.Redis(connection_pool=pool)
        return self._redis

    def feed(self) -> LiveFeed:
        """The global stream read through the hub's connections."""
        if self._feed is None:
            self._feed = LiveFeed(self.redis())
        return self._feed

    def holding(self, holder: str) -> int:
        return sum(1 for s in self.subs if s.holder == holder)

    async def subscribe(
        self, holder: str | None, plan: str | None, tenant: str | None, last_id: str | None
    ) -> Subscription:
        """A new stream from `last_id` (None: from now), or StreamRefused."""
        if len(self.subs) >= self.max_streams:
            raise StreamRefused(
                503, Code.STREAMS_FULL, f"{self.max_streams} event streams are open: try later"
            )
        if holder is not None and self.holding(holder) >= self.max_per_holder:
            raise StreamRefused(
                429,
                Code.TOO_MANY_STREAMS,
                f"this token has {self.max_per_holder} event streams open already",
            )
        await self._start()
        sub = Subscription(holder, plan, tenant, last_id or self.cursor)
        self.subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subs.discard(sub)

    async def release(self, sub: Subscription) -> None:
        """`unsubscribe` as a response's background task (in the loop, not a thread)."""
        self.unsubscribe(sub)

    async def _start(self) -> None:
        if self._reader is not None and not self._reader.done():
            return
        self.cursor = await self.feed().last_id()
        self._reader = asyncio.create_task(self._read(), name="deployer-events-hub")

    async def _read(self) -> None:
        """Read new entries while anyone listens; hand each batch to every stream."""
        feed = self.feed()
        while self.subs:
            try:
                entries = await feed.read_after(self.cursor, BATCH, self.block_ms)
            except Exception as exc:  # noqa: BLE001 - Redis away: streams wait, then retry
                log.warning("event stream reader: %s", type(exc).__name__)
                await asyncio.sleep(1)
                continue
            if entries:
                self.cursor = entries[-1][0]
            for sub in list(self.subs):
                if not sub.offer(entries):
                    self.subs.discard(sub)
                    sub.end()

    async def catch_up(self, sub: Subscription, until: str) -> AsyncIterator[str]:
        """What `sub` missed before it joined: entries after its cursor up to `until`."""
        feed = self.feed()
        while _after(until, sub.cursor):
            got = await feed.between(sub.cursor, until, BATCH)
            if not got:
                return
            chunk = sub.render(got)
            if chunk:
                yield chunk

    async def close(self) -> None:
        self.subs.clear()
        if self._reader is not None:
            self._reader.cancel()
        if self._redis is not None:
            await self._redis.aclose(close_connection_pool=True)

    async def events(self, sub: Subscription) -> AsyncIterator[str]:
        """The SSE text of one stream, until its client goes (the task is cancelled)."""
        joined = self.cursor
        loop = asyncio.get_running_loop()
        try:
            yield f"retry: 2000\n: stream from {sub.cursor}\n\n"
            async for chunk in self.catch_up(sub, joined):
                yield chunk
            quiet = self.block_ms / 1000
            said = loop.time()
            while True:
                try:
                    entries = await asyncio.wait_for(sub.queue.get(), quiet + 1)
                except TimeoutError:
                    entries = []
                if entries is None:
                    return  # too slow: the client reconnects with its Last-Event-ID
                chunk = sub.render(entries)
                if not chunk and loop.time() - said >= quiet:
                    chunk = ": keepalive\n\n"  # nothing for this stream for a while
                if chunk:
                    said = loop.time()
                    yield chunk
        finally:
            self.unsubscribe(sub)
