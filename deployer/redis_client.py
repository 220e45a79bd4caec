"""Redis connections, one pool per URL per process (pools survive forks safely), and the
one way to open the state store on them."""

from __future__ import annotations

from functools import lru_cache

import redis

from deployer.settings import Settings
from deployer.store import Store

#: Explicit timeouts: redis-py's default socket timeout would cut long blocking reads short,
#: and no timeout at all would hang a worker on a dead server.
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


@lru_cache(maxsize=8)
def client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        health_check_interval=30,
        retry_on_timeout=True,
    )


def state_store(settings: Settings) -> Store:
    """The store on `settings`' state Redis (its pooled connection): workers, the CLI, the
    HTTP API and the client all open it here."""
    return Store(client_for(settings.state_url), settings)
