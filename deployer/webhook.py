"""One bounded webhook call: POST a JSON body to an operator-configured URL and read a short
answer, never long and never much.

Gates (deployer/rollout.py) use it, and so can anything else that calls an operator's
endpoint (notifications). The bounds hold whatever the other side does:

- an **overall deadline** for the whole exchange — connect, request, headers and body: a
  server trickling one byte a second never trips httpx's per-operation timeouts, so the
  deadline is enforced under httpx, on every socket operation (stages/probe.py `deadline`);
- an **answer cap**: the body is streamed and at most `max_bytes` of it is kept (a declared
  larger one is not read at all), so a 100 MB answer costs `max_bytes` of memory;
- **no redirects** (a 3xx is an answer like any other), JSON only, and the URL comes from
  the operator's settings, never from a plan.

Never raises: every outcome is a `WebhookAnswer` (an HTTP status, or why there is none).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from stages.probe import bound_transports, deadline

#: Bytes of an answer kept by default: enough for a reason, not for a payload.
DEFAULT_MAX_BYTES = 16 * 1024
#: Characters of an answer shown (status, events, dashboard).
EXCERPT_CHARS = 200


@dataclass(frozen=True)
class WebhookAnswer:
    """What the endpoint answered: `status` (None when there was no HTTP answer: then
    `error` says why), the first `max_bytes` of the body, how long it took."""

    status: int | None
    body: bytes = b""
    error: str | None = None
    truncated: bool = False
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300

    @property
    def outcome(self) -> str:
        """One word for status and events: the HTTP status, or the error's kind."""
        return str(self.status) if self.status is not None else (self.error or "no answer")

    def excerpt(self, chars: int = EXCERPT_CHARS) -> str:
        """The start of the answer as text, printable characters only (it is shown to
        operators and stored in events)."""
        text = self.body.decode("utf-8", "replace")
        text = "".join(c if c.isprintable() else " " for c in text).strip()
        if len(text) > chars or self.truncated:
            return text[:chars].rstrip() + "…"
        return text


_local = threading.local()


def _client() -> httpx.Client:
    """One client per thread (connection reuse; httpx clients are not shared across the
    threads of a gate pool), with the deadline installed under its transports."""
    client = getattr(_local, "client", None)
    if client is None:
        client = bound_transports(
            httpx.Client(
                follow_redirects=False,
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
            )
        )
        _local.client = client
    return client


def post_json(
    url: str,
    payload: Any,
    *,
    timeout: float,
    max_bytes: int = DEFAULT_MAX_BYTES,
    headers: dict[str, str] | None = None,
) -> WebhookAnswer:
    """POST `payload` as JSON to `url`; over within `timeout` seconds (wall clock, body
    included), keeping at most `max_bytes` of the answer."""
    started = time.monotonic()
    sent = {"Accept-Encoding": "identity", **(headers or {})}
    try:
        with (
            deadline(timeout),
            _client().stream("POST", url, json=payload, headers=sent, timeout=timeout) as reply,
        ):
            body, truncated = _read_capped(reply, max_bytes)
            status = reply.status_code
    except httpx.TimeoutException:
        return WebhookAnswer(None, error=f"timed out after {timeout:g}s",
                             elapsed=time.monotonic() - started)  # fmt: skip
    except httpx.ConnectError as exc:
        refused = "refused" in str(exc).lower() or "errno 111" in str(exc).lower()
        why = "connection refused" if refused else f"cannot connect: {exc}"
        return WebhookAnswer(None, error=why, elapsed=time.monotonic() - started)
    except httpx.HTTPError as exc:
        return WebhookAnswer(None, error=f"{type(exc).__name__}: {exc}",
                             elapsed=time.monotonic() - started)  # fmt: skip
    return WebhookAnswer(status, body, None, truncated, time.monotonic() - started)


def _read_capped(reply: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    """At most `max_bytes` of the (raw, not decompressed) body; True when there was more.
    A body declared larger is not read at all."""
    declared = reply.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return b"", True
    body = bytearray()
    for chunk in reply.iter_raw(min(max_bytes, 64 * 1024) or 1):
        room = max_bytes - len(body)
        body += chunk[:room]
        if len(chunk) > room:
            return bytes(body), True
    return bytes(body), False


__all__ = ["DEFAULT_MAX_BYTES", "WebhookAnswer", "post_json"]
