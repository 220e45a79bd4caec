"""A real `deployer serve` app on uvicorn in a thread (real HTTP on loopback), per settings."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers import listening_socket, wait_for


@pytest.fixture(scope="session")
def serve_app() -> Iterator[Callable[..., str]]:
    """Start the app with `settings` (default: the environment's); returns its base URL."""
    import uvicorn

    from deployer.settings import Settings
    from deployer.web import create_app
    from deployer.web.server import uvicorn_config

    servers: list[tuple[Any, threading.Thread]] = []

    def start(settings: Settings | None = None) -> str:
        sock = listening_socket()  # uvicorn serves on it: no port to lose to another process
        port = int(sock.getsockname()[1])
        settings = settings or Settings()
        config = uvicorn_config(
            create_app(settings), settings, log_level="warning", timeout_graceful_shutdown=2
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}"
        )
        thread.start()
        wait_for(lambda: server.started, timeout=20, what="uvicorn started")
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, _ in servers:
        server.should_exit = True
    for _, thread in servers:
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def api(serve_app: Callable[..., str], worker: Any) -> str:
    """Base URL of the API with a real worker behind it (the session's in-process worker)."""
    return serve_app()
