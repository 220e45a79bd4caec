"""The Celery face of deployer: `celery -A tasks worker` finds `app` here."""

from tasks import control, signals, stage  # noqa: F401  (registers tasks; redacted reprs)
from tasks import worker  # noqa: F401  (the reconciler bootstep)
from tasks.app import app

__all__ = ["app"]
