"""Fence tokens stay out of the worker log and out of Flower.

A stage returns its context, token included: the next stage of the chain needs it (the token
fences every write), so it must travel in the message. But Celery prints that return value
in its success log line (`Task deployer.run_stage[...] succeeded in 0.1s: {...}`) and sends
it as the `result` of the `task-succeeded` event that Flower shows. A token read there could
be replayed in a hand-made stage message. Both texts are built by Celery from
`saferepr(retval)`; this module rewrites them: a log filter on Celery's trace logger, and a
Request class for the stage task whose success event carries the redacted text.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from celery.utils.imports import symbol_by_name

from tasks.app import app

MASK = "***"
_TOKEN = re.compile(r"""(['"]token['"]\s*:\s*)(['"])(?:(?!\2).)*\2""")


def redact_tokens(text: str) -> str:
    """`'token': 'abc.3'` (either quote) becomes `'token': '***'` wherever it appears."""
    return _TOKEN.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}{m.group(2)}", text)


class TokenFilter(logging.Filter):
    """Redacts tokens in the success/failure lines of `celery.app.trace` (dict args)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, dict):
            record.args = {
                k: redact_tokens(v) if isinstance(v, str) else v for k, v in args.items()
            }
        return True


def install_log_filter() -> None:
    """Idempotent: the trace logger gets one TokenFilter (in the main and pool processes)."""
    logger = logging.getLogger("celery.app.trace")
    if not any(isinstance(f, TokenFilter) for f in logger.filters):
        logger.addFilter(TokenFilter())


#: The Request class the app's tasks use (a project-wide one, if any, is kept underneath).
_BaseRequest: Any = symbol_by_name(app.Task.Request)


class StageRequest(_BaseRequest):
    """The stage task's request: its `task-succeeded` event shows the result redacted."""

    def on_success(self, failed__retval__runtime: Any, **kwargs: Any) -> Any:
        failed, retval, runtime = failed__retval__runtime
        if not failed and isinstance(retval, str):
            failed__retval__runtime = (failed, redact_tokens(retval), runtime)
        return super().on_success(failed__retval__runtime, **kwargs)


install_log_filter()
