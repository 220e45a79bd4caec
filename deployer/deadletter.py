"""Dead letters: broker messages a worker refused, kept (bounded) so they can be inspected.

A message that cannot be parsed, is too large or too deep, names a task deployer does not
own or carries headers of the wrong type is acknowledged (so it can never loop or crash a
worker again) and appended to the stream `deployer:dead-letters` with why, where it came
from and the first bytes of it with secrets masked. The stream is capped by count
(`MAXLEN ~`) and every field by length, so a flood of garbage costs bounded memory.

Everything here is pure (no Celery, no kombu) except `DeadLetters.record`, which writes
through deployer/state/deadletters.py (the stream and its count), and `read`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import redis

from deployer.jsonshape import json_depth_exceeds
from deployer.redact import MASK, SECRET_FIELDS, mask_patterns, normalise
from deployer.state import deadletters
from deployer.text import encodable

log = logging.getLogger("deployer.guard")

HEAD_BYTES = 512
#: How much is read to build a head: redaction must see a whole secret value to mask it.
HEAD_WINDOW = 8192
#: Where ids are looked for in a message too large or too broken to parse.
_PEEK_HEAD, _PEEK_TAIL = 8192, 65536
_FIELD_MAX = 200

# ---- redaction of text that may not parse (truncated, escaped, not JSON at all) ----------

#: A key (optionally quoted, the quote possibly escaped when the JSON is inside a string),
#: then `:` or `=`, then its value: a string up to its matching quote, or a bare token.
_PAIR = re.compile(
    r"(?P<kq>\\*\"|')?(?P<key>[A-Za-z][A-Za-z0-9_\-]{0,63})(?P=kq)?\s*[:=]\s*"
    r"(?:(?P<vq>\\*\"|')(?P<sval>(?:(?!(?<!\\)(?P=vq)).)*)(?P<end>(?<!\\)(?P=vq))?"
    r"|(?P<bare>[^,&{}\[\]\s\"']*))",
    re.S,
)
#: A long base64 run (a Redis envelope's body): shown as its length, never decoded here.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")
_SECRET_NAMES = frozenset(normalise(f) for f in SECRET_FIELDS)


def _close(text: str, start: int) -> int:
    """The index after the bracket closing the one at `start` (brackets counted plainly,
    so a bracket inside a string may end it early: masking more is the safe side)."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def redact_text(text: str) -> str:
    """`text` with the value of every secret-named field masked and base64 runs elided.

    Works on text that is not (or no longer) JSON: a head cut mid-value, a plan escaped
    inside a JSON string (the value of a field that is not secret is searched too), Python
    reprs, `password=...` pairs. A value cut off by the end of `text` is masked to the end.
    """
    out: list[str] = []
    pos = 0
    while (m := _PAIR.search(text, pos)) is not None:
        quote = m.group("vq")
        value_at = m.start("vq") if quote is not None else m.start("bare")
        out.append(text[pos:value_at])
        if normalise(m.group("key")) not in _SECRET_NAMES:
            pos = value_at + len(quote or "")  # look inside the value too
            out.append(quote or "")
        elif quote is not None:
            out.append(quote + MASK + (quote if m.group("end") is not None else ""))
            pos = m.end()
        elif normalise(m.group("key")) == "authorization":  # `Authorization: Bearer x`
            out.append(MASK)
            newline = text.find("\n", value_at)
            pos = len(text) if newline < 0 else newline
        elif m.group("bare") or value_at >= len(text) or text[value_at] not in "[{":
            out.append(MASK)
            pos = m.end()
        else:
            out.append(MASK)
            pos = _close(text, value_at)
    out.append(text[pos:])
    masked = mask_patterns("".join(out))  # secrets without a field name: `Bearer x`, ...
    return _BASE64_RUN.sub(lambda b: f"<base64 {len(b.group(0))} chars>", masked)


def as_text(data: bytes | bytearray | memoryview | str | None, limit: int) -> str:
    """The first `limit` bytes of `data` as text (invalid UTF-8 replaced)."""
    if data is None:
        return ""
    if isinstance(data, str):
        return data[:limit]
    return bytes(data[:limit]).decode("utf-8", errors="replace")


def head(data: bytes | bytearray | memoryview | str | None, size: int = HEAD_BYTES) -> str:
    """The first `size` characters of `data`, secrets masked (redacted before cutting, so
    a value that starts inside the head is masked even if it ends after it)."""
    return redact_text(as_text(data, HEAD_WINDOW))[:size]


# ---- ids of a message that was not parsed ---------------------------------------------

_ID_VALUE = r"\\*\"(?P<v>[^\"\\]{1,200})\\*\""


def _peek_field(name: str, text: str) -> str:
    m = re.search(r"\\*\"" + re.escape(name) + r"\\*\"\s*:\s*" + _ID_VALUE, text)
    return m.group("v") if m else ""


def _body_head_from_envelope(text: str) -> str:
    """The decoded start of a Redis envelope's base64 body, if one can be seen in `text`."""
    m = re.search(r'"body"\s*:\s*"(?P<b>[A-Za-z0-9+/]{4,})', text)
    if not m:
        return ""
    chunk = m.group("b")[:_PEEK_HEAD]
    chunk = chunk[: len(chunk) - len(chunk) % 4]
    try:
        return base64.b64decode(chunk).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return ""


_PLAN_ID = re.compile(
    r"\\*\"planId\\*\"\s*:\s*(?:\\*\"(?P<s>[A-Za-z0-9][A-Za-z0-9_.\-]{0,127})\\*\"|(?P<n>\d{1,30}))"
)


def peek_plan_id(text: str) -> str:
    """The planId written near the start of `text` (a plan, or a message body holding a
    plan, possibly as an escaped JSON string), or "" when none can be read."""
    m = _PLAN_ID.search(text[:_PEEK_HEAD])
    if not m:
        return ""
    return m.group("s") or m.group("n") or ""


@dataclass(frozen=True)
class Peek:
    """What can be read of a raw message without parsing it."""

    task: str
    id: str
    queue: str
    body: str  # the start of the (decoded) body, for the head and the planId


def peek_raw(raw: bytes | bytearray | memoryview | str) -> Peek:
    """task, id, queue and body start of a raw Redis envelope that was not parsed (too large,
    not JSON): headers come after the body in kombu's envelopes, so the tail is read too."""
    start = as_text(raw, _PEEK_HEAD)
    n = len(raw)
    if isinstance(raw, str):
        tail = raw[max(0, n - _PEEK_TAIL) :]
    else:
        tail = bytes(raw[max(0, n - _PEEK_TAIL) :]).decode("utf-8", errors="replace")
    body = _body_head_from_envelope(start) or start
    task = _peek_field("task", start) or _peek_field("task", tail)
    task_id = _peek_field("id", start) or _peek_field("id", tail)
    queue = _peek_field("routing_key", tail) or _peek_field("routing_key", start)
    return Peek(task=task, id=task_id, queue=queue, body=body)


# ---- the stream -----------------------------------------------------------------------


def _short(value: object) -> str:
    text = value if isinstance(value, str) else ("" if value is None else repr(value))
    text = text if len(text) <= _FIELD_MAX else text[: _FIELD_MAX - 3] + "..."
    return encodable(text)  # logged and stored: a lone surrogate must not raise


#: What a refusal's reason starts with (tasks/guard.py, tasks/transport.py), as the bounded
#: `kind` label of `deployer_dead_letters_total`; anything else is "other".
DEAD_LETTER_KINDS = frozenset({
    "envelope", "header", "body", "args", "kwargs", "embed", "compressed", "content",
    "larger", "nested", "unknown", "worker",
})  # fmt: skip


def dead_letter_kind(reason: str) -> str:
    first = reason.split(" ", 1)[0].split(".", 1)[0].lower()
    return first if first in DEAD_LETTER_KINDS else "other"


@dataclass(frozen=True)
class DeadLetter:
    """One refused message: what and why, never more than a redacted head of its bytes."""

    reason: str
    queue: str = ""
    task: str = ""
    id: str = ""
    size: int = 0
    head: str = ""

    def fields(self, ts_ms: int) -> dict[str, str | int]:
        return {
            "reason": _short(self.reason),
            "queue": _short(self.queue),
            "task": _short(self.task),
            "id": _short(self.id),
            "size": int(self.size),
            "head": encodable(self.head[:HEAD_BYTES]),
            "ts": ts_ms,
        }


class DeadLetters:
    """Writes dead letters to the bounded stream and logs each once (WARNING, no body)."""

    def __init__(self, r: redis.Redis, maxlen: int) -> None:
        self.stream = deadletters.DeadLetterStream(r, maxlen)

    def record(self, letter: DeadLetter) -> None:
        """Log and keep `letter`; never raises (a refused message must not become a crash
        because Redis is down: the log line is then the only trace)."""
        log.warning(
            "malformed message dropped (%s): id=%s task=%s",
            _short(letter.reason),
            _short(letter.id),
            _short(letter.task),
        )
        try:
            self.stream.append(
                letter.fields(int(time.time() * 1000)), dead_letter_kind(letter.reason)
            )
        except Exception as exc:  # noqa: BLE001 - logged; the message is dropped regardless
            log.warning("dead letter not stored (%s)", type(exc).__name__)


def read(r: redis.Redis, count: int = 100) -> list[dict[str, Any]]:
    """The newest `count` dead letters, oldest first (for tests and operators)."""
    return deadletters.newest(r, count)


__all__ = [
    "DeadLetter",
    "DeadLetters",
    "Peek",
    "head",
    "json_depth_exceeds",
    "peek_plan_id",
    "peek_raw",
    "read",
    "redact_text",
]
