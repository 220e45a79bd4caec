"""Where the archive lives and how it is opened: the engine, and the schema brought up to
date (Alembic, migrations shipped in this package) the first time a process opens it.

`DEPLOYER_ARCHIVE_URL` is any SQLAlchemy URL; PostgreSQL through psycopg 3
(`postgresql+psycopg://user@host/db`) in production. Unset, the archive is an embedded
SQLite file under `$XDG_DATA_HOME/deployer/` (`~/.local/share/deployer/` by default), so a
demo or a laptop needs no database server.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError, ProgrammingError

from deployer.settings import Settings, redact_url

#: Alembic's script location, as a package resource (works from an installed wheel).
SCRIPT_LOCATION = "deployer.archive:migrations"
#: A constant key for PostgreSQL's advisory lock: one process migrates at a time.
_PG_LOCK_KEY = 0x6465706C6F79  # "deploy"

#: The newest revision in migrations/versions (a test checks it is Alembic's head): a process
#: that finds the schema there skips Alembic entirely (its import costs a CLI ~0.3 s).
HEAD = "0001"

_ready: set[str] = set()
_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def default_url() -> str:
    """The embedded SQLite file: `$XDG_DATA_HOME/deployer/archive.sqlite3`."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"sqlite:///{Path(base) / 'deployer' / 'archive.sqlite3'}"


def archive_url(settings: Settings) -> str:
    return settings.archive_url or default_url()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: readers (the CLI, the web API) never wait for the worker archiving; a writer
    # waits for another instead of failing at once.
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def engine_for(url: str) -> Engine:
    """One engine per URL per process, with its schema migrated to the newest revision."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create(url)
            _engines[url] = engine
        if url not in _ready:
            migrate(engine)
            _ready.add(url)
        return engine


def _create(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (a no-op when it is there). Concurrent first
    uses are safe: PostgreSQL serialises them on an advisory lock, SQLite on its write lock."""
    with engine.connect() as conn:
        if current_revision(conn) == HEAD:  # the usual case: no Alembic import at all
            return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
        try:
            if _current(conn) != _head(cfg):
                cfg.attributes["connection"] = conn
                try:
                    command.upgrade(cfg, "head")
                    conn.commit()
                except OperationalError:
                    # SQLite: another process created the tables first; fine if it finished
                    conn.rollback()
                    if _current(conn) != _head(cfg):
                        raise
        finally:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()


def current_revision(conn: Connection) -> str | None:
    """The schema's revision as Alembic recorded it (None: no schema yet), read directly."""
    try:
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    except (OperationalError, ProgrammingError):
        conn.rollback()
        return None
    return str(row[0]) if row else None


def _current(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _head(cfg: Any) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(cfg).get_current_head()


def describe(url: str) -> str:
    """The URL with any password hidden, for logs and `deployer archive`."""
    return redact_url(url)


def dispose_all() -> None:
    """Close every pooled connection (tests, and a worker shutting down)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _ready.clear()
