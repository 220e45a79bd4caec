"""Fence tokens stay out of the worker log and out of Flower.

A stage returns its context, token included: the next stage of the chain needs it (the token
fences every write), so it must travel in the message. But Celery prints that return value
in its success log line (`Task deployer.run_stage[...] succeeded in 0.1s: {...}`) and sends
it as the `result` of the `task-succeeded` event that Flower shows. A token read there could
be replayed in a hand-made stage message. Both texts are built by Celery from
`saferepr(retval)`; this module rewrites them: a log filter on Celery's trace logger here, and
the stage task's Request class (tasks/attempts.py) for every event a stage attempt sends.
"""

from __future__ import annotations

import logging
import re

MASK = "***"
#: A token's value, also one cut short at the end of a text bounded by saferepr.
_TOKEN = re.compile(r"""(['"]token['"]\s*:\s*)(['"])(?:(?!\2).)*(?:\2|$)""")


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


install_log_filter()
