"""The Celery face of deployer: `celery -A tasks worker` finds `app` here."""

from tasks.app import app
from tasks import control, stage  # noqa: F401  (registers the tasks)

__all__ = ["app"]
