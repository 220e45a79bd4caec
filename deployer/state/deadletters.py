"""The dead-letter stream in Redis: `deployer:dead-letters` (public, bounded) and its count.

deployer/deadletter.py decides what a refused broker message leaves behind (its fields,
redacted and cut to length, and the `kind` of its refusal); this module appends it to the
stream, trimmed by count (`MAXLEN ~`), and counts it by kind in `deployer:stats` (the
exporter's `deployer_dead_letters_total{kind}`) in the same transaction, and reads the
newest entries back for operators and tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from deployer.state import keys

#: The `deployer:stats` field counting dead letters of one kind (deployer/metrics.py).
STAT_KIND = "dl|{kind}"


class DeadLetterStream:
    """Appends dead letters to the bounded stream (at most about `maxlen` kept)."""

    def __init__(self, r: redis.Redis, maxlen: int) -> None:
        self.r = r
        self.maxlen = maxlen

    def append(self, fields: Mapping[str, str | int], kind: str) -> None:
        """Add one entry and count it under `kind`: one round trip (MULTI/EXEC)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.xadd(keys.DEAD_LETTERS, dict(fields), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        pipe.hincrby(keys.STATS, STAT_KIND.format(kind=kind), 1)
        pipe.execute()


def newest(r: redis.Redis, count: int = 100) -> list[dict[str, Any]]:
    """The newest `count` dead letters, oldest first, each with its stream id as `entry`."""
    entries: Any = r.xrevrange(keys.DEAD_LETTERS, count=count)
    out = []
    for entry_id, fields in reversed(entries or []):
        row = {_decoded(k): _decoded(v) for k, v in (fields or {}).items()}
        row["entry"] = _decoded(entry_id)
        out.append(row)
    return out


def _decoded(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
