"""Redis connections, one pool per URL per process, and the one way to open the state
store on them.

Every Redis client of deployer (workers, CLI, HTTP API, metrics exporter, simulated fleet) is
made by `connect`, so each URL form (deployer/redisurl.py: plain, ACL user, TLS, Sentinel)
works for all of them. A Sentinel URL gives a client of the master the sentinels name: after
a failover its next connection asks them again and lands on the new master. Each command is
retried with bounded exponential backoff on connection errors, timeouts and the READONLY
answer of a demoted master (`RETRIES`: about 4 s in all, longer than Sentinel needs to
promote a replica once it declared the master down); what still fails is the caller's error
to handle (a stage re-sends itself, the worker's threads retry at their next tick).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from deployer import redisurl
from deployer.errors import Code, SettingsInvalid
from deployer.settings import Settings, get_settings, redact_url
from deployer.state.store import Store

log = logging.getLogger("deployer.redis")

#: Explicit timeouts: redis-py's default socket timeout would cut long blocking reads short,
#: and no timeout at all would hang a worker on a dead server.
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
#: Retries of one command after a connection error, a timeout or READONLY, with
#: exponential backoff from 0.1 s capped at 1 s (0.1+0.2+0.4+0.8+1+1 ≈ 3.5 s): a failover
#: under way when a command was sent is waited out, a dead Redis is reported in seconds.
RETRIES = 6
BACKOFF_BASE, BACKOFF_CAP = 0.1, 1.0
RETRY_ON: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)
#: A sentinel that does not answer within this is skipped for the next one.
SENTINEL_TIMEOUT = 2.0


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


def retry() -> Retry:
    return Retry(ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), RETRIES)


def tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py's TLS keywords from DEPLOYER_REDIS_TLS_* (certificates always verified)."""
    out: dict[str, Any] = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_check_hostname": settings.redis_tls_check_hostname,
    }
    if settings.redis_tls_ca:
        out["ssl_ca_certs"] = settings.redis_tls_ca
    if settings.redis_tls_cert:
        out["ssl_certfile"] = settings.redis_tls_cert
        out["ssl_keyfile"] = settings.redis_tls_key
    return out


def sentinel_options(settings: Settings) -> dict[str, Any]:
    """How the sentinels themselves are reached (their own credentials; not TLS)."""
    out: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT,
        "socket_connect_timeout": SENTINEL_TIMEOUT,
    }
    if settings.sentinel_username:
        out["username"] = settings.sentinel_username
    if settings.sentinel_password is not None:
        out["password"] = settings.sentinel_password.get_secret_value()
    return out


def client_options(settings: Settings, spec: redisurl.RedisUrl, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "decode_responses": True,
        # A lone surrogate (valid in JSON text) is written as its `\uXXXX` escape instead of
        # raising UnicodeEncodeError mid-command (deployer/text.py); invalid UTF-8 read back
        # becomes `\xNN` instead of failing the read.
        "encoding_errors": "backslashreplace",
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": 30,
        "retry_on_error": list(RETRY_ON),
    }
    if spec.tls or (spec.sentinel and settings.sentinel_tls):
        options.update(tls_options(settings))
        if spec.sentinel:
            options["ssl"] = True
    options.update(overrides)
    return options


def connect(url: str, settings: Settings, **overrides: Any) -> redis.Redis:
    """A new client (own pool) of the Redis `url` names, in any form; `overrides` replace
    the default keywords (timeouts, decode_responses). Nothing is sent yet."""
    spec = redisurl.parse(url)
    options = client_options(settings, spec, **overrides)
    options["retry"] = retry()
    if not spec.sentinel:
        return redis.Redis.from_url(url, **options)
    sentinel = Sentinel(list(spec.sentinels), sentinel_kwargs=sentinel_options(settings))
    return cast(
        redis.Redis,
        sentinel.master_for(
            settings.sentinel_master,
            redis_class=redis.Redis,
            db=spec.db,
            username=spec.username,
            password=spec.password,
            **options,
        ),
    )


def connect_async(url: str, settings: Settings, **overrides: Any) -> aioredis.Redis:
    """`connect` for asyncio (the HTTP API's event streams)."""
    spec = redisurl.parse(url)
    options = client_options(settings, spec, **overrides)
    options["retry"] = AsyncRetry(ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), RETRIES)
    if not spec.sentinel:
        return aioredis.Redis.from_url(url, **options)
    sentinel = AsyncSentinel(list(spec.sentinels), sentinel_kwargs=sentinel_options(settings))
    return cast(
        aioredis.Redis,
        sentinel.master_for(
            settings.sentinel_master,
            redis_class=aioredis.Redis,
            db=spec.db,
            username=spec.username,
            password=spec.password,
            **options,
        ),
    )


#: What OpenSSL says when the server asked for a client certificate and got none (TLS 1.3
#: alert 116, TLS 1.2 handshake failure) or refused the one given.
_CLIENT_CERT_REFUSED = ("CERTIFICATE_REQUIRED", "certificate required", "BAD_CERTIFICATE",
                        "bad certificate", "UNKNOWN_CA", "unknown ca")  # fmt: skip
_CLOSED_AFTER_HANDSHAKE = ("EOF occurred in violation of protocol",)


def tls_refusal(exc: BaseException) -> SettingsInvalid | None:
    """The one-line refusal (REDIS_TLS_REFUSED) for a connection error that is a TLS Redis
    refusing this client's certificate (none given, or not signed by a CA it trusts); None
    for any other error. Mutual TLS (`--tls-auth-clients yes`) fails this way on the first
    command, not at connect: without this, a raw OpenSSL alert (or a traceback)."""
    text = str(exc)
    given = bool(os.environ.get("DEPLOYER_REDIS_TLS_CERT"))
    # The server sends its alert and closes: a client that writes before it reads the alert
    # sees only the close (OpenSSL: "EOF occurred in violation of protocol"). After a
    # completed handshake and with no client certificate given, that is the same refusal.
    closed = not given and any(mark in text for mark in _CLOSED_AFTER_HANDSHAKE)
    if not closed and not any(mark in text for mark in _CLIENT_CERT_REFUSED):
        return None
    hint = ("it did not accept the client certificate DEPLOYER_REDIS_TLS_CERT (signed by a "
            "CA it trusts? its --tls-ca-cert-file)" if given else
            "it closed the connection after the TLS handshake, as a Redis that requires a "
            "client certificate does: set DEPLOYER_REDIS_TLS_CERT and DEPLOYER_REDIS_TLS_KEY"
            if closed else
            "it requires a client certificate: set DEPLOYER_REDIS_TLS_CERT and "
            "DEPLOYER_REDIS_TLS_KEY")  # fmt: skip
    return SettingsInvalid(Code.REDIS_TLS_REFUSED, f"the TLS Redis refused this client: {hint}")


def check_reachable(url: str, settings: Settings, role: str) -> None:
    """PING `url`'s Redis; one-line SettingsInvalid (REDIS_UNREACHABLE, or
    SENTINEL_MASTER_UNKNOWN when the sentinels answer but know no such master) if it
    cannot be reached. For a process's start: nothing runs against a Redis it cannot use."""
    client = connect(url, settings)
    try:
        client.ping()
    except MasterNotFoundError:
        raise SettingsInvalid(
            Code.SENTINEL_MASTER_UNKNOWN,
            f"{role}: no sentinel of {redact_url(url)} knows a master named "
            f"{settings.sentinel_master!r} (DEPLOYER_SENTINEL_MASTER), or none answers",
        ) from None
    except redis.RedisError as exc:
        refused = tls_refusal(exc)
        if refused is not None:
            raise refused from None
        raise SettingsInvalid(
            Code.REDIS_UNREACHABLE, f"{role}: {redact_url(url)} does not answer ({exc})"
        ) from None
    finally:
        client.close()


def warm_up_tls(settings: Settings) -> None:
    """Open one connection to each TLS Redis (state, target) now, in a worker's main process
    before its pool forks and before its threads start.

    Why: redis-py builds one SSL context per TLS setting and process-wide caches it. Built
    first in a thread of the main process while the pool forked, its OpenSSL lock was
    copied held: the pool process that built its own then hung for ever in
    `load_default_certs` (seen: a `rediss://` demo whose submit never ran). Built here,
    once, every later connection of the main process and of each forked pool process finds
    it in the cache. A Redis that does not answer yet is only logged: the worker waits for
    its broker anyway, and the first command retries."""
    for url in dict.fromkeys((settings.state_url, settings.target_url)):
        spec = redisurl.parse(url)
        if not (spec.tls or (spec.sentinel and settings.sentinel_tls)):
            continue
        try:
            client_for(url).ping()
        except redis.RedisError as exc:
            log.warning("TLS Redis %s not reached at start (%s)", redact_url(url), exc)


@per_process
def client_for(url: str) -> redis.Redis:
    """The process's pooled client of `url` (settings from the environment)."""
    return connect(url, get_settings())


def state_store(settings: Settings) -> Store:
    """The store on `settings`' state Redis (its pooled connection): workers, the CLI, the
    HTTP API and the client all open it here."""
    return Store(client_for(settings.state_url), settings)
