"""Celery's own (lowercase) settings, built from deployer.settings (env DEPLOYER_*)."""

from __future__ import annotations

from kombu.entity import Exchange, Queue

from deployer import brokers, tracing
from deployer.errors import SettingsInvalid
from deployer.settings import get_settings

CONTROL_QUEUE = "deployer.control"
STAGES_QUEUE = "deployer.stages"

try:
    _settings = get_settings()
except SettingsInvalid as _exc:  # one line, not a traceback, and the worker does not start
    raise SystemExit(f"deployer: {_exc.line()}") from None

broker_url = _settings.broker_url
_broker_scheme = brokers.scheme(broker_url)
if _broker_scheme in ("redis", "rediss", "unix"):
    # kombu's Redis transport, guarded where it parses messages (tasks/transport.py): a
    # malformed envelope is dead-lettered instead of stopping the worker.
    broker_transport = "tasks.transport:GuardedTransport"
elif _broker_scheme == "sentinel":
    # The same guard over kombu's Sentinel transport (the master the sentinels name).
    broker_transport = "tasks.transport:GuardedSentinelTransport"
elif broker_url.startswith(("amqp://", "pyamqp://")):
    # py-amqp, guarded where a delivery's frames are decoded (tasks/amqp.py): a message whose
    # properties or headers cannot be decoded is rejected and dead-lettered, not fatal.
    broker_transport = "tasks.amqp:GuardedTransport"
elif broker_url.startswith("amqps://"):
    broker_transport = "tasks.amqp:GuardedSSLTransport"
broker_connection_retry_on_startup = True
# Transport options (visibility timeout; Sentinel's master; RabbitMQ confirms), TLS, the
# publish retry policy and the result backend: deployer/brokers.py, shared with the client.
_conf = brokers.celery_conf(_settings)
broker_transport_options: dict[str, object] = _conf["broker_transport_options"]
task_publish_retry = _conf["task_publish_retry"]
task_publish_retry_policy = _conf["task_publish_retry_policy"]
result_backend = _conf["result_backend"]
if "broker_use_ssl" in _conf:
    broker_use_ssl = _conf["broker_use_ssl"]
if "result_backend_transport_options" in _conf:
    result_backend_transport_options = _conf["result_backend_transport_options"]
if "redis_backend_use_ssl" in _conf:
    redis_backend_use_ssl = _conf["redis_backend_use_ssl"]
result_expires = 86400

# JSON only: a pickle message is refused, never executed.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# Stage results are never read (state lives in our store); control results are kept
# per task (ignore_result=False there) for callers that configured a result backend.
task_ignore_result = True
task_store_errors_even_if_ignored = False

# At-least-once: ack after the stage ran; a lost worker's stage is redelivered, and the
# lease token makes a stale duplicate harmless.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = _settings.worker_prefetch_multiplier
worker_max_memory_per_child = _settings.worker_max_memory_per_child_kb or None

# Plain durable queues with no arguments, so any client (celery-node, kombu) can declare them.
task_queues = (
    Queue(CONTROL_QUEUE, Exchange(CONTROL_QUEUE, type="direct"), routing_key=CONTROL_QUEUE),
    Queue(STAGES_QUEUE, Exchange(STAGES_QUEUE, type="direct"), routing_key=STAGES_QUEUE),
)
task_default_queue = CONTROL_QUEUE
task_default_exchange = CONTROL_QUEUE
task_default_routing_key = CONTROL_QUEUE
# Queues are routed here, not by a `queue=` task attribute (deprecated, no effect in Celery 6):
# control tasks go to the default queue, stages to deployer.stages.
task_routes = {"deployer.run_stage": {"queue": STAGES_QUEUE, "routing_key": STAGES_QUEUE}}

# Operators watch in Flower: events on.
worker_send_task_events = True
task_send_sent_event = _settings.task_sent_events
worker_hijack_root_logger = False
if tracing.wanted():
    # log lines carry the trace and span of the work they are about (deployer/tracing.py)
    worker_log_format = (
        "[%(asctime)s: %(levelname)s/%(processName)s] trace_id=%(otelTraceID)s "
        "span_id=%(otelSpanID)s %(message)s"
    )
    worker_task_log_format = (
        "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s] "
        "trace_id=%(otelTraceID)s span_id=%(otelSpanID)s %(message)s"
    )

# A malformed message is logged and acknowledged instead of killing the worker (tasks/guard.py).
worker_consumer = "tasks.guard:GuardedConsumer"

# Graceful shutdown: a warm shutdown first gives running stages this long to finish
# (Kubernetes terminationGracePeriodSeconds must exceed it; deploy/).
worker_soft_shutdown_timeout = _settings.worker_soft_shutdown_seconds
worker_enable_soft_shutdown_on_idle = True
