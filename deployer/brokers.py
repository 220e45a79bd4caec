"""Celery's connection settings for deployer's broker and result backend, from Settings.

One place for what the worker (celeryconfig.py), the client (deployer/client.py) and Flower
(through celeryconfig) pass to kombu and Celery, so a Sentinel or TLS broker works for all
of them: kombu's Sentinel transport needs `master_name` (without it a worker exits with
"'master_name' transport option must be specified"), a `rediss://` broker its certificates.
"""

from __future__ import annotations

from typing import Any

from deployer import redisurl
from deployer.settings import Settings

#: A publish that meets a failover (or a broker restart) is tried again for about 10 s with
#: backoff (Celery's default gives up after 0.6 s): long enough for Sentinel to promote a
#: replica once it declared the master down.
PUBLISH_RETRY_POLICY: dict[str, float] = {
    "max_retries": 8,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 2,
}


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def sentinel_options(settings: Settings) -> dict[str, Any]:
    """kombu's and Celery's Sentinel options: the master's name, the sentinels' credentials."""
    from deployer.redis_client import sentinel_options as reach

    return {"master_name": settings.sentinel_master, "sentinel_kwargs": reach(settings)}


def tls_options(settings: Settings) -> dict[str, Any]:
    from deployer.redis_client import tls_options as tls

    return tls(settings)


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        # A killed worker's unacked message comes back after this; longer than any countdown.
        "visibility_timeout": settings.visibility_timeout_seconds
    }
    kind = scheme(settings.broker_url)
    if kind in ("amqp", "amqps", "pyamqp"):
        # RabbitMQ: a publish returns only once the broker has the message (durable queues).
        options["confirm_publish"] = True
    if kind == "sentinel":
        options.update(sentinel_options(settings))
    return options


def broker_use_ssl(settings: Settings) -> dict[str, Any] | None:
    """Celery's `broker_use_ssl` for a TLS Redis broker (None otherwise: AMQP keeps its own)."""
    kind = scheme(settings.broker_url)
    if kind == "rediss" or (kind == "sentinel" and settings.sentinel_tls):
        return tls_options(settings)
    return None


def backend_options(settings: Settings) -> dict[str, Any]:
    """Celery settings the result backend needs besides its URL (Sentinel, TLS)."""
    url = settings.result_backend
    out: dict[str, Any] = {}
    if url is None:
        return out
    if redisurl.is_sentinel(url):
        out["result_backend_transport_options"] = sentinel_options(settings)
    if scheme(url) == "rediss" or (redisurl.is_sentinel(url) and settings.sentinel_tls):
        out["redis_backend_use_ssl"] = tls_options(settings)
    return out


def celery_conf(settings: Settings) -> dict[str, Any]:
    """Everything above, as Celery settings (lowercase names)."""
    conf: dict[str, Any] = {
        "broker_transport_options": broker_transport_options(settings),
        "task_publish_retry": True,
        "task_publish_retry_policy": dict(PUBLISH_RETRY_POLICY),
        "result_backend": settings.result_backend,
        **backend_options(settings),
    }
    ssl = broker_use_ssl(settings)
    if ssl is not None:
        conf["broker_use_ssl"] = ssl
    return conf
