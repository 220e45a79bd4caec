"""Operations endpoints: `/healthz` (Redis reachable) and `/metrics` (the Prometheus series
of `deployer metrics`, so one port serves the API, the dashboard and the scrape)."""

from __future__ import annotations

import threading

import redis
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from deployer.errors import Code
from deployer.metrics import registry_from_settings
from deployer.public import Health, Problem, conform
from deployer.web.answers import RedactedJSON, error
from deployer.web.deps import can_read, store

router = APIRouter(tags=["operations"])
_scrape = threading.Lock()  # one scrape at a time: a second one would only repeat the reads


@router.get(
    "/healthz",
    summary="Liveness and readiness: Redis answers PING",
    response_model=Health,
    responses={503: {"model": Problem, "description": "REDIS_UNREACHABLE"}},
)
def healthz(request: Request) -> RedactedJSON:
    try:
        store(request).r.ping()
    except redis.RedisError as exc:
        return error(503, Code.REDIS_UNREACHABLE, f"state Redis unreachable: {type(exc).__name__}")
    answer = {"ok": True, "code": Code.OK, "message": "redis reachable"}
    return RedactedJSON(conform(Health, answer))


def _registry(request: Request) -> CollectorRegistry:
    registry: CollectorRegistry | None = getattr(request.app.state, "metrics", None)
    if registry is None:
        registry = registry_from_settings(store(request).r)
        request.app.state.metrics = registry
    return registry


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    dependencies=[Depends(can_read)],
    response_class=Response,
    responses={
        200: {
            "description": "The Prometheus text exposition format",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        },
        401: {"model": Problem, "description": "UNAUTHORIZED: a token is required"},
    },
)
def metrics(request: Request) -> Response:
    with _scrape:
        body = generate_latest(_registry(request))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
