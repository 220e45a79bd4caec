"""The demo plan end to end on a managed-style Redis: TLS with a CA of the test's own, and
an ACL user with the default user switched off. Broker, state and target all on it; the
worker, Flower and the fleet reach it through the same settings (`deployer demo --redis-url`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import ROOT, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYER_", "PYTEST"))}
    env.update(extra)
    return env


def _demo(url: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("deployer")), "demo", "--redis-url", url,
         "--timeout", "120"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Traceback" not in out
    assert any(
        line.startswith("plan demo-") and line.endswith("COMPLETED") for line in out.splitlines()
    ), out
    return out


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _tls_server(d: Path, auth_clients: bool) -> Iterator[tuple[str, Path]]:
    """redis-server on a TLS port only, its certificate signed by a CA made here; with
    `auth_clients`, it requires a client certificate signed by that CA (`client.crt`/`.key`
    in `d`, made here too)."""
    if shutil.which("redis-server") is None or shutil.which("openssl") is None:
        pytest.skip("redis-server or openssl is not on PATH")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
             "/CN=deployer test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.crt",
             cwd=d)  # fmt: skip
    if auth_clients:
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=deployer",
                 "-keyout", "client.key", "-out", "client.csr", cwd=d)  # fmt: skip
        (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
        _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "1", "-extfile", "client.ext",
                 "-out", "client.crt", cwd=d)  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(d / "server.crt"), "--tls-key-file", str(d / "server.key"),
         "--tls-ca-cert-file", str(d / "ca.crt"),
         "--tls-auth-clients", "yes" if auth_clients else "no",
         "--save", "", "--dir", str(d)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0"
    client = {"ssl_certfile": str(d / "client.crt"), "ssl_keyfile": str(d / "client.key")}

    def up() -> bool:
        try:
            c = redis.Redis.from_url(url, ssl_ca_certs=str(d / "ca.crt"), socket_timeout=2,
                                     **(client if auth_clients else {}))  # fmt: skip
            return bool(c.ping())
        except redis.RedisError:
            return False

    try:
        wait_for(up, timeout=15, what="TLS redis-server")
        yield url, d / "ca.crt"
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture()
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """redis-server on a TLS port only (no client certificate asked)."""
    yield from _tls_server(tmp_path, auth_clients=False)


@pytest.fixture()
def mtls_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """redis-server on a TLS port that requires a client certificate (mutual TLS,
    `--tls-auth-clients yes`); the client's certificate and key sit beside the CA."""
    yield from _tls_server(tmp_path, auth_clients=True)


def test_demo_on_a_tls_redis_with_its_own_ca(tls_redis: tuple[str, Path]) -> None:
    url, ca = tls_redis
    _demo(url, _clean_env(DEPLOYER_REDIS_TLS_CA=str(ca)))


def test_a_tls_redis_without_the_ca_is_refused_in_one_line(tls_redis: tuple[str, Path]) -> None:
    url, _ca = tls_redis
    done = subprocess.run(
        [str(Path(sys.executable).with_name("deployer")), "demo", "--redis-url", url],
        cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    assert "certificate" in (done.stdout + done.stderr).lower()


def test_demo_on_a_redis_that_requires_client_certificates(
    mtls_redis: tuple[str, Path],
) -> None:
    url, ca = mtls_redis
    _demo(url, _clean_env(DEPLOYER_REDIS_TLS_CA=str(ca),
                          DEPLOYER_REDIS_TLS_CERT=str(ca.with_name("client.crt")),
                          DEPLOYER_REDIS_TLS_KEY=str(ca.with_name("client.key"))))  # fmt: skip


def test_a_missing_client_certificate_is_refused_in_one_line(
    mtls_redis: tuple[str, Path],
) -> None:
    url, ca = mtls_redis
    done = subprocess.run(
        [str(Path(sys.executable).with_name("deployer")), "demo", "--redis-url", url,
         "--timeout", "60"],
        cwd=ROOT, env=_clean_env(DEPLOYER_REDIS_TLS_CA=str(ca)), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in out
    assert "REDIS_TLS_REFUSED" in out and "DEPLOYER_REDIS_TLS_CERT" in out, out
    assert len([line for line in out.splitlines() if line.strip()]) == 1, out
    # any verb: the same line, exit 2 (refused)
    status = subprocess.run(
        [str(Path(sys.executable).with_name("deployer")), "plans", "--limit", "1"],
        cwd=ROOT, env=_clean_env(DEPLOYER_REDIS_URL=url, DEPLOYER_REDIS_TLS_CA=str(ca)),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    said = status.stdout + status.stderr
    assert status.returncode == 2 and "Traceback" not in said, said
    assert said.startswith("refused REDIS_TLS_REFUSED: ") and len(said.splitlines()) == 1, said


@pytest.fixture()
def acl_redis(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """redis-server whose default user is off: only the ACL user `deployer` gets in."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    admin = redis.Redis(port=port, socket_timeout=2)
    try:
        wait_for(lambda: _pings(admin), timeout=15, what="redis-server")
        admin.execute_command(
            "ACL", "SETUSER", "deployer", "on", ">s3cret-pw", "~*", "&*", "+@all",
            "-flushall", "-flushdb", "-shutdown", "-debug", "-config",
        )  # fmt: skip
        admin.execute_command("ACL", "SETUSER", "default", "off")
        yield f"redis://deployer:s3cret-pw@127.0.0.1:{port}/0", port
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _pings(c: redis.Redis) -> bool:
    try:
        return bool(c.ping())
    except redis.RedisError:
        return False


def test_demo_as_an_acl_user(acl_redis: tuple[str, int]) -> None:
    url, port = acl_redis
    out = _demo(url, _clean_env())
    assert "s3cret-pw" not in out  # the password is never printed
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, socket_timeout=2).ping()  # nobody gets in as default
