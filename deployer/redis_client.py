"""Redis connections, one pool per URL per process, and the one way to open the state
store on them."""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import redis

from deployer.settings import Settings
from deployer.store import Store

#: Explicit timeouts: redis-py's default socket timeout would cut long blocking reads short,
#: and no timeout at all would hang a worker on a dead server.
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


T = TypeVar("T")


class per_process(Generic[T]):  # noqa: N801 - used as a decorator, like lru_cache
    """Like `functools.lru_cache`, but one value per process id: a process forked from one
    that built the value builds its own, and never touches the inherited one.

    Why: a worker's main process keeps Redis clients that its threads (liveness, parking,
    reconciler) use at any moment, and forks pool processes meanwhile. A fork can copy a
    connection pool whose lock a thread held; redis-py resets an inherited pool under that
    lock on first use, so the pool process waited forever (seen: a pool process stuck in
    `ConnectionPool.reset`, its plan never finished). The inherited values stay referenced
    here, so they are not collected either (closing one would take the same lock).
    """

    def __init__(self, build: Callable[..., T]) -> None:
        self._build = build
        self._values: dict[tuple[Hashable, ...], T] = {}
        self.__doc__ = build.__doc__

    def __call__(self, *args: Hashable) -> T:
        key = (os.getpid(), *args)
        try:
            return self._values[key]
        except KeyError:
            value = self._values[key] = self._build(*args)
            return value

    def cache_clear(self) -> None:
        self._values.clear()


@per_process
def client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        # A lone surrogate (valid in JSON text) is written as its `\uXXXX` escape instead of
        # raising UnicodeEncodeError mid-command (deployer/text.py); invalid UTF-8 read back
        # becomes `\xNN` instead of failing the read.
        encoding_errors="backslashreplace",
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        health_check_interval=30,
        retry_on_timeout=True,
    )


def state_store(settings: Settings) -> Store:
    """The store on `settings`' state Redis (its pooled connection): workers, the CLI, the
    HTTP API and the client all open it here."""
    return Store(client_for(settings.state_url), settings)
