"""The Nacos resolver against a stand-in server speaking Nacos' open API JSON, and the
Java fallback: an empty or failing registry falls through to the configured instances."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from deployer.settings import Settings
from stages.discovery import resolver_for

HOSTS = {
    ("icc-bg-gateway", "tenant-ns"): [
        {"ip": "10.1.0.1", "port": 8080, "healthy": True, "enabled": True},
        {"ip": "10.1.0.2", "port": 8080, "healthy": True, "enabled": False},
    ],
}


@pytest.fixture()
def nacos() -> Iterator[dict[str, Any]]:
    seen: dict[str, Any] = {"queries": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            seen["queries"].append(query)
            if url.path != "/nacos/v1/ns/instance/list":
                self.send_error(404)
                return
            hosts = HOSTS.get((query["serviceName"], query["namespaceId"]), [])
            body = json.dumps({"name": f"{query['groupName']}@@{query['serviceName']}",
                               "hosts": hosts}).encode()  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seen["addr"] = f"127.0.0.1:{server.server_address[1]}"
    yield seen
    server.shutdown()
    server.server_close()


def test_nacos_gives_healthy_enabled_instances_of_the_mapped_service(nacos):
    settings = Settings(nacos_server_addr=nacos["addr"], instances={"blue-green-gateway": ["f:1"]})
    with httpx.Client(timeout=2) as http:
        resolver = resolver_for(settings, http)
        assert resolver.resolve("blue-green-gateway", "tenant-ns") == ["10.1.0.1:8080"]
        assert resolver.resolve("blue-green-gateway", "tenant-ns") == ["10.1.0.1:8080"]
    (query,) = nacos["queries"]  # the second answer came from the cache
    assert query == {"serviceName": "icc-bg-gateway", "groupName": "DEFAULT_GROUP",
                     "namespaceId": "tenant-ns", "healthyOnly": "true"}  # fmt: skip


def test_an_empty_registry_answer_falls_back_to_the_configured_instances(nacos):
    settings = Settings(nacos_server_addr=nacos["addr"], instances={"ob-service": ["f:1"]})
    with httpx.Client(timeout=2) as http:
        assert resolver_for(settings, http).resolve("ob-service", None) == ["f:1"]
    assert nacos["queries"][0]["namespaceId"] == "public"


def test_an_unreachable_registry_falls_back_to_the_configured_instances(nacos):
    settings = Settings(nacos_server_addr="127.0.0.1:1", instances={"portal": ["f:2"]})
    with httpx.Client(timeout=2) as http:
        assert resolver_for(settings, http).resolve("portal", "ns") == ["f:2"]
