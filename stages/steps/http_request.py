"""HttpRequest: one call to a service (e.g. portal notify, ASBC traffic switch).

Each call is over within its timeout (wall clock, body included; stages/probe.py).
The host comes from discovery (RANDOM: one instance per attempt, so a retry may land on
another; ALL: every instance must accept). Transport errors, 429 and 5xx are "not yet"
and retried at the verify interval; any other answer is definite: accepted when the
status and the expected JSON values match, else the step fails naming what came back.
"""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

from deployer.context import TaskRuntimeContext
from deployer.errors import StepFailed
from deployer.models import StepSpec
from stages.base import StepEnv
from stages.discovery import Selection, instances_for
from stages.probe import Answer, extract, gather, request
from stages.steps.health_check import url_path
from stages.types import Done, Step, StepParams, StepResult, Wait

METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH"}
BODY_SNIPPET = 300


def transient(answer: Answer) -> bool:
    return answer.error is not None or answer.status == 429 or (answer.status or 0) >= 500


class HttpRequestParams(StepParams):
    #: Whose instance is called (discovery; never a host from a config).
    service: str
    method: str = "POST"
    #: An absolute path (`{tenantId}` is replaced).
    path: str
    headers: dict[str, str] | None = None
    #: The JSON body (any JSON).
    body: Any = None
    #: A body field set to the current epoch milliseconds (a string) on every call.
    timestamp_field: str | None = None
    #: Accepted statuses; default any 2xx.
    expect_status: list[int] | None = None
    #: JSON paths and the values they must hold, e.g. `{"$.code": 0}`.
    expect_json: dict[str, Any] | None = None
    #: JSON paths that must be empty, e.g. `["$.data.failList"]`.
    expect_empty: list[str] | None = None
    selection: Selection | None = None
    #: Seconds; default DEPLOYER_HTTP_TIMEOUT_SECONDS.
    timeout: float | None = None
    #: Default DEPLOYER_VERIFY_MAX_ATTEMPTS.
    max_attempts: int | None = None
    namespace: str | None = None


def verdict(answer: Answer, params: HttpRequestParams) -> str | None:
    """None when the answer is what the step expects; else why not."""
    statuses = params.expect_status
    if (statuses and answer.status not in statuses) or (not statuses and not answer.ok):
        return f"HTTP {answer.status}: {_snippet(answer.body)}"
    for path, want in (params.expect_json or {}).items():
        got = extract(answer.body, path)
        if got != want:
            return f"{path} = {got!r}, expected {want!r}: {_snippet(answer.body)}"
    for path in params.expect_empty or []:
        got = extract(answer.body, path)
        if got:
            return f"{path} not empty: {_snippet(got)}"
    return None


def _snippet(body: Any) -> str:
    text = json.dumps(body, ensure_ascii=False) if body is not None else "(no JSON body)"
    return text if len(text) <= BODY_SNIPPET else text[:BODY_SNIPPET] + "..."


class HttpRequest(Step[HttpRequestParams]):
    type_name = "http-request"
    Params = HttpRequestParams
    calls_instances = True

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        p, s = self.parse(step), env.settings
        service = p.service
        method = p.method.upper()
        if method not in METHODS:
            raise StepFailed(f"unsupported method {method}")
        path = url_path(p.path, ctx.tenant_id)
        timeout = float(p.timeout or s.http_timeout_seconds)
        body = dict(p.body) if isinstance(p.body, dict) else p.body
        if p.timestamp_field and isinstance(body, dict):
            body[p.timestamp_field] = str(int(time.time() * 1000))
        kwargs: dict[str, Any] = {"headers": dict(p.headers or {})}
        if body is not None and method != "GET":
            kwargs["json"] = body
        done = set(ctx.scratch.get("done", []))
        targets = [
            i
            for i in instances_for(env.discovery, service, p.namespace, p.selection or "RANDOM")
            if i not in done
        ]
        scheme = s.schemes.get(service, "http")
        calls = {
            i: partial(
                request,
                env.http,
                method,
                f"{scheme}://{i}{path}",
                i,
                timeout,
                max_bytes=s.http_max_response_bytes,
                breaker_seconds=s.probe_breaker_seconds,
                **kwargs,
            )
            for i in targets
        }
        retry: dict[str, str] = {}
        for inst, answer in gather(calls).items():
            if transient(answer):
                retry[inst] = answer.describe()
                continue
            why = verdict(answer, p)
            if why is not None:
                raise StepFailed(f"{service} {inst} {method} {path} answered {why}")
            done.add(inst)
        if not retry:
            return Done()
        attempt = ctx.attempt + 1
        failures = "; ".join(f"{i} answered {w}" for i, w in sorted(retry.items()))
        if attempt >= int(p.max_attempts or s.verify_max_attempts):
            raise StepFailed(
                f"{service} {method} {path} failed after {attempt} attempts: {failures}"
            )
        return Wait(
            s.verify_interval_seconds,
            {"progress": f"{service}: {failures} (attempt {attempt})", "done": sorted(done)},
        )
