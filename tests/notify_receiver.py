"""A webhook receiver for notification tests: a real HTTP server on loopback that records
every request and answers as the test says (500 first, hold the request open, ...)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    answered: int = 0

    @property
    def key(self) -> str:
        return self.headers.get("idempotency-key", "")


class Receiver:
    """`answer(request, n)` -> HTTP status, where n counts earlier requests with its key;
    it may block (a receiver that hangs)."""

    def __init__(self, answer: Callable[[Request, int], int] | None = None) -> None:
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.answer = answer or (lambda request, n: 200)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = Request(self.path, {k.lower(): v for k, v in self.headers.items()},
                                  json.loads(raw or b"{}"))  # fmt: skip
                with receiver.lock:
                    n = sum(1 for r in receiver.requests if r.key == request.key)
                    receiver.requests.append(request)
                status = receiver.answer(request, n)
                request.answered = status
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:  # the sender is gone (killed): nothing to answer
                    request.answered = -1

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def seen(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def accepted(self, event: str | None = None) -> list[Request]:
        """Requests answered 2xx (delivered), optionally of one event type."""
        return [r for r in self.seen() if 200 <= r.answered < 300
                and (event is None or r.body.get("event") == event)]  # fmt: skip

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
