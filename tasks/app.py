"""The Celery application, configured from celeryconfig (itself from DEPLOYER_* env)."""

from __future__ import annotations

from celery import Celery

# Messages are built by RedactingAMQP so Flower never shows a secret (tasks/reprs.py).
app = Celery("deployer", amqp="tasks.reprs:RedactingAMQP")
app.config_from_object("celeryconfig")
