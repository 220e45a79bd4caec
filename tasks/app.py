"""The Celery application, configured from celeryconfig (itself from DEPLOYER_* env)."""

from __future__ import annotations

from celery import Celery

from deployer import tracing

# Traces when the OTEL_* variables ask (deployer/tracing.py), set up before any task runs or
# any pool process forks; nothing is imported otherwise.
tracing.setup("deployer-worker")

# Messages are built by RedactingAMQP so Flower never shows a secret (tasks/reprs.py).
app = Celery("deployer", amqp="tasks.reprs:RedactingAMQP")
app.config_from_object("celeryconfig")
