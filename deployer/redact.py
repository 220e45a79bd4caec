"""Secret redaction for anything shown to people: Flower args, logs, events, status.

Only an explicit list of field names is redacted (compared case-insensitively, ignoring
`_` and `-`, so `apiKey`, `api_key` and `API-KEY` are one name). A field that merely ends
in "key" (`deployUnitKey`, the endpoint `key`) is data, not a secret, and stays visible.

Text that is not JSON (a message body that did not parse, a log line) also hides secrets
without a field name: `mask_patterns` masks what has the shape of one (an Authorization
scheme and its credentials, a password in a URL, a JWT, a private key, well-known token
formats).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

MASK = "***"

#: Field names whose values are never shown (normalised: lower case, no `_` or `-`).
SECRET_FIELDS: frozenset[str] = frozenset(
    {"password", "secret", "token", "apikey", "authorization", "credentials"}
)


#: Names up to this long are normalised once and remembered (field names repeat in every
#: message; a longer, unusual key is normalised each time, not kept in memory).
_CACHED_NAME = 64


def normalise(name: str) -> str:
    if len(name) <= _CACHED_NAME:
        return _normalise_cached(name)
    return _normalise(name)


def _normalise(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


#: Redacting a tenant's config normalised each of its ~40 keys, message after message.
_normalise_cached = lru_cache(maxsize=4096)(_normalise)


def is_secret(name: object, fields: Iterable[str] = SECRET_FIELDS) -> bool:
    return isinstance(name, str) and normalise(name) in _names(fields)


def _names(fields: Iterable[str]) -> frozenset[str]:
    if fields is SECRET_FIELDS:
        return _SECRET_NAMES
    return frozenset(normalise(f) for f in fields)


_SECRET_NAMES = frozenset(_normalise(f) for f in SECRET_FIELDS)
#: Values returned as they are (checked by exact type first: the ABC check for Mapping
#: is the slow one, and most values of a message are scalars).
_SCALARS = frozenset({int, float, bool, type(None)})


def redact(obj: Any, fields: Iterable[str] = SECRET_FIELDS) -> Any:
    """A copy of `obj` (JSON-like: dicts, lists, tuples, scalars) with secret values masked.

    A string holding a JSON object or array (a plan sent as a JSON string) is parsed,
    redacted and dumped again, so a secret cannot hide inside a string.
    """
    return _redact(obj, _names(fields), depth=0)


def _redact(obj: Any, names: frozenset[str], depth: int) -> Any:
    if depth > 64:  # deeper than any plan: show nothing rather than recurse forever
        return MASK
    kind = type(obj)
    if kind in _SCALARS:
        return obj
    if kind is dict or (kind is not str and isinstance(obj, Mapping)):
        return {
            k: MASK
            if isinstance(k, str) and normalise(k) in names
            else _redact(v, names, depth + 1)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        items = [_redact(v, names, depth + 1) for v in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    if isinstance(obj, str) and obj[:1] in ("{", "["):
        try:
            parsed = json.loads(obj)
        except RecursionError:  # too deep to look into: hidden whole (may hold secrets)
            return MASK
        except ValueError:
            return obj
        return json.dumps(_redact(parsed, names, depth + 1), separators=(",", ":"))
    return obj


_SCHEMES = r"(?:Bearer|Basic|Digest|Token|Negotiate|Bot)"
#: Secrets recognised by their shape in free text; group `keep` (when present) stays.
SECRET_PATTERNS: tuple[re.Pattern[str], ...] = (
    # an HTTP Authorization scheme and its credentials: `Bearer eyJ...`, `Basic dXNlcjpw...`
    re.compile(
        rf"(?P<keep>\b{_SCHEMES}\s+)(?!{_SCHEMES}\b)[A-Za-z0-9._~+/=:\-]{{4,}}", re.IGNORECASE
    ),
    # user:password@ in a URL (redis://:pw@host, amqp://user:pw@host)
    re.compile(r"(?P<keep>\b[a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+(?=@)", re.IGNORECASE),
    # a JSON Web Token
    re.compile(r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"),
    # a PEM private key, to its end or the end of the text
    re.compile(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:.*?-----END [A-Z ]*PRIVATE KEY-----|.*)", re.S
    ),
    # GitHub, Slack and AWS access key formats
    re.compile(
        r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|xox[abposr]-[A-Za-z0-9\-]{10,}|AKIA[0-9A-Z]{16})\b"
    ),
)


def mask_patterns(text: str) -> str:
    """`text` with every secret recognised by its shape masked (SECRET_PATTERNS)."""
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.groupdict().get("keep") or "") + MASK, text)
    return text
