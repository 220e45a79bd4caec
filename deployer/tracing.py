"""Traces with OpenTelemetry: one trace per tenant run, off unless the OTEL_* variables ask.

On when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`, or both, comma
separated) or an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
`OTEL_EXPORTER_OTLP_ENDPOINT`, OTLP over HTTP/protobuf); `OTEL_SDK_DISABLED=true` or
`OTEL_TRACES_EXPORTER=none` keep it off. Every other standard variable (service name,
resource attributes, sampler, batch processor, headers, timeouts) is read by the SDK itself.
When off, nothing of OpenTelemetry is imported and every helper here is a no-op.

A tenant run's trace: its root span (`deployer.submit` for a forward run, `deployer.retry`,
`deployer.rollback`) is made when the run's context is created, and the context carries it
(`additionalData.trace`: the W3C `traceparent` and the run's wave; docs/contracts.md §4), so
every stage attempt joins it wherever it runs — another worker, a re-send after a poll, a
parked wait woken by an ack, a re-drive after a lost worker — even where no message header
survived. Inside a stage: `deployer.stage <name>`, one `deployer.step <name>` per step, the
instance HTTP calls (httpx instrumentation) and `deployer.script <name>` per Lua script (with
the redis instrumentation's command span inside). Messages between them are Celery's
instrumentation's spans, in the same trace: stage messages are sent under the run's context.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deployer.context import TaskRuntimeContext

log = logging.getLogger("deployer.tracing")

#: The `additionalData` key of a run's trace (docs/contracts.md §4).
TRACE_KEY = "trace"
#: Root spans kept: ours, and Celery's for deployer tasks sent by a traced client. Any other
#: span without a parent (the broker's own polling, a health probe) is dropped.
ROOT_PREFIXES = ("deployer.", "run/deployer.", "apply_async/deployer.")

_state: dict[str, Any] = {}
_lock = threading.Lock()


def wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces (cheap: no import)."""
    e = os.environ if env is None else env
    if e.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = e.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters == "none":
        return False
    endpoint = e.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or e.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return bool(exporters) or bool(endpoint)


def enabled() -> bool:
    """Tracing is set up in this process (`setup` ran and found it wanted)."""
    return bool(_state.get("tracer"))


def setup(service: str = "deployer") -> bool:
    """Start tracing in this process if the environment asks; idempotent. Returns whether on.

    `service` is the default `service.name` (OTEL_SERVICE_NAME wins)."""
    if not wanted():
        return False
    with _lock:
        if _state.get("tracer") is not None:
            return True
        try:
            _state["tracer"] = _install(service)
        except Exception:  # tracing must never stop the process it observes
            log.exception("tracing could not start; continuing without it")
            _state["tracer"] = None
            _zero_ids_in_logs()
            return False
    return True


def _install(service: str) -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    resource = resource.merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource, sampler=_sampler())
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    for name in filter(None, names):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(_per_process(OTLPSpanExporter)))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(_per_process(ConsoleSpanExporter)))
        else:
            log.warning("OTEL_TRACES_EXPORTER %r is not supported (otlp, console)", name)
    trace.set_tracer_provider(provider)
    _instrument()
    _correlate_logs()
    return trace.get_tracer("deployer")


def _per_process(make: Any) -> Any:
    """An exporter made again in a process forked after it was made (a Celery pool process):
    the SDK restarts its batch thread after a fork, but an exporter's HTTP connections would
    be the parent's sockets."""
    from opentelemetry.sdk.trace.export import SpanExporter

    class PerProcess(SpanExporter):
        def __init__(self) -> None:
            self._pid, self._inner = os.getpid(), make()

        def _own(self) -> Any:
            if self._pid != os.getpid():
                self._pid, self._inner = os.getpid(), make()
            return self._inner

        def export(self, spans: Any) -> Any:
            return self._own().export(spans)

        def shutdown(self) -> None:
            self._own().shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(self._own().force_flush(timeout_millis))

    return PerProcess()


def _sampler() -> Any:
    from opentelemetry.sdk.trace import sampling

    base = sampling._get_from_env_or_default()  # noqa: SLF001 - OTEL_TRACES_SAMPLER as the SDK reads it

    class DeployerRoots(sampling.Sampler):
        """Root spans of deployer's own work only; the rest follows its parent."""

        def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any,
                          **kwargs: Any) -> Any:  # fmt: skip
            from opentelemetry import trace as api

            parent = api.get_current_span(parent_context).get_span_context()
            if parent.is_valid:
                return base.should_sample(parent_context, trace_id, name, *args, **kwargs)
            if not name.startswith(ROOT_PREFIXES):
                return sampling.SamplingResult(sampling.Decision.DROP)
            return base.should_sample(parent_context, trace_id, name, *args, **kwargs)

        def get_description(self) -> str:
            return f"DeployerRoots({base.get_description()})"

    return DeployerRoots()


def _instrument() -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    celery = CeleryInstrumentor()
    for instrumentor in (celery, HTTPXClientInstrumentor(), RedisInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def _correlate_logs() -> None:
    """Every log record gets `otelTraceID` and `otelSpanID` (zeros outside a span): the
    worker's log formats print them (celeryconfig.py)."""
    from opentelemetry import trace

    previous = logging.getLogRecordFactory()
    if getattr(previous, "_deployer_trace", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        ctx = trace.get_current_span().get_span_context()
        record.otelTraceID = format(ctx.trace_id, "032x")
        record.otelSpanID = format(ctx.span_id, "016x")
        return record

    factory._deployer_trace = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _zero_ids_in_logs() -> None:
    """The log formats name the ids (celeryconfig.py): without tracing they read as zeros."""
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.otelTraceID, record.otelSpanID = "0" * 32, "0" * 16
        return record

    logging.setLogRecordFactory(factory)


# ---- a tenant run's trace ---------------------------------------------------------------


def attributes(ctx: TaskRuntimeContext, **extra: Any) -> dict[str, Any]:
    """The attributes every span of a run carries."""
    out: dict[str, Any] = {
        "deployer.plan_id": ctx.plan_id,
        "deployer.tenant_id": ctx.tenant_id,
        "deployer.task_id": ctx.task_id,
        "deployer.run_kind": ctx.run_kind.value,
    }
    if ctx.plan_version is not None:
        out["deployer.plan_version"] = ctx.plan_version
    wave = _trace_of(ctx).get("wave")
    if isinstance(wave, int):
        out["deployer.wave"] = wave
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def _trace_of(ctx: TaskRuntimeContext) -> dict[str, Any]:
    value = ctx.additional_data.get(TRACE_KEY)
    return value if isinstance(value, dict) else {}


def start_run(ctx: TaskRuntimeContext, wave: int | None = None) -> TaskRuntimeContext:
    """The run's root span (ended at once: its children are the stages, later, anywhere);
    returns the context carrying it. Unchanged when tracing is off."""
    tracer = _state.get("tracer")
    if not tracer:
        return ctx
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    kind = ctx.run_kind.value
    name = "deployer.submit" if kind == "FORWARD" else f"deployer.{kind.lower()}"
    current = trace.get_current_span()
    links = [trace.Link(current.get_span_context())] if current.get_span_context().is_valid else []
    trace_data: dict[str, Any] = {} if wave is None else {"wave": wave}
    staged = ctx.with_additional(TRACE_KEY, trace_data)
    span = tracer.start_span(
        name,
        context=trace.set_span_in_context(trace.INVALID_SPAN),  # a new trace per run
        attributes=attributes(
            staged, **{"deployer.run_id": ctx.run_id, "deployer.stage_count": ctx.stage_count}
        ),  # fmt: skip
        links=links,
    )
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
    span.end()
    if "traceparent" not in carrier:  # not sampled: nothing to carry
        return ctx
    return ctx.with_additional(TRACE_KEY, {"traceparent": carrier["traceparent"], **trace_data})


def _parent(ctx: TaskRuntimeContext) -> Any:
    """The context a span of this run starts in: the current one when it is already in the
    run's trace (a Celery span of this message), else the run's root from its context."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    traceparent = _trace_of(ctx).get("traceparent")
    if not isinstance(traceparent, str):
        return None
    carried = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    mine = trace.get_current_span(carried).get_span_context()
    current = trace.get_current_span().get_span_context()
    if current.is_valid and current.trace_id == mine.trace_id:
        return None  # the current context
    return carried


def run_context(ctx: TaskRuntimeContext) -> contextlib.AbstractContextManager[Any]:
    """Make the run's trace current (around sending its messages: Celery's instrumentation
    then puts the publish and the receiving task's span in the run's trace)."""
    if not _state.get("tracer"):
        return _OFF
    return _run_context(ctx)


@contextlib.contextmanager
def _run_context(ctx: TaskRuntimeContext) -> Iterator[None]:
    from opentelemetry import context as otel_context

    parent = _parent(ctx)
    if parent is None:
        yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


#: What `span` and `run_context` answer when tracing is off: nothing allocated per call.
_OFF: contextlib.AbstractContextManager[Any] = contextlib.nullcontext(None)


def span(
    name: str, ctx: TaskRuntimeContext | None = None, /, **attrs: Any
) -> contextlib.AbstractContextManager[Any]:
    """A span of a run (in its trace) or, without a context, of the current trace; yields
    the span (None when tracing is off) to set attributes on."""
    if not _state.get("tracer"):
        return _OFF
    return _span(name, ctx, attrs)


@contextlib.contextmanager
def _span(name: str, ctx: TaskRuntimeContext | None, attrs: dict[str, Any]) -> Iterator[Any]:
    tracer = _state["tracer"]
    parent = _parent(ctx) if ctx is not None else None
    base = attributes(ctx, **attrs) if ctx is not None else {k: v for k, v in attrs.items()
                                                               if v is not None}  # fmt: skip
    with tracer.start_as_current_span(name, context=parent, attributes=base) as current:
        yield current


def set_attributes(current: Any, **attrs: Any) -> None:
    if current is not None:
        current.set_attributes({k: v for k, v in attrs.items() if v is not None})


def add_event(current: Any, name: str, **attrs: Any) -> None:
    if current is not None:
        current.add_event(name, {k: v for k, v in attrs.items() if v is not None})


def flush(timeout_ms: int = 5000) -> None:
    """Export what is buffered (before a process ends on purpose)."""
    if not _state.get("tracer"):
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    force = getattr(provider, "force_flush", None)
    if force is not None:
        force(timeout_ms)
