"""The HTTP server under the API: uvicorn (h11), with connections bounded in time and number.

uvicorn gives a connection all the time it wants until its first request is complete: no
header-read timeout. Under `ulimit -n 1024`, 1,100 connections that sent half a request
(slow-loris) took every descriptor, `/healthz` stopped answering, and a liveness probe would
restart the pod in a loop. So each connection is guarded (`GuardedProtocol`):

- **headers** must be complete within `api_header_timeout_seconds` of the connection (or of
  the previous response, on a kept-alive connection), else it is closed;
- a request **body** must be complete within `api_body_timeout_seconds` of its headers;
- **idle** kept-alive connections close after `api_idle_timeout_seconds` (uvicorn's own
  keep-alive timeout);
- at most `api_max_connections` are open, and never more than the descriptor limit allows
  (less a reserve for Redis and files): a new connection over the cap closes the oldest one
  still waiting for its request (or reading its body) instead, so a probe or an operator
  always gets in while a flood of half-open connections cycles out. Only when every open
  connection is busy answering (a stream) is the newcomer closed.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from deployer.settings import Settings

#: Connections asyncio accepts in one go (it is also the listen backlog): they hold
#: descriptors before the guard sees them, so this bounds how far past the cap a burst goes.
ACCEPT_BURST = 100
#: Descriptors kept free: two accept bursts in flight, Redis pools, files, the loop.
FD_RESERVE = 2 * ACCEPT_BURST + 56


def connection_cap(settings: Settings) -> int:
    """`api_max_connections`, never more than the descriptor limit less the reserve."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return settings.api_max_connections
    return max(16, min(settings.api_max_connections, soft - FD_RESERVE))


class ConnectionGuard:
    """A server's open connections, oldest first, and its bounds."""

    def __init__(self, settings: Settings) -> None:
        self.cap = connection_cap(settings)
        self.header_timeout = settings.api_header_timeout_seconds
        self.body_timeout = settings.api_body_timeout_seconds
        self.open: dict[GuardedProtocol, None] = {}  # insertion order: oldest first
        self.evicted = 0

    def admit(self, conn: GuardedProtocol) -> None:
        self.open[conn] = None
        if len(self.open) <= self.cap:
            return
        victim = next((c for c in self.open if c.waiting and c is not conn), conn)
        self.evicted += 1
        victim.drop()

    def release(self, conn: GuardedProtocol) -> None:
        self.open.pop(conn, None)


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines for a request's headers and body."""

    guard: ConnectionGuard  # set on the subclass `protocol_for` makes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._request: object = None  # the scope of the request whose headers arrived last
        self._arm(self.guard.header_timeout)
        self.guard.admit(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.release(self)
        super().connection_lost(exc)

    @property
    def waiting(self) -> bool:
        """Between requests, or still reading one's body: nothing is being answered."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return True
        return not cycle.response_started and cycle.more_body

    def data_received(self, data: bytes) -> None:
        between = self.cycle is None or self.cycle.response_complete
        if between and self._deadline is None:  # the next request on a kept-alive connection
            self._arm(self.guard.header_timeout)
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # idle now: uvicorn's keep-alive timeout closes it

    def _follow(self) -> None:
        """Move the deadline along with the request: headers, then body, then none."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return
        if self.scope is not self._request:  # a new request's headers are in
            self._request = self.scope
            self._disarm()
            if cycle.more_body:
                self._arm(self.guard.body_timeout)
        elif not cycle.more_body and self._deadline is not None:
            self._disarm()  # its body is complete

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self.drop)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def drop(self) -> None:
        """Close the connection now (a deadline passed, or it was evicted). It leaves the
        guard's count at once: asyncio reports the loss only on the loop's next turn."""
        self._disarm()
        self.guard.release(self)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
        if not self.transport.is_closing():
            self.transport.abort()


def protocol_for(guard: ConnectionGuard) -> type[GuardedProtocol]:
    """A protocol class bound to one server's guard (uvicorn instantiates it per connection)."""
    return type("DeployerHTTP", (GuardedProtocol,), {"guard": guard})


def uvicorn_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration `deployer serve` runs (and the tests' servers)."""
    guard = ConnectionGuard(settings)
    config = uvicorn.Config(
        app,
        http=protocol_for(guard),
        timeout_keep_alive=settings.api_idle_timeout_seconds,
        backlog=ACCEPT_BURST,
        **options,
    )
    config.connection_guard = guard  # type: ignore[attr-defined]
    return config
