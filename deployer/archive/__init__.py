"""The durable deployment history: finished plans, their tasks and events in SQL.

`Archive` (store.py) reads and writes it; `schema.py` is its tables; `db.py` opens it from
`DEPLOYER_ARCHIVE_URL` (embedded SQLite by default, PostgreSQL in production) and runs the
Alembic migrations shipped in `migrations/` on first use. deployer/retention.py moves
finished plans from Redis into it.
"""

from __future__ import annotations

from deployer.archive.store import Archive

__all__ = ["Archive"]
