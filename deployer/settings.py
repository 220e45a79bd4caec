"""Typed settings from the environment (prefix DEPLOYER_); every default lives here."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from deployer import redisurl
from deployer.errors import Code, SettingsInvalid
from deployer.notify.events import ALL as NOTIFY_EVENT_NAMES

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
#: The longest fixed countdown a stage re-sends itself with (Redis unreachable, a tenant's
#: lease busy): the ETA horizon never refuses deployer's own messages.
OWN_COUNTDOWN_SECONDS = 2.0
DEFAULT_KEY_PREFIX = "icc_ai_ops_srv:tenant_config:"
DEFAULT_PUBSUB_TOPIC = "icc_ai_ops_srv:tenant_config:topic"

#: Default instances of each service, as `deployer fleet` serves them with no arguments.
DEFAULT_INSTANCES: dict[str, list[str]] = {
    "asbc-gateway": ["127.0.0.1:18101"],
    "portal": ["127.0.0.1:18201"],
    "blue-green-gateway": ["127.0.0.1:18301", "127.0.0.1:18302"],
    "ob-service": ["127.0.0.1:18401"],
}

#: Nacos service name of each service: the Java application.yml defaults (docs/contracts.md §3.5).
DEFAULT_NACOS_SERVICES: dict[str, str] = {
    "asbc-gateway": "icc-asbc-portal",
    "portal": "icc-agent-portal",
    "blue-green-gateway": "icc-bg-gateway",
    "ob-service": "ob-campaign",
}


RECEIVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class NotifyReceiver(BaseModel):
    """One receiver of DEPLOYER_NOTIFY: where to POST which events, in which format. URLs
    come from settings only (a plan never names one); headers (a token) are never shown."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://[^\s]+$")
    #: Event names (deployer/notify/events.py), or "*" for all of them.
    events: tuple[str, ...] = Field(min_length=1)
    format: Literal["json", "slack"] = "json"
    headers: dict[str, SecretStr] = Field(default_factory=dict)

    @field_validator("events")
    @classmethod
    def _known(cls, events: tuple[str, ...]) -> tuple[str, ...]:
        if "*" in events:
            return NOTIFY_EVENT_NAMES
        unknown = sorted(set(events) - set(NOTIFY_EVENT_NAMES))
        if unknown:
            raise ValueError(f"unknown events {unknown}; known: {list(NOTIFY_EVENT_NAMES)}")
        return events

    def wants(self, event: str) -> bool:
        return event in self.events


class Settings(BaseSettings):
    """Everything a worker, the CLI and the fleet read; one object, parsed once per process."""

    model_config = SettingsConfigDict(env_prefix="DEPLOYER_", extra="ignore")

    broker_url: str = DEFAULT_BROKER_URL
    redis_url: str | None = None
    target_redis_url: str | None = None
    result_backend: str | None = None
    # High availability (deployer/redisurl.py, deployer/redis_client.py): every Redis URL may
    # be Celery's Sentinel form; the sentinels are asked for this master. TLS files serve
    # every rediss:// URL (and TLS masters behind Sentinel: sentinel_tls).
    sentinel_master: str = "mymaster"
    sentinel_username: str | None = None
    sentinel_password: SecretStr | None = None
    sentinel_tls: bool = False
    redis_tls_ca: str | None = None
    redis_tls_cert: str | None = None
    redis_tls_key: str | None = None
    redis_tls_check_hostname: bool = True
    # A plan's creation is acknowledged once this many replicas have it (WAIT), at most
    # redis_wait_ms later: a failover right after "created" keeps the plan. None: 1 when the
    # state URL is a Sentinel URL, else 0 (a lone Redis has no replica to wait for).
    redis_wait_replicas: int | None = Field(None, ge=0, le=16)
    redis_wait_ms: int = Field(1000, ge=1, le=60_000)
    key_prefix: str = DEFAULT_KEY_PREFIX
    pubsub_topic: str = DEFAULT_PUBSUB_TOPIC

    # Plans
    max_concurrency: int = Field(10, ge=1, le=100_000)
    max_tenants_per_plan: int = Field(100_000, ge=1)
    max_plan_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_retries: int = Field(3, ge=0)
    # A plan with more tenants is created in slices of this many (one short script each),
    # invisible until its last script: one script for 100,000 tenants blocked Redis for
    # seconds (benchmarks/create_block.py).
    plan_create_slice: int = Field(2000, ge=1)
    # Broker messages (tasks/guard.py, tasks/transport.py): larger or deeper ones are
    # dead-lettered before Celery decodes or pickles them (a 70 MB plan object took the
    # main and pool processes to ~865 MB; a plan a few hundred levels deep crashed the
    # worker while it was pickled for the pool).
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_message_depth: int = Field(64, ge=8, le=500)
    # JSON values (arrays, objects, strings, numbers, literals) a message or a plan's text
    # may hold, counted on the text before it is decoded (deployer/jsonshape.py): what
    # decoding builds, which bytes alone do not bound (13 MB of nested empty lists decoded
    # to 1 GB). A tenant of the demo plan is ~26 values: 3,000,000 admits 100,000 of them.
    max_message_elements: int = Field(3_000_000, ge=1000)

    # A message whose ETA (or countdown) lies further ahead is dead-lettered: Celery holds an
    # ETA message unacknowledged in worker memory until it is due, and the Redis transport
    # restores it every visibility timeout meanwhile (one envelope years ahead: 11 copies
    # held after 36 minutes). deployer's own countdowns are seconds; never below them
    # (`eta_horizon_seconds`).
    max_eta_seconds: float = Field(60.0, gt=0)

    # Leases, redelivery and reconciliation
    lease_ttl_seconds: float = Field(60.0, gt=0)
    visibility_timeout_seconds: int = Field(120, ge=10)
    max_redeliveries: int = Field(10, ge=1)
    reconcile_interval_seconds: float = Field(10.0, gt=0)
    # A dispatched task that never started is not re-driven before this: its first stage
    # may be queued behind thousands of others, which is slow, not lost.
    pending_grace_seconds: float = Field(600.0, ge=0)
    # A worker's heartbeat key lives this long and is refreshed 5 times as often; once it is
    # gone (kill -9, lost node) its tasks are re-driven at once, not after the lease TTL.
    # 0 turns heartbeats off (the lease TTL alone then finds a dead worker's tasks).
    worker_heartbeat_seconds: float = Field(5.0, ge=0)

    # Fleet verification
    verify_interval_seconds: float = Field(3.0, gt=0)
    verify_max_attempts: int = Field(10, ge=1)
    # The first re-poll comes sooner (then 0.25 s, x1.5 up to the interval): most instances
    # converge within a second of the broadcast, and a tenant should not wait 3 s for it.
    verify_first_interval_seconds: float = Field(1.0, gt=0)
    verify_path: str = "/actuator/bg-sdk/{tenantId}"
    # Push path (deployer/parking.py): the fleet's instances PUBLISH an ack on
    # `ack_channel` (default "{pubsub_topic}:ack") when they make a tenant's version visible.
    # While acks are expected a waiting HealthCheck is parked in Redis, woken by an ack, and
    # polled in the background at most `ack_polls_per_minute` times per instance per minute
    # (same patience in seconds). Off: the countdown schedule above, exactly as before.
    fleet_acks: bool = False
    ack_channel: str | None = None
    ack_polls_per_minute: float = Field(5.0, gt=0)
    verify_json_path: str = "$.version"
    http_timeout_seconds: float = Field(5.0, gt=0)
    # Wall-clock bounds of one HealthCheck poll (whole request, body included; at most the
    # HTTP timeout) and of any answer's body; an instance that timed out is not waited on
    # again in a worker process for `probe_breaker_seconds` (it counts as "not yet").
    probe_timeout_seconds: float = Field(1.0, gt=0)
    # A poll waits this long for answers; a later one is "not yet" and serves the next poll.
    probe_patience_seconds: float = Field(0.25, gt=0)
    probe_breaker_seconds: float = Field(15.0, ge=0)
    http_max_response_bytes: int = Field(1024 * 1024, ge=1024)
    instances: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_INSTANCES))
    selection: Literal["ALL", "RANDOM"] = "ALL"
    #: URL scheme per service for HTTP calls (default http; the Java ASBC call used https).
    schemes: dict[str, Literal["http", "https"]] = Field(default_factory=dict)

    # Service discovery (docs/contracts.md §3.6): Nacos when configured, `instances` as fallback
    nacos_server_addr: str | None = None
    nacos_namespace: str = "public"
    # Namespaces a tenant's `nacosNameSpace` may name (None: only `nacos_namespace`), so a
    # plan cannot steer its POSTs to hosts registered in another namespace.
    nacos_allowed_namespaces: list[str] | None = None
    nacos_group: str = "DEFAULT_GROUP"
    nacos_username: str | None = None
    nacos_password: str | None = None
    nacos_services: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_NACOS_SERVICES))
    discovery_cache_seconds: float = Field(30.0, ge=0)

    # Simulated fleet (`deployer fleet`, demo): how long an instance takes to apply a config
    fleet_delay_seconds: float = Field(1.0, ge=0)

    # Progressive rollout (a plan's `strategy`): gate webhooks by name (a plan names one,
    # never a URL), how long one call may take, and how soon a gate that said no is asked again.
    # A gate call is over within its timeout (wall clock, answer included), keeps at most
    # `gate_max_answer_bytes` of the answer, and runs in a pool of `gate_workers` threads in
    # each worker's main process (never in a timer, a stage or a command).
    gates: dict[str, str] = Field(default_factory=dict)
    gate_timeout_seconds: float = Field(3.0, gt=0, le=600)
    gate_recheck_seconds: float = Field(10.0, gt=0)
    gate_max_answer_bytes: int = Field(16_384, ge=256, le=1024 * 1024)
    gate_workers: int = Field(4, ge=1, le=64)

    # Observability
    events_maxlen: int = Field(100_000, ge=100)
    # Per-plan and per-tenant event history (deployer/audit.py): kept this long, and at most
    # this many entries per plan or tenant (a safety bound; a 100,000-tenant plan of 4 stages
    # records about 1,000,000 events).
    events_retention_seconds: float = Field(7 * 24 * 3600.0, gt=0)
    events_index_maxlen: int = Field(1_000_000, ge=100)
    rejections_maxlen: int = Field(10_000, ge=10)
    # A rejection entry keeps the first N field errors (and their count), at most this many
    # bytes of them: the stream is capped by count, so its size is bounded too.
    max_rejection_errors: int = Field(100, ge=1)
    max_rejection_bytes: int = Field(16_384, ge=1024)
    dead_letters_maxlen: int = Field(10_000, ge=10)
    worker_prefetch_multiplier: int = Field(4, ge=1)
    # `task-sent` events cost a second publish per message (half of sending a plan's first
    # wave); Flower shows tasks from `task-received` on without them.
    task_sent_events: bool = False
    # A pool process that grew past this (KB) is replaced after its task (0: never); a
    # 10,000-tenant submit leaves ~150 MB behind otherwise (benchmarks/README.md).
    worker_max_memory_per_child_kb: int = Field(200_000, ge=0)
    # Graceful shutdown (deploy/): Celery's worker_soft_shutdown_timeout, seconds a warm
    # shutdown lets running stages finish before re-queueing the rest; 0 = Celery's default.
    worker_soft_shutdown_seconds: float = Field(0.0, ge=0)

    # HTTP API and dashboard (`deployer serve`): any address but loopback needs api_token;
    # api_read_token may read everything but command nothing.
    api_token: SecretStr | None = None
    api_read_token: SecretStr | None = None
    flower_url: str = "http://127.0.0.1:5555"
    # Connections (deployer/web/server.py): a request's headers, then its body, must arrive
    # within these; a kept-alive connection closes after `api_idle_timeout_seconds` idle;
    # at most `api_max_connections` are open (never more than the descriptor limit allows):
    # over it, the oldest one still waiting for a request is closed, so /healthz answers
    # through a flood of half-open connections (slow-loris).
    api_header_timeout_seconds: float = Field(10.0, gt=0)
    api_body_timeout_seconds: float = Field(60.0, gt=0)
    api_idle_timeout_seconds: int = Field(5, ge=1)
    api_max_connections: int = Field(1000, ge=16)
    # Live event streams (SSE, deployer/web/stream.py): one Redis reader per server process
    # serves them all; at most this many at once (503 STREAMS_FULL), and per token (429
    # TOO_MANY_STREAMS).
    api_max_streams: int = Field(256, ge=1)
    api_max_streams_per_token: int = Field(32, ge=1)

    # Retention and the archive (deployer/retention.py, deployer/archive): a finished plan
    # not changed for `retention_seconds` is written to the archive (`archive_url`: any
    # SQLAlchemy URL; unset, an embedded SQLite file under $XDG_DATA_HOME/deployer) and then
    # removed from Redis, `retention_slice` keys per script, each tenant's newest task kept.
    # Every worker runs a pass each `retention_interval_seconds` (0: never; `deployer archive`
    # still does); one worker archives a plan at a time, under a lock of
    # `retention_lock_seconds` (a killed worker's lock lapses then and another finishes).
    retention_seconds: float = Field(7 * 24 * 3600.0, gt=0)
    archive_url: str | None = None
    retention_interval_seconds: float = Field(60.0, ge=0)
    retention_slice: int = Field(200, ge=1, le=5000)
    retention_lock_seconds: float = Field(120.0, gt=0)

    # Where people open the dashboard (`deployer serve`), for links in notifications.
    public_url: str = "http://127.0.0.1:8000"

    # Notifications (deployer/notify): receivers by name. Every worker delivers the outbox
    # with its own thread, each call bounded by `notify_timeout_seconds` (whole exchange) and
    # an answer cap; a refused or failed delivery is tried again after `notify_backoff_seconds`
    # doubling up to 5 minutes, at most `notify_max_attempts` times, and a queued event is
    # dropped after `notify_retention_seconds`.
    notify: dict[str, NotifyReceiver] = Field(default_factory=dict)
    notify_timeout_seconds: float = Field(5.0, gt=0, le=60)
    notify_backoff_seconds: float = Field(1.0, gt=0)
    notify_max_attempts: int = Field(20, ge=1)
    notify_interval_seconds: float = Field(1.0, gt=0)
    notify_retention_seconds: float = Field(86400.0, ge=60)

    @field_validator("notify")
    @classmethod
    def _receiver_names(cls, notify: dict[str, NotifyReceiver]) -> dict[str, NotifyReceiver]:
        # a name is a Redis key part and a metric label: an id, never free text
        bad = [n for n in notify if not RECEIVER_NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"receiver names must match {RECEIVER_NAME.pattern}: {bad}")
        return notify

    @model_validator(mode="after")
    def _default_urls(self) -> Settings:
        """The state store defaults to the broker's Redis, the target to the state store;
        never to a guessed server. Every Redis URL is parsed here, so a bad one (or a bad
        Sentinel or TLS setting) stops the process at start with one line
        (errors.SettingsInvalid), not at its first command."""
        if self.redis_url is None:
            if not redisurl.is_redis(self.broker_url):
                raise SettingsInvalid(
                    Code.STATE_URL_REQUIRED,
                    f"the broker ({redact_url(self.broker_url)}) is not Redis: set "
                    "DEPLOYER_REDIS_URL to the Redis that keeps plans, tasks and leases",
                )
            self.redis_url = self.broker_url
        if self.target_redis_url is None:
            self.target_redis_url = self.redis_url
        urls = [("DEPLOYER_REDIS_URL", self.redis_url)]
        urls.append(("DEPLOYER_TARGET_REDIS_URL", self.target_redis_url))
        if redisurl.is_redis(self.broker_url):
            urls.append(("DEPLOYER_BROKER_URL", self.broker_url))
        parsed = [redisurl.parse(url, role) for role, url in urls]
        if any(p.sentinel for p in parsed) and not self.sentinel_master.strip():
            raise SettingsInvalid(
                Code.SENTINEL_MASTER_UNKNOWN,
                "DEPLOYER_SENTINEL_MASTER is empty: name the master the sentinels monitor",
            )
        if any(p.tls for p in parsed) or self.sentinel_tls:
            self._check_tls_files()
        return self

    def _check_tls_files(self) -> None:
        if self.redis_tls_cert and not self.redis_tls_key:
            raise SettingsInvalid(
                Code.REDIS_TLS_INVALID,
                "DEPLOYER_REDIS_TLS_CERT is set without DEPLOYER_REDIS_TLS_KEY",
            )
        for name, path in (
            ("DEPLOYER_REDIS_TLS_CA", self.redis_tls_ca),
            ("DEPLOYER_REDIS_TLS_CERT", self.redis_tls_cert),
            ("DEPLOYER_REDIS_TLS_KEY", self.redis_tls_key),
        ):
            if path is not None and not os.access(path, os.R_OK):
                raise SettingsInvalid(Code.REDIS_TLS_INVALID, f"{name}: {path} cannot be read")

    @property
    def wait_replicas(self) -> int:
        """Replicas a plan's creation waits for (`redis_wait_replicas`, or its default)."""
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if redisurl.is_sentinel(self.state_url) else 0

    @property
    def state_url(self) -> str:
        assert self.redis_url is not None
        return self.redis_url

    @property
    def target_url(self) -> str:
        assert self.target_redis_url is not None
        return self.target_redis_url

    @property
    def eta_horizon_seconds(self) -> float:
        """How far ahead a message's ETA may be: `max_eta_seconds`, never below the longest
        countdown deployer sends itself (a HealthCheck re-poll waits up to the verify
        interval, a parked one re-sent as a countdown up to half the lease)."""
        return max(
            self.max_eta_seconds,
            self.verify_interval_seconds,
            self.lease_ttl_seconds / 2,
            OWN_COUNTDOWN_SECONDS,
        )

    @property
    def acks_channel(self) -> str:
        """Where instances publish their acks (docs/contracts.md §2.1)."""
        return self.ack_channel or f"{self.pubsub_topic}:ack"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Parse the environment once; tests call `get_settings.cache_clear()` after changing it."""
    return Settings()


def redact_url(url: str) -> str:
    """Hide the password of a broker or Redis URL so it can be printed or logged (each
    address of a Sentinel URL `sentinel://...;sentinel://...`)."""
    if ";" in url:
        return ";".join(redact_url(part) for part in url.split(";"))
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))
