"""The Nacos resolver against a stand-in server speaking Nacos' open API JSON, and the
Java fallback: an empty or failing registry falls through to the configured instances."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from deployer.errors import NamespaceNotAllowed, PlanValidationError
from deployer.settings import Settings
from stages.discovery import resolver_for
from tests.helpers import bg_tenant, plan, task_rows

TOKEN = "eyJhbGciOiJIUzI1NiJ9.secret-nacos-token"
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
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"accessToken": TOKEN, "tokenTtl": 18000}).encode()
            self.send_response(200 if self.path == "/nacos/v1/auth/login" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            seen["queries"].append(query)
            seen.setdefault("headers", []).append(dict(self.headers))
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
    settings = Settings(
        nacos_server_addr=nacos["addr"],
        instances={"blue-green-gateway": ["f:1"]},
        nacos_allowed_namespaces=["public", "tenant-ns"],
    )
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
    settings = Settings(
        nacos_server_addr="127.0.0.1:1",
        instances={"portal": ["f:2"]},
        nacos_allowed_namespaces=["ns"],
    )
    with httpx.Client(timeout=2) as http:
        assert resolver_for(settings, http).resolve("portal", "ns") == ["f:2"]


def test_the_nacos_access_token_travels_in_headers_and_never_reaches_a_log(nacos, caplog):
    settings = Settings(nacos_server_addr=nacos["addr"], nacos_username="deployer",
                        nacos_password="pw", instances={"portal": ["f:1"]})  # fmt: skip
    caplog.set_level(logging.DEBUG)
    with httpx.Client(timeout=2) as http:
        resolver_for(settings, http).resolve("portal", None)
    assert "HTTP Request: GET" in caplog.text  # httpx logged the request URL ...
    assert TOKEN not in caplog.text  # ... without the token
    (query,) = nacos["queries"]
    assert "accessToken" not in query
    (headers,) = nacos["headers"]
    assert headers["Authorization"] == f"Bearer {TOKEN}" and headers["accessToken"] == TOKEN


def test_a_token_in_any_httpx_log_line_is_redacted(caplog):
    caplog.set_level(logging.INFO)
    logging.getLogger("httpx").info(
        "HTTP Request: %s %s", "GET", f"http://n/x?accessToken={TOKEN}&a=1"
    )
    assert TOKEN not in caplog.text and "accessToken=***&a=1" in caplog.text


def test_a_namespace_outside_the_allow_list_is_refused_before_asking_nacos(nacos):
    settings = Settings(nacos_server_addr=nacos["addr"], instances={"portal": ["f:1"]})
    with httpx.Client(timeout=2) as http:
        resolver = resolver_for(settings, http)
        with pytest.raises(NamespaceNotAllowed, match="namespace 'tenant-ns' is not allowed"):
            resolver.resolve("blue-green-gateway", "tenant-ns")
        assert resolver.resolve("portal", "public") == ["f:1"]  # the configured one is
    assert [q["namespaceId"] for q in nacos["queries"]] == ["public"]


def test_a_plan_naming_a_foreign_namespace_is_refused_at_submit(nacos):
    settings = Settings(nacos_server_addr=nacos["addr"], nacos_allowed_namespaces=["team-a"])
    tenant = bg_tenant("ns-t1", nacosNameSpace="team-b")
    with pytest.raises(PlanValidationError) as refused:
        task_rows(plan("ns-plan", [tenant]), settings)
    assert any(
        "nacosNameSpace" in str(e) and "namespace 'team-b' is not allowed" in str(e)
        for e in refused.value.errors
    ), refused.value.errors
    allowed = bg_tenant("ns-t2", nacosNameSpace="team-a")
    assert task_rows(plan("ns-plan2", [allowed]), settings)[0] == "ns-plan2"
