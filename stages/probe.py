"""Asking instances over HTTP: one request, or all of them at once, never raising, never long.

Every outcome is an `Answer` (status, JSON body, or the transport error), so a step can
treat timeouts and refused connections as "not yet" and still name them when it gives up.

An instance cannot hold a worker process: httpx's timeouts are per socket operation (a
server trickling one byte every 2 s never trips a 5 s read timeout), so every request
here carries a **deadline** for the whole exchange — connect, headers and body — that the
client's network layer (`_DeadlineBackend`) enforces on each read and write. The body is
streamed and dropped past `max_bytes`, so a huge answer costs at most that much memory.
A URL that timed out is not asked again for a while in this process (its *circuit* is
open), nor is an instance from which nothing came back lately: the answer says so and
counts as "not yet", so a hanging instance costs a timeout per trial, not one per poll of
every tenant, while one tenant's hanging path never holds the other tenants (`Breaker`).
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

#: Requests in flight at once per worker process (all steps share the pool).
POOL_SIZE = 32
#: Default cap on an answer's (decoded) body; health and API answers are a few KB.
MAX_ANSWER_BYTES = 1024 * 1024
_MISSING = object()

#: The monotonic time by which the request running in this thread must be over.
_deadline: ContextVar[float | None] = ContextVar("deployer_probe_deadline", default=None)


@dataclass
class Answer:
    instance: str
    status: int | None = None
    body: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300

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


# -- the deadline, enforced below httpx ---------------------------------------------------


def _left(timeout: float | None, exc: type[Exception]) -> float | None:
    """The socket timeout of the next operation: never past the request's deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise exc("request deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self.inner.start_tls(
            ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self.inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self.inner.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self.inner.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound every request made in this block (in this thread) to `seconds` in total."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def bound_transports(client: httpx.Client) -> httpx.Client:
    """Make every transport of `client` honour the per-request deadline.

    httpx exposes no network backend option, so this reaches into its transports' pools
    (`_pool._network_backend`, httpcore 1.x). It lives here alone and fails loudly if an
    upgrade moves it; tests/integration/test_probe_limits.py trickles headers to prove it.
    """
    transports = [client._transport, *client._mounts.values()]  # noqa: SLF001
    for transport in transports:
        if transport is None:
            continue
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if not isinstance(backend, httpcore.NetworkBackend):
            raise RuntimeError("httpx/httpcore changed: cannot bound HTTP request time")
        if not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]  # noqa: SLF001
    return client


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing an answer sets."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


def without_cookies(client: httpx.Client) -> httpx.Client:
    """Make `client` keep no cookie from any answer.

    One client serves every tenant's requests in a worker process: a cookie that one
    tenant's instance set would otherwise go out with the next tenant's requests to that
    host. Not reading them also spares every answer httpx's cookie parsing (~45 µs, a URL
    parse included). httpx's `cookies` setter copies into a plain jar, so the jar is set
    where the client keeps it (`_cookies`, httpx 0.2x); tests/integration/test_probe_limits.py
    proves no cookie comes back, so an upgrade that moves it fails loudly.
    """
    if not isinstance(getattr(client, "_cookies", None), httpx.Cookies):
        raise RuntimeError("httpx changed: cannot turn off the client's cookie jar")
    client._cookies = _NoCookies()  # noqa: SLF001
    return client


def new_client(timeout: float) -> httpx.Client:
    """The HTTP client steps share in a worker process (deadlines installed, no cookies)."""
    client = httpx.Client(
        timeout=timeout,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        follow_redirects=False,
    )
    return without_cookies(bound_transports(client))


# -- the circuit breaker -------------------------------------------------------------------


@dataclass
class _Circuit:
    since: float  # when it first timed out (this time)
    until: float  # not asked before this, but for trials
    trial_at: float  # the next trial may start at this time


class Breaker:
    """Circuits of what timed out recently, per process: a URL, and a whole instance.

    A timeout opens the circuit of the URL that timed out (one tenant's health path that
    hangs holds only that path: other tenants on the instance are asked as usual). It opens
    the instance's circuit too, but only when nothing came back from the instance for
    `seconds`: a whole instance that hangs is then skipped, probed by one request at a time
    (a trial every `trial` seconds), and any answer from it closes its circuit. Before, one
    circuit per instance, opened by one tenant's timeouts, held every tenant on it: healthy
    tenants took 4.5-18.2 s instead of 1.0 s.
    """

    def __init__(self) -> None:
        self._urls: dict[str, _Circuit] = {}
        self._instances: dict[str, _Circuit] = {}
        self._answered: dict[str, float] = {}  # instance -> when it last answered
        self._lock = threading.Lock()

    def blocked(self, instance: str, trial: float, url: str = "") -> str | None:
        """Why not to ask `url` on `instance` now; None lets the caller ask (as the trial of
        an open circuit it reserves the next `trial` seconds, so one caller probes, not all)."""
        now = time.monotonic()
        with self._lock:
            path = self._urls.get(url)
            if path is not None and now < path.until:
                return _why(now, path, "this path", path.until)
            inst = self._instances.get(instance)
            if inst is not None and now < inst.trial_at:
                return _why(now, inst, "the instance", inst.trial_at)
            if path is not None:
                path.until = now + trial
            if inst is not None:
                inst.trial_at = now + trial
            return None

    def trip(self, instance: str, seconds: float, url: str = "") -> None:
        if seconds <= 0:
            return
        now = time.monotonic()
        with self._lock:
            _open(self._urls, url, now, now + seconds)
            if now - self._answered.get(instance, -seconds - 1) > seconds:
                # Nothing from the instance for a while: it hangs, not one path. Its circuit
                # stays open until it answers; a trial every third of the period finds out.
                _open(self._instances, instance, now, now + seconds / 3)

    def answered(self, instance: str, url: str = "") -> None:
        """An answer came: the instance lives, and this path works."""
        with self._lock:
            self._answered[instance] = time.monotonic()
            self._instances.pop(instance, None)
            self._urls.pop(url, None)

    def reset(self, instance: str | None = None) -> None:
        with self._lock:
            if instance is None:
                self._urls.clear()
                self._instances.clear()
                self._answered.clear()
            else:
                self._instances.pop(instance, None)
                self._answered.pop(instance, None)
                for url in [u for u in self._urls if f"//{instance}/" in u or u == instance]:
                    del self._urls[url]


def _open(circuits: dict[str, _Circuit], key: str, now: float, until: float) -> None:
    old = circuits.get(key)
    circuits[key] = _Circuit(old.since if old else now, until, until)


def _why(now: float, circuit: _Circuit, what: str, next_ask: float) -> str:
    return (
        f"timed out {now - circuit.since:.0f}s ago; {what} not asked again for "
        f"{next_ask - now:.0f}s (circuit open)"
    )


breaker = Breaker()


# -- one request ---------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


#: A request path that httpx would send as it is: nothing to percent-encode, and no dot
#: segment (`/./`, `/../`: httpx removes them).
_PLAIN_PATH = re.compile(r"(?!.*/\.)/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
#: Transport errors of httpcore, as httpx would raise them (`map_httpcore_exceptions`).
_TIMEOUTS = (httpcore.TimeoutException, httpx.TimeoutException)
_CONNECT_ERRORS = (httpcore.ConnectError, httpx.ConnectError)
_HTTP_ERRORS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
    httpx.HTTPError,
)


@dataclass(frozen=True)
class _Origin:
    """Where requests to one `scheme://host:port` go: the connection pool (or proxy) the
    client would pick for it, and the URL parts and headers every request there starts with."""

    transport: httpx.HTTPTransport
    pool: httpcore.ConnectionPool
    scheme: bytes
    host: bytes
    port: int | None
    netloc: bytes  # the Host header
    headers: tuple[tuple[bytes, bytes], ...]  # the client's own


_origins: weakref.WeakKeyDictionary[httpx.Client, dict[str, _Origin | None]] = (
    weakref.WeakKeyDictionary()
)
_origins_lock = threading.Lock()


def _origin(client: httpx.Client, origin: str) -> _Origin | None:
    """The pool and headers of `origin` for `client`, worked out once per origin; None when
    the client routes it through something that is not httpx's own transport (a test's
    mock), or the origin carries credentials (httpx turns them into a header): those are
    asked through the client itself."""
    known = _origins.get(client)  # read without the lock: a lookup sees an entry or none
    if known is not None and origin in known:
        return known[origin]
    url = httpx.URL(origin)
    transport = client._transport_for_url(url)  # noqa: SLF001 - the proxy httpx would pick
    pool = getattr(transport, "_pool", None)
    found = None
    if (
        type(transport) is httpx.HTTPTransport  # not a subclass with its own handle_request
        and isinstance(pool, httpcore.ConnectionPool)
        and not url.userinfo
    ):
        headers = tuple(client.headers.raw)
        found = _Origin(
            transport, pool, url.raw_scheme, url.raw_host, url.port, url.netloc, headers
        )
    with _origins_lock:
        _origins.setdefault(client, {})[origin] = found
    return found


def _instrumented(transport: httpx.HTTPTransport) -> bool:
    """Whether something wraps the transport's `handle_request` (OpenTelemetry's httpx
    instrumentation, for the class or one client): the request then goes through it, so
    its span is made (tests/e2e/test_tracing.py)."""
    return "handle_request" in vars(transport) or hasattr(
        type(transport).handle_request, "__wrapped__"
    )


def _headers(
    origin: _Origin, extra: Mapping[str, str], method: str, body: bytes | None
) -> list[tuple[bytes, bytes]]:
    """The request's headers in httpx's order (`Request._prepare`): Host and an empty
    POST's Content-Length first, then the client's headers with the caller's replacing them
    by name (case-insensitive), then a JSON body's Content-Length and Content-Type."""
    own = [(k.encode("ascii"), v.encode("ascii")) for k, v in extra.items()]
    names = {k.lower() for k, _ in own}
    merged = [(k, v) for k, v in origin.headers if k.lower() not in names] + own
    present = {k.lower() for k, _ in merged}
    if body:
        if b"content-length" not in present:
            merged.append((b"Content-Length", str(len(body)).encode("ascii")))
        if b"content-type" not in present:
            merged.append((b"Content-Type", b"application/json"))
        present |= {b"content-length"}
    auto = [] if b"host" in present else [(b"Host", origin.netloc)]
    sized = present & {b"content-length", b"transfer-encoding"}
    if method in ("POST", "PUT", "PATCH") and not sized:
        auto.append((b"Content-Length", b"0"))
    return auto + merged


@contextmanager
def _exchange(
    client: httpx.Client,
    method: str,
    url: str,
    timeout: float,
    headers: Mapping[str, str],
    json_body: Any = _MISSING,
) -> Iterator[tuple[int, Callable[[str], str], Iterable[bytes]]]:
    """One request on the connection pool httpx's client would use, without httpx's client
    layers (URL parsing and merging, auth, redirects, cookies, the Request and Response
    models): a GET to the simulated fleet took 340-370 µs of CPU through the client, 230-245
    this way. Yields the status, a header getter and the raw body's chunks; raises httpcore's
    errors (httpx's when the request went through the client).

    Same wire as `client.stream`: the pool httpx picks for the origin (proxies from the
    environment included), the client's default headers, the path percent-encoded by httpx
    when it needs it, JSON encoded as httpx does (tests/integration/test_probe_wire.py
    compares what a server receives both ways, byte for byte). When an instrumentation
    wraps the transport (tracing), the request goes through the client, so its span is made."""
    scheme, sep, rest = url.partition("://")
    slash = rest.find("/") if sep else -1
    origin = _origin(client, url[: len(scheme) + 3 + slash]) if slash > 0 else None
    if origin is None or _instrumented(origin.transport):
        kwargs: dict[str, Any] = {} if json_body is _MISSING else {"json": json_body}
        with client.stream(method, url, timeout=timeout, headers=headers, **kwargs) as reply:
            yield reply.status_code, reply.headers.get, reply.iter_raw(64 * 1024)
        return
    path = rest[slash:]
    target = path.encode("ascii") if _PLAIN_PATH.fullmatch(path) else httpx.URL(url).raw_path
    body = None
    if json_body is not _MISSING and json_body is not None:  # httpx sends no body for None
        body = json.dumps(
            json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
    fields = _headers(origin, headers, method, body)
    req = httpcore.Request(
        method.encode("ascii"),
        httpcore.URL(scheme=origin.scheme, host=origin.host, port=origin.port, target=target),
        headers=fields,
        content=body,
        extensions={"timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)},
    )
    answer = origin.pool.handle_request(req)
    try:
        yield answer.status, _getter(answer.headers), answer.stream  # type: ignore[misc]
    finally:
        answer.close()


def _getter(raw: list[tuple[bytes, bytes]]) -> Callable[[str], str]:
    """`headers.get(name, "")` over httpcore's raw header list (latin-1, as httpx reads it)."""

    def get(name: str, default: str = "") -> str:
        key = name.encode("ascii").lower()
        values = [v.decode("latin-1") for k, v in raw if k.lower() == key]
        return ", ".join(values) if values else default

    return get


def _read_body(get: Callable[..., str], chunks: Iterable[bytes], max_bytes: int) -> bytes:
    """The body, decoded, or `_TooLarge` as soon as it passes `max_bytes` (also decoded:
    a small gzip answer must not inflate to gigabytes)."""
    declared = get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _TooLarge(f"answer of {int(declared)} bytes exceeds the {max_bytes}-byte limit")
    encoding = get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "", "gzip", "deflate"):
        raise _TooLarge(f"unsupported content-encoding {encoding!r}")
    inflate = zlib.decompressobj(47) if encoding in ("gzip", "deflate") else None
    body = bytearray()
    for chunk in chunks:
        if inflate is not None:
            chunk = inflate.decompress(chunk, max_bytes + 1 - len(body))
        body += chunk
        if len(body) > max_bytes:
            raise _TooLarge(f"answer larger than the {max_bytes}-byte limit: not read further")
    return bytes(body)


def request(
    client: httpx.Client,
    method: str,
    url: str,
    instance: str,
    timeout: float,
    *,
    max_bytes: int = MAX_ANSWER_BYTES,
    breaker_seconds: float = 0.0,
    headers: Mapping[str, str] | None = None,
    json: Any = _MISSING,  # noqa: A002 - httpx's name for it
) -> Answer:
    """One exchange, over within `timeout` seconds (wall clock, body included).

    A timeout opens the circuit of `url` (and of `instance` when nothing else came back
    from it lately) for `breaker_seconds` (0: no breaker); an answer closes both.
    """
    why = breaker.blocked(instance, timeout, url) if breaker_seconds > 0 else None
    if why is not None:
        return Answer(instance, error=why)
    fields = dict(headers or {})
    if not any(k.lower() == "accept-encoding" for k in fields):
        fields["Accept-Encoding"] = "gzip, deflate"
    try:
        with (
            deadline(timeout),
            _exchange(client, method, url, timeout, fields, json) as (status, get, chunks),
        ):
            raw = _read_body(get, chunks, max_bytes)
    except _TIMEOUTS:
        breaker.trip(instance, breaker_seconds, url)
        return Answer(instance, error=f"timed out after {timeout:g}s")
    except _TooLarge as exc:
        return Answer(instance, error=str(exc))
    except _CONNECT_ERRORS as exc:
        refused = "refused" in str(exc).lower() or "errno 111" in str(exc).lower()
        return Answer(instance, error="connection refused" if refused else f"cannot connect: {exc}")
    except (*_HTTP_ERRORS, zlib.error) as exc:
        return Answer(instance, error=f"{type(exc).__name__}: {exc}")  # httpx's names too
    if breaker_seconds > 0:
        breaker.answered(instance, url)
    return Answer(instance, status=status, body=_decoded(raw))


def _decoded(raw: bytes) -> Any:
    """The JSON of a body; None when empty or not JSON (the step then names the status)."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


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


def _submit(call: Callable[[], Answer]) -> Future[Answer]:
    """Run `call` in the pool in a copy of the caller's context: the request is then part
    of the caller's trace (its step's span), like a call made in the caller's thread."""
    return _executor().submit(contextvars.copy_context().run, call)


def gather(calls: Mapping[str, Callable[[], Answer]]) -> dict[str, Answer]:
    """Run every call concurrently; each is bounded by its own request deadline."""
    if len(calls) == 1:
        ((key, call),) = calls.items()
        return {key: call()}
    futures = {key: _submit(call) for key, call in calls.items()}
    return {key: future.result() for key, future in futures.items()}


#: A request a poll stopped waiting for is forgotten after this (its poll went elsewhere).
LATE_ANSWER_SECONDS = 60.0


class _InFlight:
    """Reads still running after their poll moved on, by key (the URL), per process: the
    next poll of the same URL here takes the answer instead of asking again."""

    def __init__(self) -> None:
        self._futures: dict[str, tuple[float, Future[Answer]]] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def start(self, key: str, call: Callable[[], Answer]) -> Future[Answer]:
        now = time.monotonic()
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's requests are not ours
                self._futures, self._pid = {}, os.getpid()
            for old in [k for k, (t, _) in self._futures.items() if now - t > LATE_ANSWER_SECONDS]:
                del self._futures[old]
            hit = self._futures.get(key)
            if hit is not None:
                return hit[1]
            future = _submit(call)
            self._futures[key] = (now, future)
            return future

    def running(self, key: str) -> bool:
        with self._lock:
            hit = self._futures.get(key)
        return hit is not None and not hit[1].done()

    def finish(self, key: str, future: Future[Answer]) -> None:
        with self._lock:
            if self._futures.get(key, (0.0, None))[1] is future:
                del self._futures[key]


_inflight = _InFlight()


def still_asking(key: str) -> bool:
    """Whether a read a poll stopped waiting for (by its key) is still running here."""
    return _inflight.running(key)


def poll(
    calls: Mapping[str, tuple[str, Callable[[], Answer]]], patience: float
) -> dict[str, Answer]:
    """Ask every instance (`instance -> (key, call)`; the key names the read, e.g. run and
    URL) at once, waiting at most `patience`
    seconds: a read not over by then is "not yet" and keeps running in the background
    (to its own deadline), and the next poll of the same key in this process takes its
    answer. So a poll never holds the worker process for longer than `patience`."""
    futures = {inst: (key, _inflight.start(key, call)) for inst, (key, call) in calls.items()}
    wait([f for _, f in futures.values()], timeout=patience)
    answers: dict[str, Answer] = {}
    for inst, (key, future) in futures.items():
        if future.done():
            _inflight.finish(key, future)
            answers[inst] = future.result()
        else:
            answers[inst] = Answer(inst, error=f"no answer within {patience:g}s (still asking)")
    return answers
