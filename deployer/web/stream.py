"""The live event stream as Server-Sent Events (`GET /api/v1/events/stream`).

XREAD BLOCK on `deployer:events` with an explicit socket timeout (redis-py's default would
cut a block short or hang forever), filtered by plan/tenant, one SSE message per event with
the stream entry id as the SSE `id`, so a browser reconnecting with `Last-Event-ID` resumes
where it stopped. A comment line every block timeout keeps proxies from closing the stream
and notices a client that went away.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis

from deployer import keys
from deployer.redact import redact
from deployer.web.history import matches

BLOCK_MS = 5000
BATCH = 1000


def sse(entry_id: str, fields: dict[str, Any]) -> str:
    data = json.dumps({"id": entry_id, **redact(fields)}, separators=(",", ":"))
    # no `event:` name: every entry is a `message` (its `type` is in the data), so one
    # EventSource.onmessage sees them all
    return f"id: {entry_id}\ndata: {data}\n\n"


async def events(
    url: str,
    plan: str | None,
    tenant: str | None,
    last_id: str | None,
    disconnected: Callable[[], Any],
    block_ms: int = BLOCK_MS,
) -> AsyncIterator[str]:
    """SSE text for every new event matching the filters, until the client disconnects."""
    r = aioredis.Redis.from_url(
        url, decode_responses=True, socket_timeout=block_ms / 1000 + 10, socket_connect_timeout=5
    )
    cursor = last_id or "$"
    try:
        if cursor == "$":
            # resolve "$" once: a later "$" would skip what arrived between two reads
            info = await r.xinfo_stream(keys.EVENTS) if await r.exists(keys.EVENTS) else None
            cursor = info["last-generated-id"] if info else "0-0"
        yield f"retry: 2000\n: stream from {cursor}\n\n"
        while not await disconnected():
            answer: Any = await r.xread({keys.EVENTS: cursor}, count=BATCH, block=block_ms)
            if not answer:
                yield ": keepalive\n\n"
                continue
            chunk: list[str] = []
            for entry_id, fields in answer[0][1]:
                cursor = entry_id
                if matches(fields, plan, tenant):
                    chunk.append(sse(entry_id, fields))
            if chunk:
                yield "".join(chunk)
    finally:
        await r.aclose()
