"""The hand-written rollout as a user would run it: its own plain Celery app and worker.

    celery -A benchmarks.handwritten_app worker -c 2 [-E]

Celery's defaults throughout (prefork, prefetch multiplier 4, early acks, JSON, no result
backend), the broker on the Redis deployer uses (so one `INFO commandstats` counts both
sides), and nothing of deployer imported: no message guard, no guarded transport, no
maintenance threads. The only settings given are the broker and the queue (the benchmark
runs an events-on and an events-off worker side by side, each on its own queue); the task
bodies are benchmarks/handwritten_rollout.py's, the same deployer's own worker runs for the
second figure.
"""

from __future__ import annotations

import os

from celery import Celery

from benchmarks import handwritten_rollout as rollout

app = Celery("handwritten", broker=os.environ["DEPLOYER_REDIS_URL"])

post = app.task(name="hand.post", bind=True)(rollout.post)
write_verify = app.task(name="hand.write_verify", bind=True, max_retries=None)(rollout.write_verify)
