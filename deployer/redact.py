"""Secret redaction for anything shown to people: Flower args, logs, events, status.

Only an explicit list of field names is redacted (compared case-insensitively, ignoring
`_` and `-`, so `apiKey`, `api_key` and `API-KEY` are one name). A field that merely ends
in "key" (`deployUnitKey`, the endpoint `key`) is data, not a secret, and stays visible.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"

#: Field names whose values are never shown (normalised: lower case, no `_` or `-`).
SECRET_FIELDS: frozenset[str] = frozenset(
    {"password", "secret", "token", "apikey", "authorization", "credentials"}
)


def normalise(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def is_secret(name: object, fields: Iterable[str] = SECRET_FIELDS) -> bool:
    return isinstance(name, str) and normalise(name) in {normalise(f) for f in fields}


def redact(obj: Any, fields: Iterable[str] = SECRET_FIELDS) -> Any:
    """A copy of `obj` (JSON-like: dicts, lists, tuples, scalars) with secret values masked.

    A string holding a JSON object or array (a plan sent as a JSON string) is parsed,
    redacted and dumped again, so a secret cannot hide inside a string.
    """
    names = frozenset(normalise(f) for f in fields)
    return _redact(obj, names, depth=0)


def _redact(obj: Any, names: frozenset[str], depth: int) -> Any:
    if depth > 64:  # deeper than any plan: show nothing rather than recurse forever
        return MASK
    if isinstance(obj, Mapping):
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
