"""`deployer serve` (a real process, real sockets) under attack: half-open connections,
slow bodies, hundreds of event streams, bodies that would parse into gigabytes.

- Under `ulimit -n 1024`, 1,100 half-open connections (slow-loris) took every descriptor and
  `/healthz` timed out (a liveness probe would restart the pod in a loop): now it answers
  within 2 s, and the oldest half-open connections were closed to make room.
- A connection's headers and body must arrive within their timeouts.
- Every event stream held a Redis connection of its own: 200 streams now add at most a
  handful, one reader fans each event out to all, and the caps answer 429 / 503.
- A 61 MB plan took the server to 1 GB before its 422: a body that would parse too deep or
  into too many values is refused while it is read, the process staying under 150 MB.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers import start_on_free_port, unique, wait_for

DEPLOYER = str(Path(sys.executable).with_name("deployer"))
READ, FULL = "read-token-limits", "full-token-limits"
pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")


@pytest.fixture()
def serve(tmp_path: Path) -> Iterator[Callable[..., tuple[str, subprocess.Popen[bytes]]]]:
    """Start `deployer serve` processes (env overrides, optional descriptor limit)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(nofile: int | None = None, **env: str) -> tuple[str, subprocess.Popen[bytes]]:
        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        def run(port: int) -> subprocess.Popen[bytes]:
            with (tmp_path / f"serve-{port}.log").open("wb") as log:
                proc = subprocess.Popen(
                    [DEPLOYER, "serve", "--port", str(port)],
                    env={**os.environ, **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=limit,
                )
            procs.append(proc)
            return proc

        proc, port = start_on_free_port(run, lambda p: healthy(f"http://127.0.0.1:{p}"))
        return f"http://127.0.0.1:{port}", proc

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=15)


def healthy(base: str, timeout: float = 1) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def raise_own_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"this test needs {need} descriptors (hard limit {hard})")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def connect(base: str) -> socket.socket:
    parts = urlsplit(base)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server closed (or reset) the connection."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


# ---- slow-loris and deadlines --------------------------------------------------------


@pytest.mark.timeout(180)
def test_healthz_answers_through_1100_half_open_connections_under_ulimit_1024(serve):
    raise_own_fd_limit(4096)
    base, proc = serve(nofile=1024)
    half_open = []
    for _ in range(1100):
        sock = connect(base)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never ends
        half_open.append(sock)
    started = time.monotonic()
    res = httpx.get(f"{base}/healthz", timeout=10)
    took = time.monotonic() - started
    assert res.status_code == 200 and took < 2.0, took
    evicted = sum(closed_by_server(s) for s in half_open)
    assert evicted >= 1100 - 1024  # the server made room instead of running out
    descriptors = len(os.listdir(f"/proc/{proc.pid}/fd"))
    assert descriptors < 1024 - 100, descriptors  # room left for Redis and files
    for sock in half_open:
        sock.close()
    print(f"\nslow-loris: /healthz in {took:.2f}s; {evicted} half-open connections closed; "
          f"server holds {descriptors} descriptors")  # fmt: skip


def test_slow_headers_slow_bodies_and_idle_connections_are_closed(serve):
    base, _ = serve(
        DEPLOYER_API_HEADER_TIMEOUT_SECONDS="1",
        DEPLOYER_API_BODY_TIMEOUT_SECONDS="1",
        DEPLOYER_API_IDLE_TIMEOUT_SECONDS="1",
    )
    silent = connect(base)  # connects, never sends a byte
    slow_headers = connect(base)
    slow_headers.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    slow_body = connect(base)
    slow_body.sendall(
        b"POST /api/v1/plans HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"planId": '
    )
    kept = connect(base)
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert b"200 OK" in kept.recv(4096)  # answered, then idle on a kept-alive connection
    for name, sock in [("silent", silent), ("headers", slow_headers), ("body", slow_body),
                       ("idle", kept)]:  # fmt: skip
        wait_for(lambda s=sock: closed_by_server(s), timeout=10, what=f"{name} closed")
        sock.close()
    assert healthy(base)


# ---- event streams --------------------------------------------------------------------


def tcp_peers(pid: int) -> list[int]:
    """Remote ports of the process's TCP connections (from /proc: no extra package)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[9] in inodes and cols[3] == "01":  # ESTABLISHED
                ports.append(int(cols[2].rsplit(":", 1)[1], 16))
    return ports


def open_stream(base: str, token: str) -> tuple[socket.socket, bytes]:
    """An SSE request on a raw socket: (the socket, the status line and what came first)."""
    sock = connect(base)
    sock.sendall(
        f"GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    got = b""
    while b"retry:" not in got and b"\r\n\r\n{" not in got:
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return sock, got


def read_until(sock: socket.socket, marker: bytes, deadline: float) -> bool:
    got = b""
    sock.settimeout(1)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            return False
        got += chunk
        if marker in got:
            return True
    return False


@pytest.mark.timeout(180)
def test_200_streams_share_one_redis_reader_and_the_caps_answer_429_and_503(serve, r):
    raise_own_fd_limit(4096)
    redis_port = urlsplit(os.environ["DEPLOYER_REDIS_URL"]).port
    base, proc = serve(
        DEPLOYER_API_TOKEN=FULL,
        DEPLOYER_API_READ_TOKEN=READ,
        DEPLOYER_API_MAX_STREAMS_PER_TOKEN="200",
        DEPLOYER_API_MAX_STREAMS="205",
    )
    before = tcp_peers(proc.pid).count(redis_port)
    streams = [open_stream(base, READ) for _ in range(200)]
    assert all(b" 200 OK" in first and b"retry:" in first for _, first in streams)
    over, answer = open_stream(base, READ)  # the read token's 201st
    assert b" 429 " in answer and b"TOO_MANY_STREAMS" in answer
    more = [open_stream(base, FULL) for _ in range(5)]  # another token: up to the total
    assert all(b" 200 OK" in first for _, first in more)
    full, answer = open_stream(base, FULL)
    assert b" 503 " in answer and b"STREAMS_FULL" in answer
    during = tcp_peers(proc.pid).count(redis_port)
    assert during - before <= 3, (before, during)
    # one reader, every stream: an event appears on all 205
    marker = unique("fanout")
    r.xadd("deployer:events", {"type": "PROBE", "planId": marker})
    deadline = time.monotonic() + 30
    reached = sum(read_until(sock, marker.encode(), deadline) for sock, _ in streams + more)
    assert reached == 205
    for sock, _ in [*streams, *more, (over, b""), (full, b"")]:
        sock.close()

    # closed streams free their places
    def a_place_again() -> bool:
        sock, first = open_stream(base, READ)
        sock.close()
        return b" 200 OK" in first

    wait_for(a_place_again, timeout=20, what="a place again")
    print(f"\nSSE: 205 streams; server's Redis connections {before} -> {during}")


# ---- bodies that would parse into gigabytes ----------------------------------------------


def peak_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


def body(head: bytes, filler: bytes, total: int, tail: bytes = b"") -> Iterator[bytes]:
    yield head
    sent = len(head)
    while sent < total:
        yield filler
        sent += len(filler)
    yield tail


@pytest.mark.timeout(180)
def test_61_mb_bodies_that_would_parse_too_deep_or_too_big_are_refused_while_read(serve, r):
    base, proc = serve()
    total = 61 * 1024 * 1024
    cases: list[tuple[str, Iterator[bytes], str]] = []
    deep, wide = unique("deep"), unique("wide")
    cases.append((deep, body(f'{{"planId": "{deep}", "tenants": '.encode(), b"[" * 65536, total),
                  "PLAN_TOO_DEEP"))  # fmt: skip
    cases.append((wide, body(f'{{"planId": "{wide}", "tenants": [{{"x": ['.encode(),
                             b"[]," * 21845, total, b"[]]}]}"), "PLAN_TOO_LARGE"))  # fmt: skip
    for plan_id, content, code in cases:
        res = httpx.post(
            f"{base}/api/v1/plans",
            content=content,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        answer: dict[str, Any] = res.json()
        assert (res.status_code, answer["code"], answer["planId"]) == (422, code, plan_id)
        rejected = [f for _, f in r.xrange("deployer:rejections") if f["planId"] == plan_id]
        assert rejected and rejected[-1]["code"] == code
    peak = peak_mb(proc.pid)
    assert peak < 150, peak
    assert healthy(base)
    print(f"\n61 MB bodies refused while read; server peak RSS {peak} MB")
