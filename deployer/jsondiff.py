"""Where two JSON values differ, as JSON paths (`$.routes[0].targetUri`), for `deployer diff`.

A service field holds a JSON object a few hundred characters long; printing it before and
after, cut to a width, hid the change whenever it came later than the cut. This names each
differing leaf instead, with its two values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

#: A side of a path that does not exist (a key or item added or removed).
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


@dataclass(frozen=True)
class PathChange:
    path: str
    before: Any = ABSENT
    after: Any = ABSENT

    @property
    def kind(self) -> str:
        if self.before is ABSENT:
            return "added"
        return "removed" if self.after is ABSENT else "changed"


def child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if _NAME.fullmatch(key) else f"{path}[{json.dumps(key)}]"


def _same(a: Any, b: Any) -> bool:
    # JSON types: true is not 1, 1.0 is 1
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def paths(before: Any, after: Any, path: str = "$") -> list[PathChange]:
    """Every leaf path where `before` and `after` (parsed JSON) differ, in document order
    (objects key by key, arrays index by index)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[PathChange] = []
        for key in [*before, *(k for k in after if k not in before)]:
            out += paths(before.get(key, ABSENT), after.get(key, ABSENT), child(path, key))
        return out
    if isinstance(before, list) and isinstance(after, list):
        out = []
        for i in range(max(len(before), len(after))):
            b = before[i] if i < len(before) else ABSENT
            a = after[i] if i < len(after) else ABSENT
            out += paths(b, a, child(path, i))
        return out
    if before is ABSENT and after is ABSENT:
        return []
    if before is not ABSENT and after is not ABSENT and _same(before, after):
        return []
    return [PathChange(path, before, after)]


def text_paths(before: str, after: str) -> list[PathChange] | None:
    """`paths` of two JSON texts; None when either is not a JSON object or array (then
    there is no nested field to name)."""
    try:
        b, a = json.loads(before), json.loads(after)
    except (ValueError, RecursionError):
        return None
    if not isinstance(b, dict | list) or not isinstance(a, dict | list):
        return None
    return paths(b, a)


def around(before: str, after: str, width: int = 60) -> tuple[str, str]:
    """Both texts cut to `width` around where they first differ (… marks a cut), so the
    change is always in view."""
    start = next(
        (i for i, (x, y) in enumerate(zip(before, after, strict=False)) if x != y),
        min(len(before), len(after)),
    )
    lead = max(0, start - width // 3)

    def cut(text: str) -> str:
        shown = text[lead : lead + width]
        return ("…" if lead else "") + shown + ("…" if lead + width < len(text) else "")

    return cut(before), cut(after)
