"""The Redis URLs of deployer's three roles (broker, state store, target), parsed once.

Each role takes the same forms, so an operator writes one kind of URL everywhere:

- `redis://[user:password@]host:port[/db]`: plain TCP; `user` is an ACL user (Redis 6+);
- `rediss://...`: the same over TLS (CA and client certificate from DEPLOYER_REDIS_TLS_*);
- `unix:///path/to/socket[?db=N]`;
- `sentinel://[user:password@]host:port[/db];sentinel://host:port;...`: Celery's Sentinel
  form. The hosts are sentinels; the master is the one they name `DEPLOYER_SENTINEL_MASTER`.
  Credentials and database are the master's (as kombu reads them: from the first address
  that has them); the sentinels' own credentials are DEPLOYER_SENTINEL_USERNAME/PASSWORD.

A URL that is none of these is refused at start with `REDIS_URL_INVALID` (never guessed at).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

from deployer.errors import Code, SettingsInvalid

Scheme = Literal["redis", "rediss", "unix", "sentinel"]
REDIS_SCHEMES: tuple[str, ...] = ("redis://", "rediss://", "unix://", "sentinel://")
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class RedisUrl:
    """One parsed Redis URL; `sentinels` only for the Sentinel form."""

    scheme: Scheme
    url: str = field(repr=False)  # may hold the password
    sentinels: tuple[tuple[str, int], ...] = ()
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never printed

    @property
    def sentinel(self) -> bool:
        return self.scheme == "sentinel"

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"


def is_redis(url: str) -> bool:
    """Whether `url` names a Redis server (any form), rather than another broker."""
    return url.strip().lower().startswith(REDIS_SCHEMES)


def is_sentinel(url: str) -> bool:
    return url.strip().lower().startswith("sentinel://")


def _invalid(role: str, why: str) -> SettingsInvalid:
    return SettingsInvalid(Code.REDIS_URL_INVALID, f"{role}: {why}")


def parse(url: str, role: str = "Redis URL") -> RedisUrl:
    """The parsed `url`, or SettingsInvalid(REDIS_URL_INVALID) naming `role` and why. The
    message never contains the password."""
    text = url.strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme == "sentinel":
        return _parse_sentinel(text, role)
    if scheme not in ("redis", "rediss", "unix"):
        return _no_scheme(role, scheme)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise _invalid(role, f"not a valid {scheme}:// URL ({exc})") from None
    if scheme == "unix":
        if not parts.path:
            raise _invalid(role, "unix:// needs a socket path (unix:///path/to/redis.sock)")
        return RedisUrl("unix", text)
    if not parts.hostname:
        raise _invalid(role, f"{scheme}:// needs a host (e.g. {scheme}://127.0.0.1:6379/0)")
    db = _db(parts.path, role)
    del port  # validated above (a bad port raises)
    return RedisUrl(
        scheme,  # type: ignore[arg-type]  # one of the three checked above
        text,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _no_scheme(role: str, scheme: str) -> RedisUrl:
    shown = f"{scheme}://" if scheme else "no scheme"
    raise _invalid(
        role, f"{shown} is not a Redis URL: use redis://, rediss://, unix:// or sentinel://"
    )


def _db(path: str, role: str) -> int:
    path = path.strip("/")
    if not path:
        return 0
    if not path.isdigit():
        raise _invalid(role, f"the database must be a number (/0, /1, ...), not /{path}")
    return int(path)


def _parse_sentinel(text: str, role: str) -> RedisUrl:
    """`sentinel://h1:p1[/db];sentinel://h2:p2;...`: every part a sentinel, at least one."""
    sentinels: list[tuple[str, int]] = []
    db: int | None = None
    username: str | None = None
    password: str | None = None
    for raw in text.split(";"):
        part = raw.strip()
        if not part:
            continue
        if not part.lower().startswith("sentinel://"):
            raise _invalid(
                role,
                "every address of a Sentinel URL starts with sentinel:// "
                "(sentinel://HOST:PORT;sentinel://HOST:PORT;...)",
            )
        try:
            parts = urlsplit(part)
            port = parts.port or SENTINEL_PORT
        except ValueError as exc:
            raise _invalid(role, f"a sentinel address is not valid ({exc})") from None
        if not parts.hostname:
            raise _invalid(role, "a sentinel address has no host (sentinel://HOST:PORT)")
        sentinels.append((parts.hostname, port))
        if parts.path.strip("/"):
            this_db = _db(parts.path, role)
            if db is not None and this_db != db:
                raise _invalid(role, f"the sentinel addresses name two databases ({db}, {this_db})")
            db = this_db
        if username is None and parts.username:
            username = unquote(parts.username)
        if password is None and parts.password is not None:
            password = unquote(parts.password)
    if not sentinels:
        raise _invalid(role, "a Sentinel URL needs at least one sentinel://HOST:PORT")
    return RedisUrl(
        "sentinel",
        text,
        sentinels=tuple(sentinels),
        db=db or 0,
        username=username,
        password=password,
    )
