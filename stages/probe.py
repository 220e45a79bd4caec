"""Asking instances over HTTP: one request, or all of them at once, never raising.

Every outcome is an `Answer` (status, JSON body, or the transport error), so a step can
treat timeouts and refused connections as "not yet" and still name them when it gives up.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

#: Requests in flight at once per worker process (all steps share the pool).
POOL_SIZE = 32
_MISSING = object()


@dataclass
class Answer:
    instance: str
    status: int | None = None
    body: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self, value: Any = _MISSING, json_path: str = "") -> str:
        """What the instance last answered, for progress and failure messages."""
        if self.error:
            return self.error
        if not self.ok:
            return f"HTTP {self.status}"
        if value is _MISSING:
            return f"HTTP {self.status}"
        if value is None:
            return f"no {json_path} in reply" if json_path else "no version in reply"
        return f"version {value}"


def extract(body: Any, path: str) -> Any:
    """`$.a.b` on a JSON body (dot path, no arrays); None when absent."""
    node = body
    for part in path.removeprefix("$").strip(".").split("."):
        if not part:
            continue
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def request(
    client: httpx.Client,
    method: str,
    url: str,
    instance: str,
    timeout: float,
    **kwargs: Any,
) -> Answer:
    try:
        reply = client.request(method, url, timeout=timeout, **kwargs)
    except httpx.TimeoutException:
        return Answer(instance, error=f"timed out after {timeout:g}s")
    except httpx.ConnectError as exc:
        refused = "refused" in str(exc).lower() or "errno 111" in str(exc).lower()
        return Answer(instance, error="connection refused" if refused else f"cannot connect: {exc}")
    except httpx.HTTPError as exc:
        return Answer(instance, error=f"{type(exc).__name__}: {exc}")
    try:
        body = reply.json() if reply.content else None
    except ValueError:
        body = None
    return Answer(instance, status=reply.status_code, body=body)


_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """One pool per process, created after any fork (a forked pool has no threads)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="deployer-probe")
            _pool_pid = os.getpid()
        return _pool


def gather(calls: Mapping[str, Callable[[], Answer]]) -> dict[str, Answer]:
    """Run every call concurrently; each is bounded by its own request timeout."""
    if len(calls) == 1:
        ((key, call),) = calls.items()
        return {key: call()}
    futures = {key: _executor().submit(call) for key, call in calls.items()}
    return {key: future.result() for key, future in futures.items()}
