"""Every Redis client of deployer behind Sentinel (the state store, the asyncio client of
the API's event streams, the HTTP API, the metrics exporter, the simulated fleet, kombu's
guarded Sentinel transport), and what a misconfiguration looks like at start: one line with
a stable code, never a traceback. Real processes: a master, a replica, three sentinels."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Queue
from prometheus_client import generate_latest

from deployer import brokers
from deployer.fleet import Behaviour, Fleet
from deployer.metrics import registry_from_settings
from deployer.redis_client import connect, connect_async
from deployer.settings import DEFAULT_INSTANCES, Settings
from tests.helpers import ROOT, free_port, listening_socket, wait_for
from tests.sentinel import MASTER, Cluster, running_cluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("sentinel")) as c:
        yield c


def _settings(url: str, **extra: object) -> Settings:
    return Settings(broker_url=url, redis_url=url, target_redis_url=url, **extra)  # type: ignore[arg-type]


def test_the_clients_reach_the_master_the_sentinels_name(cluster: Cluster) -> None:
    url = cluster.url()
    s = _settings(url)
    r = connect(url, s)
    r.set("ha:probe", "sync")
    assert cluster.master is not None
    assert cluster.master.client().get("ha:probe") == "sync"  # the master, not a replica

    async def through_asyncio() -> str | None:
        a = connect_async(url, s)
        try:
            await a.set("ha:probe:async", "async")
            return await a.get("ha:probe")  # type: ignore[no-any-return]
        finally:
            await a.aclose()

    assert asyncio.run(through_asyncio()) == "sync"
    assert b"deployer_" in generate_latest(registry_from_settings(r))
    free = {svc: ["127.0.0.1:0"] for svc in DEFAULT_INSTANCES}
    fleet = Fleet(free, url, s.key_prefix, s.pubsub_topic, settings=s, default=Behaviour()).start()
    try:
        assert fleet.redis.ping()
    finally:
        fleet.stop()
    r.close()


def test_the_guarded_sentinel_transport_carries_messages(cluster: Cluster) -> None:
    """What Celery does with `broker_transport` and the options deployer gives it."""
    url = cluster.url()
    s = _settings(url)
    queue = Queue("ha-probe", Exchange("ha-probe", type="direct"), routing_key="ha-probe")
    with Connection(
        url,
        transport="tasks.transport:GuardedSentinelTransport",
        transport_options=brokers.broker_transport_options(s),
    ) as conn:
        conn.Producer().publish({"hello": "sentinel"}, exchange=queue.exchange,
                                routing_key="ha-probe", declare=[queue])  # fmt: skip
        message = conn.SimpleQueue(queue).get(timeout=5)
        assert message.payload == {"hello": "sentinel"}
        message.ack()
    assert cluster.master is not None
    assert cluster.master.client().exists("_kombu.binding.ha-probe")


def test_the_http_api_reads_through_sentinel(cluster: Cluster) -> None:
    """`deployer serve`'s app on uvicorn (real HTTP on loopback) with a Sentinel state URL."""
    import threading

    import httpx
    import uvicorn

    from deployer.web import create_app
    from deployer.web.server import uvicorn_config

    s = _settings(cluster.url())
    sock = listening_socket()
    server = uvicorn.Server(uvicorn_config(create_app(s), s, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=20, what="uvicorn started")
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        answer = httpx.get(f"{base}/api/v1/plans", timeout=10)
        assert answer.status_code == 200, answer.text
        events = httpx.get(f"{base}/api/v1/events", timeout=10)
        assert events.status_code == 200, events.text
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYER_", "PYTEST"))}
    return subprocess.run(
        [str(Path(sys.executable).with_name("deployer")), *args],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _one_line(done: subprocess.CompletedProcess[str], code: str) -> str:
    out = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert out.startswith(f"refused {code}:"), out
    return out


def test_a_master_no_sentinel_knows_is_one_line(cluster: Cluster) -> None:
    done = _cli("status", "p", DEPLOYER_BROKER_URL=cluster.url(), DEPLOYER_SENTINEL_MASTER="nope")
    assert "'nope'" in _one_line(done, "SENTINEL_MASTER_UNKNOWN")


def test_sentinels_that_do_not_answer_are_one_line() -> None:
    dead = f"sentinel://127.0.0.1:{free_port()};sentinel://127.0.0.1:{free_port()}"
    _one_line(_cli("status", "p", DEPLOYER_BROKER_URL=dead), "SENTINEL_MASTER_UNKNOWN")


def test_a_bad_url_is_one_line_before_anything_runs() -> None:
    done = _cli("status", "p", DEPLOYER_REDIS_URL="sentinel://a:1;redis://b:2")
    assert "DEPLOYER_REDIS_URL" in _one_line(done, "REDIS_URL_INVALID")
    done = _cli("status", "p", DEPLOYER_BROKER_URL="amqp://guest:secret@127.0.0.1:5672//")
    assert "secret" not in _one_line(done, "STATE_URL_REQUIRED")


def test_a_worker_with_a_bad_url_does_not_start(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYER_", "PYTEST"))}
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool", "solo"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**clean, "PYTHONPATH": str(ROOT), "DEPLOYER_BROKER_URL": "amqp://127.0.0.1//"},
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in out, out
    assert "refused STATE_URL_REQUIRED" in out


def test_the_default_master_name_is_mymaster() -> None:
    assert MASTER == Settings().sentinel_master == "mymaster"
