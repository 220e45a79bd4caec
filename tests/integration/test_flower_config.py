"""flowerconfig.py refuses every way of exposing Flower without real authentication: empty
basic-auth credentials, a host name that only looks like loopback, an open API."""

from __future__ import annotations

import httpx
import pytest

import flowerconfig
from tests.helpers import free_port, serve_flower


def refusal(proc) -> str:
    assert proc.wait(timeout=30) != 0
    return proc.log.read_text()


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("LOCALHOST", True), ("127.0.0.1.evil.com", False),
     ("127.evil.com", False), ("localhost.evil.com", False), ("::1.evil", False),
     ("0.0.0.0", False), ("", False), ("::", False), ("10.0.0.1", False)],
)  # fmt: skip
def test_the_loopback_check_parses_the_address(address, loopback):
    assert flowerconfig._is_loopback(address) is loopback


def test_empty_basic_auth_credentials_are_refused(start_flower):
    proc = start_flower(f"--port={free_port()}", "--basic-auth=:",
                        env={"FLOWER_ADDRESS": "0.0.0.0"})  # fmt: skip
    out = refusal(proc)
    assert "refusing to start Flower" in out and "empty user or password" in out


@pytest.mark.parametrize("entry", ["ops:", ":s3cret", "ops"])
def test_a_basic_auth_entry_missing_a_user_or_password_is_refused(entry):
    with pytest.raises(SystemExit, match="empty user or password"):
        flowerconfig.check_bind("127.0.0.1", ["admin:ok-pass", entry], None, None)


def test_a_host_name_that_starts_like_loopback_needs_authentication(start_flower):
    proc = start_flower(f"--port={free_port()}", env={"FLOWER_ADDRESS": "127.0.0.1.evil.com"})
    out = refusal(proc)
    assert "refusing to start Flower on 127.0.0.1.evil.com without authentication" in out


def test_an_unauthenticated_api_is_refused(start_flower):
    proc = start_flower(f"--port={free_port()}", env={"FLOWER_UNAUTHENTICATED_API": "true"})
    out = refusal(proc)
    assert "FLOWER_UNAUTHENTICATED_API opens the API" in out


def test_flower_on_localhost_serves_its_pages_but_not_its_api_without_auth(start_flower):
    base = serve_flower(start_flower, {"FLOWER_ADDRESS": "localhost"})
    api = httpx.get(base + "/api/workers", timeout=5)
    assert api.status_code == 401  # Flower 2.x's default, which we keep
    assert "access-control-allow-origin" not in api.headers
