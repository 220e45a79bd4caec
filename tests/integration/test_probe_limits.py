"""No instance can hold a probe: a wall-clock deadline per request, a size cap per answer,
and a circuit breaker for instances that hang — against misbehaving servers on real sockets.

Each case first shows the server really misbehaves (it never ends its answer, or sends
50 MB), then that the request returns anyway, names what happened, and stays small.
"""

from __future__ import annotations

import gzip
import os
import socket
import threading
import tracemalloc
from collections.abc import Callable, Iterator

import httpx
import pytest

from deployer.errors import StepFailed
from deployer.fleet import Behaviour, Fleet
from deployer.settings import Settings
from stages import probe
from stages.base import Done, Wait
from tests.helpers import unique, wait_for
from tests.stepkit import ctx_for, env_for, once, set_version, step_spec

MB = 1024 * 1024


@pytest.fixture()
def fleet() -> Iterator[Fleet]:
    """Instances of our own (no pub/sub service), so faults never reach other tests."""
    s = Settings()
    with Fleet(
        {"portal": ["127.0.0.1:0"] * 2}, os.environ["DEPLOYER_TARGET_REDIS_URL"],
        s.key_prefix, s.pubsub_topic, s.verify_path,
    ) as own:  # fmt: skip
        yield own
    probe.breaker.reset()


class RawServer:
    """A TCP server that runs `talk(conn)` per connection: for answers no HTTP server sends."""

    def __init__(self, talk: Callable[[socket.socket, threading.Event], None]) -> None:
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.talk = talk
        self.connections = self.answered = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        self.connections += 1
        with conn:
            conn.recv(65536)
            try:
                self.talk(conn, self.stop)
                self.answered += 1
                conn.recv(1)  # until the client closes
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def trickled_headers(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not stop.wait(0.1):
        conn.sendall(b"a")


def endless_chunks(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    chunk = b" " * 65536
    while not stop.is_set():
        conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))


#: 64 MB of spaces in ~64 KB (built at import, outside the memory measurement).
BOMB = gzip.compress(b" " * (64 * MB), compresslevel=9)


def gzip_bomb(conn: socket.socket, stop: threading.Event) -> None:
    bomb = BOMB
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip"
                 b"\r\nContent-Length: %d\r\n\r\n%s" % (len(bomb), bomb))  # fmt: skip


@pytest.fixture()
def raw() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(talk: Callable[[socket.socket, threading.Event], None]) -> RawServer:
        servers.append(RawServer(talk))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def get(address: str, timeout: float = 0.5, **kwargs: object) -> probe.Answer:
    client = probe.new_client(5.0)
    try:
        return probe.request(
            client, "GET", f"http://{address}/actuator/bg-sdk/t1", address, timeout, **kwargs
        )  # type: ignore[arg-type]
    finally:
        client.close()


def test_a_slow_loris_body_is_cut_at_the_deadline_though_each_byte_comes_in_time(fleet):
    slow = fleet.addresses["portal"][0]
    fleet.behave_instance(slow, Behaviour(trickle=0.1))
    # The bad case: a plain httpx read timeout (5 s) never trips on a byte every 0.1 s.
    with httpx.stream("GET", f"http://{slow}/x/t1", timeout=5.0) as reply:
        assert reply.headers["content-length"] == "4096"
        first = next(reply.iter_raw(1))
        assert first == b" "
    answer = get(slow, timeout=0.5)
    assert answer.error == "timed out after 0.5s" and not answer.ok


def test_headers_trickled_byte_by_byte_are_cut_at_the_deadline(raw):
    server = raw(trickled_headers)
    answer = get(server.address, timeout=0.5)
    assert answer.error == "timed out after 0.5s"


def test_an_endless_answer_is_dropped_past_the_cap_and_memory_stays_small(raw, fleet):
    endless = raw(endless_chunks)
    huge = fleet.addresses["portal"][1]
    fleet.behave_instance(huge, Behaviour(answer_bytes=50 * MB))
    tracemalloc.start()
    try:
        chunked = get(endless.address, timeout=30, max_bytes=MB)
        declared = get(huge, timeout=30, max_bytes=MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert chunked.error == f"answer larger than the {MB}-byte limit: not read further"
    assert declared.error == f"answer of {50 * MB} bytes exceeds the {MB}-byte limit"
    assert peak < 4 * MB, peak


def test_a_gzip_bomb_is_capped_after_decoding(raw):
    server = raw(gzip_bomb)
    tracemalloc.start()
    try:
        answer = get(server.address, timeout=30, max_bytes=MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer.error == f"answer larger than the {MB}-byte limit: not read further"
    assert peak < 4 * MB, peak


def test_a_hanging_instance_is_waited_on_once_then_its_circuit_is_open(fleet):
    hung = fleet.addresses["portal"][0]
    fleet.behave_instance(hung, Behaviour(hang=True))
    first = get(hung, timeout=0.3, breaker_seconds=60)
    assert first.error == "timed out after 0.3s"
    assert fleet.hits(hung) == 1
    again = [get(hung, timeout=0.3, breaker_seconds=60) for _ in range(5)]
    assert all("circuit open" in (a.error or "") for a in again)
    assert fleet.hits(hung) == 1  # not asked again while the circuit is open
    fleet.behave_instance(hung, None)
    probe.breaker.reset(hung)
    assert get(hung, timeout=2, breaker_seconds=60).ok  # a recovered instance answers again


def test_an_open_circuit_lets_one_trial_through_when_it_expires(fleet):
    hung = fleet.addresses["portal"][0]
    fleet.behave_instance(hung, Behaviour(hang=True))
    assert get(hung, timeout=0.2, breaker_seconds=0.3).error == "timed out after 0.2s"
    wait_for(lambda: probe.breaker.blocked(hung, 60) is None, timeout=5, what="circuit expiry")
    # That call reserved the trial (for 60 s): others are still told the circuit is open.
    assert "circuit open" in (get(hung, timeout=0.2, breaker_seconds=0.3).error or "")
    assert fleet.hits(hung) == 1


def get_path(address: str, tenant: str, **kwargs: object) -> probe.Answer:
    client = probe.new_client(5.0)
    try:
        url = f"http://{address}/actuator/bg-sdk/{tenant}"
        return probe.request(client, "GET", url, address, 0.3, **kwargs)  # type: ignore[arg-type]
    finally:
        client.close()


def test_one_tenants_hanging_path_holds_only_that_path(fleet):
    """Before: its timeouts opened the instance's circuit for every tenant on it."""
    inst = fleet.addresses["portal"][0]
    hanging = unique("hang")
    fleet.behave(hanging, Behaviour(hang=True))
    healthy = [unique("ok") for _ in range(4)]
    assert all(get_path(inst, t, breaker_seconds=60).ok for t in healthy)  # it answers
    assert get_path(inst, hanging, breaker_seconds=60).error == "timed out after 0.3s"
    hits = fleet.hits(inst)
    answers = [get_path(inst, t, breaker_seconds=60) for t in healthy * 3]
    assert all(a.ok for a in answers), [a.error for a in answers]  # never "circuit open"
    blocked = get_path(inst, hanging, breaker_seconds=60)
    assert "this path not asked again" in (blocked.error or "")
    assert fleet.hits(inst) == hits + len(answers)  # the hanging path was not asked again


def test_a_whole_hanging_instance_is_asked_once_then_by_trials_and_an_answer_closes_it(fleet):
    inst = fleet.addresses["portal"][1]
    fleet.behave_instance(inst, Behaviour(hang=True))
    tenants = [unique("t") for _ in range(10)]
    first = get_path(inst, tenants[0], breaker_seconds=3)
    assert first.error == "timed out after 0.3s"
    others = [get_path(inst, t, breaker_seconds=3) for t in tenants[1:]]
    assert all("the instance not asked again" in (a.error or "") for a in others)
    assert fleet.hits(inst) == 1  # one timeout for ten tenants
    fleet.behave_instance(inst, None)  # it recovers: the next trial's answer closes it
    wait_for(lambda: get_path(inst, tenants[1], breaker_seconds=3).ok, timeout=10,
             interval=0.2, what="a trial that is answered")  # fmt: skip
    assert all(get_path(inst, t, breaker_seconds=3).ok for t in tenants[2:])


def test_a_health_check_names_the_slow_instance_and_never_waits_past_its_deadline(fleet, r):
    tenant = unique("sloris")
    healthy, slow = fleet.addresses["portal"]
    fleet.behave_instance(slow, Behaviour(trickle=0.1))
    set_version(r, tenant, 20)
    env = env_for(
        instances={"blue-green-gateway": [healthy, slow]},
        verify_max_attempts=2,
        probe_timeout_seconds=0.4,
    )
    verify = step_spec("health-check", service="blue-green-gateway")
    ctx = ctx_for(env, tenant, 20)
    first = once(verify, ctx, env)
    assert isinstance(first, Wait)
    assert first.progress["confirmed"] == [healthy]
    # The poll stopped waiting for the trickling answer; its read goes on to its deadline.
    assert first.progress["seen"][slow] == "no answer within 0.25s (still asking)"
    url = f"{ctx.ctx.run_id}/{ctx.ctx.lease_epoch} http://{slow}/actuator/bg-sdk/{tenant}"
    wait_for(lambda: not probe.still_asking(url), timeout=10, what="the read's deadline")
    with pytest.raises(StepFailed) as failed:
        once(verify, ctx, env)
    message = str(failed.value)
    assert message.startswith("1 of 2 blue-green-gateway instances did not report version 20")
    assert f"{slow} answered timed out after 0.4s" in message
    assert fleet.hits(slow) == 1  # the second attempt took the first read's outcome
    verify_again = once(verify, ctx_for(env, tenant, 20), env)
    assert isinstance(verify_again, Wait)
    assert "circuit open" in verify_again.progress["seen"][slow]
    assert fleet.hits(slow) == 1


def slow_version(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(0.5)
    body = b'{"version": 20}'
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip


def test_an_answer_later_than_the_poll_waits_serves_the_next_poll(raw, r):
    tenant = unique("late")
    server = raw(slow_version)
    set_version(r, tenant, 20)
    env = env_for(instances={"blue-green-gateway": [server.address]}, probe_patience_seconds=0.1,
                  probe_timeout_seconds=5, http_timeout_seconds=5)  # fmt: skip
    verify = step_spec("health-check", service="blue-green-gateway")
    ctx = ctx_for(env, tenant, 20)
    first = once(verify, ctx, env)
    assert isinstance(first, Wait)
    assert first.progress["seen"][server.address] == "no answer within 0.1s (still asking)"
    url = f"{ctx.ctx.run_id}/{ctx.ctx.lease_epoch} http://{server.address}/actuator/bg-sdk/{tenant}"
    wait_for(lambda: not probe.still_asking(url), timeout=10, what="the late answer")
    assert once(verify, ctx, env) == Done()
    assert server.connections == 1  # confirmed by the first read, not asked again


def test_an_http_step_retries_a_huge_answer_and_names_it(fleet):
    tenant = unique("huge")
    huge = fleet.addresses["portal"][0]
    fleet.behave_instance(huge, Behaviour(answer_bytes=50 * MB))
    env = env_for(instances={"portal": [huge]}, verify_max_attempts=1)
    spec = step_spec("http-request", service="portal", method="POST", path="/notify/{tenantId}",
                     body={"tenantId": tenant})  # fmt: skip
    with pytest.raises(StepFailed, match=f"{huge} answered answer of {50 * MB} bytes exceeds"):
        once(spec, ctx_for(env, tenant), env)


def test_a_cookie_one_tenants_instance_sets_never_goes_out_with_another_request():
    """The client is shared by every tenant in a worker process: it keeps no cookie."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str | None] = []

    class SetsCookies(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Cookie"))
            body = b'{"version": 1}'
            self.send_response(200)
            self.send_header("Set-Cookie", f"session={self.path.rsplit('/', 1)[-1]}; Path=/")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), SetsCookies)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    client = probe.new_client(5.0)
    try:
        for tenant in ("tenant-a", "tenant-b", "tenant-c"):
            answer = probe.request(client, "GET", f"http://{address}/health/{tenant}", address, 2.0)
            assert answer.ok and answer.body == {"version": 1}
        # a plain httpx client would have sent "session=tenant-a" with tenant-b's request
        assert seen == [None, None, None]
        assert len(client.cookies) == 0
    finally:
        client.close()
        server.shutdown()
        server.server_close()
