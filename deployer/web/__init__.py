"""`deployer serve`: the HTTP API (/api/v1, OpenAPI) and the live dashboard, one process.

The API and the pages call the same read models (deployer/views.py), the same Planner and
the same Controller as the CLI and the Celery tasks; workers stay the only executors.
"""

from __future__ import annotations

from deployer.web.app import create_app

__all__ = ["create_app"]
