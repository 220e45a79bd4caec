"""The probe's requests go out byte for byte as httpx's client would send them.

`stages.probe.request` talks to the connection pool httpx's client picks for the origin,
without the client's own layers (stages/probe.py `_exchange`). A server that records the
raw bytes it receives is asked the same thing both ways: through `httpx.Client.stream` and
through the probe; the two must be equal, for every shape of request steps make, through a
proxy taken from the environment too.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stages import probe
from tests.helpers import wait_for

ANSWER = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n' \
         b'Connection: close\r\n\r\n{"version": 7}\n'  # fmt: skip


class Recorder:
    """Answers every request with ANSWER on a fresh connection and keeps its raw bytes."""

    def __init__(self, answer: bytes = ANSWER) -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")), 0,
                )  # fmt: skip
                while len(body) < length:
                    body += conn.recv(65536)
                self.received.append(head + b"\r\n\r\n" + body)
                conn.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


def both_ways(server: Recorder, method: str, url: str, **kwargs: Any) -> tuple[bytes, bytes]:
    """What `server` received from httpx's client, then from the probe, for one request."""
    client = probe.new_client(5.0)
    try:
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("Accept-Encoding", "gzip, deflate")  # as the probe asks
        with client.stream(method, url, timeout=2.0, headers=headers, **kwargs) as reply:
            reply.read()
        answer = probe.request(client, method, url, "instance", 2.0, headers=headers, **kwargs)
        assert answer.ok and answer.body == {"version": 7}, answer
    finally:
        client.close()
    wait_for(lambda: len(server.received) >= 2, 5, what="both requests received")
    return server.received[0], server.received[1]


CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "health GET": ("GET", "/actuator/bg-sdk/tenant-1", {}),
    "POST with JSON and headers": (
        "POST", "/asbc/api/traffic/switch",
        {"json": {"tenantId": "t-1", "weight": 100, "note": "überall ✓"},
         "headers": {"X-Trace": "abc", "accept": "application/json"}},
    ),
    "POST with its own content type": (
        "POST", "/portal/notify",
        {"json": [1, 2, 3], "headers": {"Content-Type": "application/vnd.x+json"}},
    ),
    "POST without a body": ("POST", "/portal/ping", {}),
    "DELETE": ("DELETE", "/cfg/tenant-1", {}),
    "path to percent-encode, with a query": ("GET", "/h/ten ant/ä?x=1&y=a b", {}),
    "path with dot segments": ("GET", "/h/./a/../b/.hidden", {}),
    "path of every plain character": ("GET", "/a'b(c)!$&*+,;=:@~-._/Z9", {}),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_a_request_is_what_httpx_would_send(recorder: Recorder, case: str) -> None:
    method, path, kwargs = CASES[case]
    via_httpx, via_probe = both_ways(recorder, method, f"http://{recorder.address}{path}", **kwargs)
    assert via_probe == via_httpx
    assert via_probe.startswith(method.encode() + b" /")


def test_a_proxy_from_the_environment_carries_the_request(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx mounts a proxy transport for HTTP_PROXY: the probe goes through it too."""
    monkeypatch.setenv("HTTP_PROXY", f"http://{recorder.address}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    url = "http://instance.invalid:8080/actuator/bg-sdk/tenant-1"
    via_httpx, via_probe = both_ways(recorder, "GET", url)
    assert via_probe == via_httpx
    assert via_probe.startswith(b"GET " + url.encode() + b" HTTP/1.1\r\n")


def test_transport_errors_are_named_as_httpx_named_them() -> None:
    """A server that answers garbage: the probe says what httpx said (`RemoteProtocolError`)."""
    garbage = Recorder(answer=b"NOT HTTP AT ALL\r\n\r\n")
    client = probe.new_client(5.0)
    try:
        url = f"http://{garbage.address}/h"
        with pytest.raises(httpx.RemoteProtocolError) as raised:
            client.get(url, timeout=2.0)
        answer = probe.request(client, "GET", url, garbage.address, 2.0)
        assert answer.error == f"RemoteProtocolError: {raised.value}"
    finally:
        client.close()
        garbage.close()


def test_a_wrapped_transport_sees_every_request(recorder: Recorder) -> None:
    """An instrumentation that wraps one client's transport (OpenTelemetry's
    `instrument_client` does) sees the probe's requests: they go through the client then."""
    client = probe.new_client(5.0)
    seen: list[str] = []
    inner = client._transport.handle_request  # noqa: SLF001

    def handle_request(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return inner(request)

    try:
        url = f"http://{recorder.address}/actuator/bg-sdk/t1"
        assert probe.request(client, "GET", url, "instance", 2.0).ok  # origin known, unwrapped
        client._transport.handle_request = handle_request  # type: ignore[method-assign]  # noqa: SLF001
        answer = probe.request(client, "GET", url, "instance", 2.0)
        assert answer.ok and answer.body == {"version": 7}
        assert seen == [url]
    finally:
        client.close()
