"""The Celery application, configured from celeryconfig (itself from DEPLOYER_* env)."""

from __future__ import annotations

from celery import Celery

app = Celery("deployer")
app.config_from_object("celeryconfig")
