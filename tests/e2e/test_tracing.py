"""Traces end to end: two `celery worker` processes export OTLP/HTTP to a real receiver
(an HTTP server here, decoding the protobuf with opentelemetry-proto), and every tenant of a
plan is one trace holding its submit, every stage, every instance HTTP call and the Lua
scripts, with the deployer.* attributes; the workers' log lines carry the trace ids."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from deployer.client import DeployerClient
from tests.helpers import bg_tenant, plan, unique, wait_for, worker_env

pytestmark = pytest.mark.e2e
STAGES = ("portal", "blue-green-gateway", "ob-service")


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent: str
    name: str
    kind: int
    attributes: dict[str, Any] = field(default_factory=dict)
    service: str = ""


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


class Receiver:
    """An OTLP/HTTP trace receiver on loopback: POST /v1/traces, protobuf in, protobuf out."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = self.path == "/v1/traces" and "protobuf" in self.headers["Content-Type"]
                if ok:
                    receiver.take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self, request: ExportTraceServiceRequest) -> None:
        out = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append(Span(
                        s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name,
                        s.kind, {a.key: _value(a.value) for a in s.attributes},
                        str(resource.get("service.name", "")),
                    ))  # fmt: skip
        with self.lock:
            self.spans += out

    def snapshot(self) -> list[Span]:
        with self.lock:
            return list(self.spans)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    try:
        yield rec
    finally:
        rec.close()


def traces_of(spans: list[Span], plan_id: str) -> dict[str, dict[str, list[Span]]]:
    """tenant -> trace id -> every span of that trace."""
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for s in spans:
        by_trace[s.trace_id].append(s)
    out: dict[str, dict[str, list[Span]]] = defaultdict(dict)
    for trace_id, members in by_trace.items():
        for s in members:
            if s.attributes.get("deployer.plan_id") == plan_id:
                out[str(s.attributes["deployer.tenant_id"])][trace_id] = members
    return out


def complete(members: list[Span]) -> bool:
    names = {s.name for s in members}
    return (
        "deployer.submit" in names
        and all(f"deployer.stage {stage}" in names for stage in STAGES)
        and any(s.name == "deployer.script stage_end" for s in members)
    )


def test_a_plan_on_two_workers_is_one_trace_per_tenant_with_stages_and_http_calls(
    spawn_worker, r, receiver
):
    env = worker_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="200",
        OTEL_SERVICE_NAME="deployer-worker-test",
        DEPLOYER_WORKER_PREFETCH_MULTIPLIER="1",  # one message each at a time: both work
    )
    workers = [spawn_worker(name, concurrency=1, env=env) for name in ("tw1", "tw2")]
    plan_id = unique("traced")
    tenants = [bg_tenant(f"{plan_id}-t{i}", serviceNames=list(STAGES)) for i in range(6)]
    strategy = {"waves": {"type": "linear", "size": 3}}
    DeployerClient().submit(plan(plan_id, tenants, maxConcurrency=3, strategy=strategy))
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED", timeout=60,
             interval=0.2, what="plan COMPLETED")  # fmt: skip

    def all_exported() -> bool:
        found = traces_of(receiver.snapshot(), plan_id)
        return len(found) == len(tenants) and all(
            len(t) == 1 and complete(next(iter(t.values()))) for t in found.values()
        )

    wait_for(all_exported, timeout=20, interval=0.2, what="every tenant's trace exported")
    spans = receiver.snapshot()
    found = traces_of(spans, plan_id)
    nodes: set[str] = set()
    for i, tenant in enumerate(t["tenantId"] for t in tenants):
        ((trace_id, members),) = found[tenant].items()
        by_name = defaultdict(list)
        for s in members:
            by_name[s.name].append(s)
        (root,) = by_name["deployer.submit"]
        assert root.parent == ""  # the run's own trace, not the plan submit's
        assert root.attributes["deployer.plan_id"] == plan_id
        assert root.attributes["deployer.tenant_id"] == tenant
        assert root.attributes["deployer.plan_version"] == 20
        assert root.attributes["deployer.run_kind"] == "FORWARD"
        assert root.attributes["deployer.wave"] == i // 3
        for stage in STAGES:
            attempts = by_name[f"deployer.stage {stage}"]
            assert attempts, (tenant, stage)
            for s in attempts:
                assert s.attributes["deployer.stage"] == stage
                assert s.attributes["deployer.tenant_id"] == tenant
                assert s.attributes["deployer.plan_version"] == 20
                assert s.attributes["deployer.wave"] == i // 3
                assert s.attributes["deployer.run_kind"] == "FORWARD"
                nodes.add(str(s.attributes["deployer.worker"]).split("@", 1)[0])
        # every step, inside its stage's span
        stage_of = {
            s.span_id: s.attributes["deployer.stage"]
            for s in members
            if s.name.startswith("deployer.stage ")
        }  # fmt: skip (any attempt)
        steps = {(stage_of.get(s.parent), s.attributes["deployer.step_type"]) for s in members
                 if s.name.startswith("deployer.step ")}  # fmt: skip
        assert {("portal", "http-request"), ("blue-green-gateway", "key-value-write"),
                ("blue-green-gateway", "broadcast"), ("blue-green-gateway", "health-check"),
                ("ob-service", "redis-ack")} <= steps, steps  # fmt: skip
        # the HTTP calls to the instances (httpx instrumentation, CLIENT spans)
        http = [s for s in members if s.kind == 3 and "http.request.method" in s.attributes
                or "http.method" in s.attributes]  # fmt: skip
        methods = {s.attributes.get("http.request.method") or s.attributes.get("http.method")
                   for s in http}  # fmt: skip
        assert {"POST", "GET"} <= methods, (tenant, methods)  # portal's POST, health GETs
        assert (
            len(
                [
                    s
                    for s in http
                    if (s.attributes.get("http.request.method") or s.attributes.get("http.method"))
                    == "GET"
                ]
            )
            >= 3
        )
        # the Lua scripts, with the redis instrumentation's command inside
        scripts = {s.name for s in members if s.name.startswith("deployer.script ")}
        assert {"deployer.script stage_begin", "deployer.script stage_end",
                "deployer.script kv_write"} <= scripts, scripts  # fmt: skip
        assert any(s.name.startswith("EVALSHA") or s.attributes.get("db.system") == "redis"
                   for s in members)  # fmt: skip
        # every span of the trace hangs off the trace's root (no orphan parent ids)
        ids = {s.span_id for s in members}
        assert all(s.parent == "" or s.parent in ids for s in members), tenant
    assert nodes == {"tw1", "tw2"}, nodes  # the plan ran on both workers

    # the workers' log lines carry the trace id of the tenant they are about
    logs = "".join(w.log.read_text() for w in workers)  # type: ignore[attr-defined]
    some_trace = next(iter(found[tenants[0]["tenantId"]]))
    assert f"trace_id={some_trace}" in logs


def test_a_parked_wait_woken_by_an_ack_stays_in_the_tenants_trace(spawn_worker, receiver):
    """Acks on: each waiting HealthCheck is parked in Redis and re-sent by the parking thread
    when an instance acks; no message header links the re-send to the stage that parked, the
    context does, so the attempts after the wait are in the tenant's one trace."""
    import redis

    from deployer.embedded import EmbeddedRedis
    from deployer.fleet import Behaviour, Fleet
    from deployer.settings import Settings

    with EmbeddedRedis() as server:
        settings = Settings(broker_url=server.url, redis_url=server.url,
                            target_redis_url=server.url)  # fmt: skip
        r = redis.Redis.from_url(server.url, decode_responses=True)
        instances = {"blue-green-gateway": ["127.0.0.1:0"], "ob-service": ["127.0.0.1:0"]}
        with Fleet(instances, server.url, settings.key_prefix, settings.pubsub_topic,
                   settings.verify_path, Behaviour(delay=0.5), acks=True) as fleet:  # fmt: skip
            env = worker_env(
                DEPLOYER_BROKER_URL=server.url,
                DEPLOYER_REDIS_URL=server.url,
                DEPLOYER_TARGET_REDIS_URL=server.url,
                DEPLOYER_INSTANCES=json.dumps(fleet.addresses),
                DEPLOYER_FLEET_ACKS="true",
                DEPLOYER_VERIFY_INTERVAL_SECONDS="100",  # only an ack can wake it in time
                DEPLOYER_VERIFY_MAX_ATTEMPTS="3",
                DEPLOYER_ACK_POLLS_PER_MINUTE="0.1",
                OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                OTEL_BSP_SCHEDULE_DELAY="200",
            )
            spawn_worker("tpark", concurrency=2, env=env)
            plan_id = unique("traced-park")
            tenants = [f"{plan_id}-t{i}" for i in range(2)]
            stages = ["blue-green-gateway", "ob-service"]
            DeployerClient(settings).submit(
                plan(plan_id, [bg_tenant(t, serviceNames=stages) for t in tenants])
            )
            wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
                     timeout=60, interval=0.2, what="plan COMPLETED")  # fmt: skip

            def closed(members: list[Span]) -> bool:
                """Every span's parent is in the trace: a batch exporter may send a child
                before the span it hangs from, so completeness is waited for, not assumed."""
                ids = {s.span_id for s in members}
                return all(s.parent == "" or s.parent in ids for s in members)

            def exported() -> bool:
                found = traces_of(receiver.snapshot(), plan_id)
                return len(found) == 2 and all(
                    len(t) == 1 and sum(s.name == "deployer.stage ob-service"
                                        and s.attributes.get("deployer.outcome") == "done"
                                        for s in next(iter(t.values()))) == 1
                    and closed(next(iter(t.values())))
                    for t in found.values()
                )  # fmt: skip

            wait_for(exported, timeout=20, interval=0.2, what="both traces exported")
            for tenant, traces in traces_of(receiver.snapshot(), plan_id).items():
                ((_, members),) = traces.items()
                ids = {s.span_id for s in members}
                assert all(s.parent == "" or s.parent in ids for s in members), tenant
                for stage in stages:
                    attempts = sorted(
                        (s.attributes["deployer.attempt"], s.attributes["deployer.outcome"])
                        for s in members
                        if s.name == f"deployer.stage {stage}"
                    )
                    # parked at the first attempt, woken by the ack, done after it
                    assert attempts[0] == (0, "parked"), (tenant, stage, attempts)
                    assert attempts[-1][0] >= 1
                    assert attempts[-1][1] in {"proceed", "done"}, (tenant, stage, attempts)
