"""How the HTTP API answers: redacted JSON, and refusals as `{"ok": false, "code",
"message", ...}` with an HTTP status (deployer/web/app.py turns an `ApiError` into one).

Apart from the application so that every router imports these without importing the
application that mounts it (no import cycle).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse

from deployer.redact import redact


class RedactedJSON(JSONResponse):
    """Every JSON answer goes through deployer.redact: no secret leaves the API."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(redact(content), ensure_ascii=False, separators=(",", ":"), default=str)
        # a lone surrogate (only ever inside a JSON string) becomes its `\uXXXX` escape
        return text.encode("utf-8", "backslashreplace")


class ApiError(Exception):
    """A refusal with an HTTP status and a stable code."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def error(status: int, code: str, message: str, **extra: Any) -> RedactedJSON:
    return RedactedJSON({"ok": False, "code": code, "message": message, **extra}, status)
