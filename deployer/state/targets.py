"""The target Redis: where the services read each tenant's config, and how a run's write
there is fenced.

The target may be deployer's own Redis or another server (`Settings.target_url`). Its
config hashes are the services' contract (docs/contracts.md §2), not deployer's state, but
the names a run writes under and the fenced write itself are written here, beside the rest
of the key names (keys.py), so that a step or the simulated fleet names no key and runs no
script of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum
from functools import lru_cache

import redis
from redis.commands.core import Script

from deployer.state import keys, scripts


def config_hash(prefix: str, tenant_id: str) -> str:
    """The tenant's config hash that the services read (contract: `{key_prefix}{tenant}`)."""
    return f"{prefix}{tenant_id}"


def fence_key(tenant_id: str, same_server: bool) -> str:
    """The key whose value must equal the run's token for its config write to land: on
    deployer's own Redis the tenant lease itself (one key, no copy to keep in step); on
    another server a fence key the run sets to its token when it takes the tenant."""
    return keys.lease(tenant_id) if same_server else keys.fence(tenant_id)


class WriteVerdict(StrEnum):
    """What kv_write.lua did with a fenced config write."""

    #: Written (and its broadcast, if any, published).
    OK = "OK"
    #: The fence holds another run's token: nothing written, nothing published.
    STALE = "STALE"


@lru_cache(maxsize=8)
def _kv_write(client: redis.Redis) -> Script:
    # one registration per target connection (a worker has one; tests make a few)
    return scripts.load(client, "kv_write")


def write_config(
    target: redis.Redis,
    config_key: str,
    fence: str,
    token: str,
    field: str,
    value: str,
    metadata: str,
    delete: Sequence[str] = (),
    announce: tuple[str, str] | None = None,
) -> WriteVerdict:
    """Write the service `field` (JSON text) and `metadata` ('' deletes a stale one) of the
    config hash `config_key` if `fence` holds `token`, deleting the `delete` fields in the
    same script; with `announce` (channel, message) the message is published once the write
    landed. One round trip (lua/kv_write.lua)."""
    raw = _kv_write(target)(
        keys=[config_key, fence],
        args=[token, field, value, metadata, len(delete), *delete, *(announce or ())],
    )
    return scripts.verdict(WriteVerdict, raw, "kv_write")


# ---- reads (deployer diff, the task view's `hash`, deployer demo) ---------------------------


def read_config(target: redis.Redis, prefix: str, tenant_id: str) -> dict[str, str] | None:
    """The tenant's written config ({} when none); None when its key is not a hash (a write
    failed on it)."""
    try:
        return target.hgetall(config_hash(prefix, tenant_id))  # type: ignore[return-value]
    except redis.ResponseError:
        return None


def read_configs(
    target: redis.Redis, prefix: str, tenant_ids: Iterable[str]
) -> list[dict[str, str]]:
    """Each tenant's written config ({} when none), in one round trip. A key that is not a
    hash raises redis.ResponseError."""
    pipe = target.pipeline(transaction=False)
    for tenant_id in tenant_ids:
        pipe.hgetall(config_hash(prefix, tenant_id))
    return list(pipe.execute())
