"""The hand-written rollout registered on deployer's own app (the older, second figure).

The same task bodies as the plain Celery app (benchmarks/handwritten_rollout.py), here on
`tasks.app` (benchmarks/apps.py imports this module), so both run on the very same worker
with the very same Celery settings — behind the message guard and guarded transport, beside
the worker's maintenance threads. `benchmarks/handwritten_app.py` is the figure the goal is
about: the same bodies as their own plain Celery app and worker.
"""

from __future__ import annotations

from benchmarks import handwritten_rollout as rollout
from celeryconfig import STAGES_QUEUE
from tasks import app

post = app.task(name="hand.post", bind=True, ignore_result=True, queue=STAGES_QUEUE,
                acks_late=True)(rollout.post)  # fmt: skip
write_verify = app.task(
    name="hand.write_verify",
    bind=True,
    ignore_result=True,
    queue=STAGES_QUEUE,
    acks_late=True,
    max_retries=None,
)(rollout.write_verify)
