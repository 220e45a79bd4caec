"""A minimal service fleet for tests: real HTTP instances that report the version each
tenant's config hash holds, as the real services do after reading it from Redis."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis

PREFIX = "icc_ai_ops_srv:tenant_config:"


def _handler(r: redis.Redis) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (http.server's name)
            tenant = self.path.rstrip("/").rsplit("/", 1)[-1]
            meta = r.hget(f"{PREFIX}{tenant}", "metadata")
            body = json.dumps({"version": json.loads(meta)["version"] if meta else None})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def minifleet(redis_url: str, n: int = 2) -> Iterator[dict[str, list[str]]]:
    """`n` instances on loopback; yields the DEPLOYER_INSTANCES mapping that points at them."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _handler(r)) for _ in range(n)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    addrs = [f"127.0.0.1:{s.server_address[1]}" for s in servers]
    try:
        yield {svc: addrs for svc in ("blue-green-gateway", "asbc-gateway", "portal", "ob-service")}
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
