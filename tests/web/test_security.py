"""`deployer serve` off loopback: no token, no start; tokens: read may read, never command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from deployer.errors import InsecureBind
from deployer.settings import Settings
from deployer.web.security import check_bind, is_loopback

DEPLOYER = str(Path(sys.executable).parent / "deployer")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("127.0.0.1.evil.com", False),  # a name, not an address: not loopback
        ("", False),
    ],
)
def test_loopback_is_decided_by_parsing_the_address(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1.evil.com"])
def test_serve_off_loopback_without_a_token_refuses_to_start(host):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYER_API_")}
    proc = subprocess.run(
        [DEPLOYER, "serve", "--host", host, "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "API_TOKEN_REQUIRED" in proc.stderr and "DEPLOYER_API_TOKEN" in proc.stderr


def test_a_token_allows_binding_off_loopback():
    with pytest.raises(InsecureBind):
        check_bind("0.0.0.0", Settings())
    check_bind("0.0.0.0", Settings(api_token="a-long-random-token"))


@pytest.fixture(scope="module")
def guarded(serve_app, worker):
    return serve_app(Settings(api_token="full-token", api_read_token="read-token"))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_without_a_token_only_healthz_answers(guarded):
    assert httpx.get(f"{guarded}/healthz").status_code == 200
    for path in ("/api/v1/plans", "/", "/metrics", "/api/v1/events", *DESCRIBED):
        res = httpx.get(guarded + path)
        assert (res.status_code, res.json()["code"]) == (401, "UNAUTHORIZED"), path
    res = httpx.get(f"{guarded}/api/v1/plans", headers=bearer("wrong"))
    assert res.status_code == 401


#: The API's description and the dashboard's files: as protected as the rest.
DESCRIBED = ("/openapi.json", "/docs", "/static/app.js", "/static/app.css",
             "/static/swagger/swagger-ui-bundle.js")  # fmt: skip


def test_a_read_token_reads_but_cannot_command(guarded):
    read = bearer("read-token")
    assert httpx.get(f"{guarded}/api/v1/plans", headers=read).status_code == 200
    for path in DESCRIBED:
        assert httpx.get(guarded + path, headers=read).status_code == 200, path
    assert httpx.get(f"{guarded}/metrics", headers=read).status_code == 200
    for path in ("/api/v1/plans/p1/pause", "/api/v1/tenants/t1/cancel", "/api/v1/plans"):
        res = httpx.post(guarded + path, headers=read, json={})
        assert (res.status_code, res.json()["code"]) == (403, "FORBIDDEN"), path


def test_the_command_token_commands(guarded):
    res = httpx.post(f"{guarded}/api/v1/plans/no-such-plan/pause", headers=bearer("full-token"))
    assert (res.status_code, res.json()["code"]) == (404, "PLAN_NOT_FOUND")  # past the check


def test_the_dashboard_logs_in_with_a_strict_http_only_cookie(guarded):
    with httpx.Client(base_url=guarded) as browser:
        assert browser.get("/login", params={"token": "nope"}).status_code == 401
        res = browser.get("/login", params={"token": "read-token"})
        assert res.status_code == 303
        cookie = res.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get("/").status_code == 200
        assert browser.post("/api/v1/plans/p1/pause").status_code == 403


def test_deployer_serve_starts_on_loopback_and_answers_healthz(tmp_path):
    from tests.helpers import start_on_free_port

    def start(port: int) -> subprocess.Popen[bytes]:
        with (tmp_path / "serve.log").open("wb") as log:  # the child keeps its own copy
            return subprocess.Popen(
                [DEPLOYER, "serve", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
            )

    def healthy(port: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    # The test is that it starts and answers on loopback at all.
    proc, _port = start_on_free_port(start, healthy)
    proc.terminate()
    proc.wait(timeout=15)


def test_another_site_cannot_command_through_an_operators_browser(api):
    # a form on another site posting to the loopback API: no token is needed on loopback,
    # so the Origin is what tells it apart
    res = httpx.post(
        f"{api}/api/v1/plans/any-plan/cancel", headers={"Origin": "https://evil.example"}
    )
    assert (res.status_code, res.json()["code"]) == (403, "CROSS_ORIGIN")
    res = httpx.post(
        f"{api}/api/v1/plans/any-plan/cancel", headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert (res.status_code, res.json()["code"]) == (403, "CROSS_ORIGIN")
    same = httpx.post(f"{api}/api/v1/plans/no-such-plan/cancel", headers={"Origin": api})
    assert same.status_code == 404  # the dashboard's own requests pass


def test_a_dns_rebinding_host_is_refused_on_loopback(api):
    res = httpx.get(f"{api}/api/v1/plans", headers={"Host": "attacker.example"})
    assert res.status_code == 400
    assert httpx.get(f"{api}/api/v1/plans", headers={"Host": "localhost"}).status_code == 200
