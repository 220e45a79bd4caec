"""Session set-up: a real Redis for everything (never a shared database), real workers.

The server is started in `pytest_configure`, before any test module is imported, so the
Celery app (configured from DEPLOYER_* at import) can never point at a real Redis by accident.
Set DEPLOYER_TEST_REDIS_URL to use an existing server instead: its database is FLUSHED.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import ROOT, Planted, unique, wait_for, worker_argv, worker_env

_server: Any = None
_fleet: Any = None
_rabbit: Any = None
#: Why the session has no RabbitMQ (tests/rabbit.py), once one was looked for.
_rabbit_missing: str | None = None

#: Short intervals so waiting steps and leases move at test speed.
TEST_ENV = {
    "DEPLOYER_VERIFY_INTERVAL_SECONDS": "0.2",
    "DEPLOYER_VERIFY_MAX_ATTEMPTS": "20",
    "DEPLOYER_HTTP_TIMEOUT_SECONDS": "2",
    "DEPLOYER_LEASE_TTL_SECONDS": "10",
    "DEPLOYER_RECONCILE_INTERVAL_SECONDS": "1",
    "DEPLOYER_PENDING_GRACE_SECONDS": "10",
}


def _import_anyio_eagerly() -> None:
    """anyio imports its modules on first use; pytest rewrites them (anyio ships a pytest
    plugin), and CPython 3.11's `ast.parse` run from a server thread while another thread
    parses fails ("AST constructor recursion depth mismatch"). Import them all up front."""
    import anyio

    for name in dir(anyio):
        try:
            getattr(anyio, name)
        except (AttributeError, ImportError):
            pass


def pytest_configure(config: pytest.Config) -> None:
    global _server
    _import_anyio_eagerly()
    url = os.environ.get("DEPLOYER_TEST_REDIS_URL")
    if not url:
        from deployer.embedded import EmbeddedRedis

        _server = EmbeddedRedis().start()
        url = _server.url
    for name in ("DEPLOYER_BROKER_URL", "DEPLOYER_REDIS_URL", "DEPLOYER_TARGET_REDIS_URL"):
        os.environ[name] = url
    for name, value in TEST_ENV.items():
        os.environ.setdefault(name, value)
    # the archive of this session (workers, CLI and tests share it), never ~/.local/share
    import tempfile

    archive_dir = tempfile.mkdtemp(prefix="deployer-archive-")
    os.environ.setdefault("DEPLOYER_ARCHIVE_URL", f"sqlite:///{archive_dir}/archive.sqlite3")
    redis.Redis.from_url(url).flushdb()
    _start_fleet(url)


def _start_fleet(url: str) -> None:
    """One simulated fleet for the session, on free ports; DEPLOYER_INSTANCES points at it.

    Tests choose faults per tenant-id prefix (`session_fleet.behave(prefix, Behaviour)`),
    so every test, in-process or subprocess worker, verifies against real HTTP servers.
    """
    global _fleet
    from deployer.fleet import Behaviour, Fleet
    from deployer.settings import DEFAULT_INSTANCES, Settings

    free = {service: ["127.0.0.1:0"] * len(addrs) for service, addrs in DEFAULT_INSTANCES.items()}
    settings = Settings()
    _fleet = Fleet(
        free, url, settings.key_prefix, settings.pubsub_topic, settings.verify_path, Behaviour()
    ).start()
    os.environ["DEPLOYER_INSTANCES"] = json.dumps(_fleet.addresses)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _pg is not None:
        _pg.stop()
    if _rabbit is not None:
        _rabbit.stop()
    if _fleet is not None:
        _fleet.stop()
    if _server is not None:
        _server.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say loudly, not only in the skip list, that RabbitMQ was not tested and why."""
    if _pg_missing is not None:
        terminalreporter.write_sep("!", "PostgreSQL archive tests SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"no PostgreSQL for the tests: {_pg_missing}", red=True)
    if _rabbit_missing is not None:
        terminalreporter.write_sep("!", "RabbitMQ tests SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"no RabbitMQ for the tests: {_rabbit_missing}", red=True)
        terminalreporter.write_line(
            "install RabbitMQ (rabbitmq-server + rabbitmqctl) or set DEPLOYER_TEST_AMQP_URL",
            red=True,
        )


@pytest.fixture(scope="session")
def rabbit() -> Any:
    """A real RabbitMQ vhost of the session's own (tests/rabbit.py), or a loud skip."""
    global _rabbit, _rabbit_missing
    if _rabbit is None and _rabbit_missing is None:
        from tests.rabbit import find_or_start

        found = find_or_start()
        if isinstance(found, str):
            _rabbit_missing = found
            print(f"\nSKIP reason: no RabbitMQ ({found})")
        else:
            _rabbit = found
    if _rabbit is None:
        pytest.skip(f"RabbitMQ unavailable: {_rabbit_missing}")
    return _rabbit


@pytest.fixture(scope="session")
def session_fleet() -> Any:
    """The session's simulated fleet (see `_start_fleet`)."""
    return _fleet


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ["DEPLOYER_REDIS_URL"]


@pytest.fixture()
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture()
def plan_file(tmp_path: Path) -> Callable[[Any], str]:
    """Write a plan (any JSON) to a file of its own; answers the path, for `deployer submit`."""

    def write(payload: Any) -> str:
        path = tmp_path / f"{unique('f')}.json"
        path.write_text(json.dumps(payload))
        return str(path)

    return write


@pytest.fixture()
def planted(r: redis.Redis) -> Iterator[Planted]:
    """Leases and broken keys a test plants (tests/helpers.py `Planted`), gone after it."""
    keys = Planted(r)
    yield keys
    keys.remove()


@pytest.fixture(scope="session")
def celery_app() -> Any:
    from tasks import app

    return app


_in_process_worker = False


@pytest.fixture(scope="session")
def worker(celery_app: Any) -> Iterator[Any]:
    """An in-process worker (threads pool) consuming both queues for the whole session.

    It shares the broker with any `celery worker` subprocess, so tests that spawn workers are
    marked `e2e` and run in a pytest session of their own (Makefile), never beside this one.
    """
    from celery.contrib.testing.worker import start_worker

    global _in_process_worker
    _in_process_worker = True

    with start_worker(
        celery_app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        queues=["deployer.control", "deployer.stages"],
        shutdown_timeout=30,
    ):
        yield celery_app


@pytest.fixture()
def spawn_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start real `celery -A tasks worker` subprocesses; all are stopped after the test."""
    procs: list[subprocess.Popen[bytes]] = []
    if _in_process_worker:
        pytest.fail("spawn_worker beside the in-process worker: mark the test e2e (own session)")

    def start(
        name: str = "w1",
        concurrency: int = 2,
        env: dict[str, str] | None = None,
        pool: str = "prefork",
    ) -> subprocess.Popen[bytes]:
        log = tmp_path / f"{name}.log"
        proc = subprocess.Popen(
            worker_argv(f"{name}@%h", concurrency, log, pool),
            cwd=ROOT,
            env=env or worker_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        wait_for(
            lambda: log.exists() and "ready." in log.read_text(),
            timeout=30,
            what=f"worker {name} ready",
        )
        proc.log = log  # type: ignore[attr-defined]
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def start_flower(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"flower-{len(procs)}.log").open("wb")
        with log:  # the child has its own copy of the descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tasks", "flower", *args],
                cwd=ROOT,
                env=worker_env(**(env or {})),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc.log = Path(log.name)  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(autouse=True)
def _close_step_envs() -> Iterator[None]:
    """Step tests' envs (tests/stepkit.py) hold Redis and HTTP connections: closed with the
    test that made them, so none is left for the garbage collector to warn about."""
    yield
    stepkit = sys.modules.get("tests.stepkit")
    if stepkit is not None:
        stepkit.close_envs()


_pg: Any = None
#: Why the session has no PostgreSQL (tests/pg.py), once one was looked for.
_pg_missing: str | None = None


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster's URL (tests/pg.py), or a loud skip."""
    global _pg, _pg_missing
    if _pg is None and _pg_missing is None:
        from tests import pg

        found = pg.start()
        if isinstance(found, str):
            _pg_missing = found
            print(f"\nSKIP reason: no PostgreSQL ({found})")
        else:
            _pg = found
    if _pg is None:
        pytest.skip(f"PostgreSQL unavailable: {_pg_missing}")
    yield _pg.url


@pytest.fixture(params=["sqlite", "postgresql"])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An empty archive (deployer/archive), migrated: an SQLite file, or a fresh database of
    the session's PostgreSQL cluster."""
    from deployer.archive import Archive
    from deployer.archive.db import engine_for

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'archive.sqlite3'}"
    else:
        import sqlalchemy

        base = request.getfixturevalue("pg_url")
        name = unique("db").replace("-", "_")
        admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        admin.dispose()
        url = base.rsplit("/", 1)[0] + "/" + name
    yield Archive(engine_for(url))
