"""Service discovery: which `host:port` instances a step may talk to, and which of them.

Addresses come only from here (settings or a registry), never from a TenantConfig. The
Java lookup order is kept (docs/contracts.md §3.6): a registry (Nacos) when configured, its
empty answer or failure falling through to the static instances from settings, else an
error. Its key mismatches (§3.5: `BG_GATEWAY`, `asbcService`, ... matching no configured
key) are fixed by resolving canonical service names and accepting the Java keys as aliases.

A tenant's `nacosNameSpace` picks the registry namespace, hence the hosts that receive its
calls: only namespaces in DEPLOYER_NACOS_ALLOWED_NAMESPACES (default: the configured one)
are used, checked when the plan is submitted (the stage factory) and again here. The Nacos
access token travels in headers, never in a URL that httpx would log.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Literal

import httpx

from deployer.errors import DiscoveryError as DiscoveryError  # re-exported
from deployer.errors import NamespaceNotAllowed
from deployer.settings import Settings
from stages.probe import deadline

log = logging.getLogger("deployer.discovery")

Selection = Literal["ALL", "RANDOM"]

#: Names the Java system and its yaml used for each service (docs/contracts.md §3.5).
ALIASES: dict[str, tuple[str, ...]] = {
    "asbc-gateway": ("asbcService", "asbc", "icc-asbc-portal", "asbc-gateway-service"),
    "portal": ("portalService", "icc-agent-portal", "portal-service"),
    "blue-green-gateway": (
        "BG_GATEWAY",
        "blueGreenGatewayService",
        "icc-bg-gateway",
        "blue-green-gateway-service",
    ),
    "ob-service": ("obService", "ob-campaign"),
}


def namespace_refusal(settings: Settings, namespace: str | None) -> str | None:
    """Why a tenant may not use `namespace` (None: it may). Without Nacos, namespaces
    choose nothing and are not checked."""
    if not settings.nacos_server_addr or not namespace:
        return None
    allowed = settings.nacos_allowed_namespaces or [settings.nacos_namespace]
    if namespace in allowed:
        return None
    return (
        f"namespace {namespace!r} is not allowed here "
        f"(DEPLOYER_NACOS_ALLOWED_NAMESPACES: {', '.join(sorted(allowed))})"
    )


#: `accessToken=...` in a logged URL or message (a query parameter or a JSON field).
_TOKEN = re.compile(r"(accessToken[\"']?\s*[=:]\s*[\"']?)[^&\s\"',}]+", re.IGNORECASE)


class RedactTokens(logging.Filter):
    """Hide Nacos access tokens in records (httpx logs every request URL at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "accesstoken" in message.lower():
            record.msg, record.args = _TOKEN.sub(r"\1***", message), None
        return True


logging.getLogger("httpx").addFilter(RedactTokens())


class Resolver(ABC):
    """Instances (`host:port`) of a service; an empty list means "none known here"."""

    @abstractmethod
    def resolve(self, service: str, namespace: str | None) -> list[str]: ...


class StaticResolver(Resolver):
    """The `instances` mapping from settings (DEPLOYER_INSTANCES), Java keys accepted."""

    def __init__(self, instances: dict[str, list[str]]) -> None:
        self.instances = instances

    def resolve(self, service: str, namespace: str | None) -> list[str]:
        for key in (service, *ALIASES.get(service, ())):
            if self.instances.get(key):
                return list(self.instances[key])
        return []


class NacosResolver(Resolver):
    """Healthy, enabled instances from Nacos' open HTTP API (`/nacos/v1/ns/instance/list`)."""

    def __init__(self, settings: Settings, http: httpx.Client) -> None:
        assert settings.nacos_server_addr
        addr = settings.nacos_server_addr
        self.base = addr if "://" in addr else f"http://{addr}"
        self.settings = settings
        self.http = http
        self._token: str | None = None

    def _auth(self) -> dict[str, str]:
        """Headers carrying the access token: Nacos reads `Authorization: Bearer` (1.x and
        2.x) and the `accessToken` header (2.x), so the token never sits in a URL."""
        s = self.settings
        if not s.nacos_username:
            return {}
        if self._token is None:
            with deadline(self.settings.http_timeout_seconds):
                reply = self.http.post(
                    f"{self.base}/nacos/v1/auth/login",
                    data={"username": s.nacos_username, "password": s.nacos_password or ""},
                )
            reply.raise_for_status()
            self._token = str(reply.json()["accessToken"])
        return {"Authorization": f"Bearer {self._token}", "accessToken": self._token}

    def resolve(self, service: str, namespace: str | None) -> list[str]:
        refused = namespace_refusal(self.settings, namespace)
        if refused is not None:
            raise NamespaceNotAllowed(f"{service}: {refused}")
        name = self.settings.nacos_services.get(service, service)
        params = {
            "serviceName": name,
            "groupName": self.settings.nacos_group,
            "namespaceId": namespace or self.settings.nacos_namespace,
            "healthyOnly": "true",
        }
        headers = self._auth()
        with deadline(self.settings.http_timeout_seconds):
            reply = self.http.get(
                f"{self.base}/nacos/v1/ns/instance/list", params=params, headers=headers
            )
        reply.raise_for_status()
        hosts: list[dict[str, Any]] = reply.json().get("hosts") or []
        return [
            f"{h['ip']}:{h['port']}"
            for h in hosts
            if h.get("healthy", True) and h.get("enabled", True)
        ]


class FallbackResolver(Resolver):
    """The first resolver with an answer wins; a failing one is logged and skipped.

    Answers of the primary are cached for `ttl` seconds (the Java 30 s cache); the
    fallback's are not, so a registry that comes back is used again at once.
    """

    def __init__(self, primary: Resolver, fallback: Resolver, ttl: float) -> None:
        self.primary, self.fallback, self.ttl = primary, fallback, ttl
        self._cache: dict[tuple[str, str | None], tuple[float, list[str]]] = {}
        self._lock = threading.Lock()

    def resolve(self, service: str, namespace: str | None) -> list[str]:
        key = (service, namespace)
        with self._lock:
            hit = self._cache.get(key)
        if hit and hit[0] > time.monotonic():
            return list(hit[1])
        try:
            found = self.primary.resolve(service, namespace)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            log.warning("discovery of %s failed (%s); using configured instances", service, exc)
            found = []
        if found:
            with self._lock:
                self._cache[key] = (time.monotonic() + self.ttl, found)
            return found
        return self.fallback.resolve(service, namespace)


def resolver_for(settings: Settings, http: httpx.Client) -> Resolver:
    static = StaticResolver(settings.instances)
    if not settings.nacos_server_addr:
        return static
    return FallbackResolver(NacosResolver(settings, http), static, settings.discovery_cache_seconds)


#: RANDOM's own generator: the module-level one is process state other code may seed.
_RNG = random.Random()


def select(
    instances: list[str], strategy: Selection, rng: random.Random | None = None
) -> list[str]:
    """ALL: every instance (sorted, deduplicated); RANDOM: one of them."""
    unique = sorted(set(instances))
    if strategy == "RANDOM" and unique:
        return [(rng or _RNG).choice(unique)]
    return unique


def instances_for(
    resolver: Resolver, service: str, namespace: str | None, strategy: Selection
) -> list[str]:
    chosen = select(resolver.resolve(service, namespace), strategy)
    if not chosen:
        raise DiscoveryError(
            f"no {service} instance available (namespace {namespace or 'default'}); "
            f"configure DEPLOYER_INSTANCES or Nacos"
        )
    return chosen
