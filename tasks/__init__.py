"""The Celery face of deployer: `celery -A tasks worker` finds `app` here."""

from tasks import (  # noqa: F401  (registers tasks; redacted reprs)
    control,
    reprs,
    stage,
    worker,  # noqa: F401  (the reconciler bootstep)
)
from tasks.app import app

__all__ = ["app"]
