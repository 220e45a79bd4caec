"""The bounded webhook call (deployer/webhook.py) against real loopback HTTP servers that
trickle, hang, redirect and answer 100 MB: an overall deadline, a small answer cap."""

from __future__ import annotations

import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deployer.webhook import post_json

HUGE = 100 * 1024 * 1024


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Handler.received.append(json.loads(body))
        if self.path == "/ok":
            self._reply(204, b"")
        elif self.path == "/no":
            self._reply(503, b"qa sign-off missing\n\x1b[31mred\x1b[0m for wave 1")
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/trickle":  # headers at once, then one byte a second, forever
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self._drip(b"x", 1.0)
        elif self.path == "/trickle-headers":  # one header byte a second: never a status
            self._drip(b"H", 1.0)
        elif self.path == "/huge":  # 100 MB, chunked (no length announced)
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"y" * 65536
            try:
                for _ in range(HUGE // len(chunk)):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the client stopped reading: as it should
        elif self.path == "/huge-declared":
            self.send_response(200)
            self.send_header("Content-Length", str(HUGE))
            self.end_headers()
            self._drip(b"z" * 65536, 0.0, limit=HUGE // 65536)

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, piece: bytes, every: float, limit: int = 600) -> None:
        try:
            for _ in range(limit):
                self.wfile.write(piece)
                self.wfile.flush()
                if every:
                    time.sleep(every)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def hanging() -> Iterator[str]:
    """A server that accepts connections and never answers a byte."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/gate"
    sock.close()


def test_a_2xx_answers_ok_and_the_body_is_the_json_sent(server):
    answer = post_json(f"{server}/ok", {"planId": "p", "wave": 1}, timeout=2)
    assert answer.ok and answer.status == 204 and answer.outcome == "204"
    assert Handler.received[-1] == {"planId": "p", "wave": 1}


def test_a_refusal_keeps_a_printable_excerpt_of_the_answer(server):
    answer = post_json(f"{server}/no", {"wave": 1}, timeout=2)
    assert not answer.ok and answer.status == 503
    assert answer.excerpt() == "qa sign-off missing  [31mred [0m for wave 1"


def test_a_redirect_is_an_answer_not_followed(server):
    answer = post_json(f"{server}/redirect", {}, timeout=2)
    assert answer.status == 302 and not answer.ok


@pytest.mark.parametrize("path", ["/trickle", "/trickle-headers"])
def test_a_trickling_answer_is_abandoned_at_the_overall_deadline(server, path):
    started = time.monotonic()
    answer = post_json(f"{server}{path}", {}, timeout=1.5)
    elapsed = time.monotonic() - started
    assert not answer.ok and answer.error and "timed out" in answer.error
    assert elapsed < 3.0, elapsed  # 1.5 s deadline, generous margin; a per-read timeout never fires


def test_a_hanging_server_is_abandoned_at_the_deadline(hanging):
    started = time.monotonic()
    answer = post_json(hanging, {}, timeout=1.0)
    assert answer.error and "timed out" in answer.error
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("path", ["/huge", "/huge-declared"])
def test_a_100_mb_answer_costs_less_than_2_mb(server, path):
    tracemalloc.start()
    try:
        answer = post_json(f"{server}{path}", {}, timeout=10, max_bytes=16384)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer.status == 200 and answer.truncated
    assert len(answer.body) <= 16384
    assert peak < 2 * 1024 * 1024, peak
