"""deployer: per-tenant configuration rollouts as Celery chains of stage tasks."""

__version__ = "0.1.0"
