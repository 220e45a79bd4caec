"""The Celery face of deployer: `celery -A tasks worker` finds `app` here."""

from tasks import control, stage  # noqa: F401  (registers the tasks)
from tasks.app import app

__all__ = ["app"]
