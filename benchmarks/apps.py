"""The Celery app benchmark workers run: deployer's own, plus raw no-op tasks on it.

`celery -A benchmarks.apps.deployer worker` is `tasks.app` itself with two extra tasks,
`bench.noop` and `bench.noop_last`, so raw Celery chains and deployer plans run on the very
same worker with the very same settings (broker, queue, acks_late, prefetch, JSON,
ignore_result on both sides). `BENCH_EVENTS=0` turns task events off
(`worker_send_task_events` and `task_send_sent_event`) for the events-off figures;
`BENCH_SENT_EVENTS=0` leaves only `task-sent` off (deployer's default, as operators run it).
"""

from __future__ import annotations

import os
import time
from functools import lru_cache
from typing import Any

import redis

from celeryconfig import STAGES_QUEUE
from tasks import app as deployer

EVENTS = os.environ.get("BENCH_EVENTS", "1") != "0"

deployer.conf.worker_send_task_events = EVENTS
# On for the raw-vs-deployer figures (both sides of that comparison send them); off where
# deployer is measured as shipped (DEPLOYER_TASK_SENT_EVENTS defaults to false).
deployer.conf.task_send_sent_event = EVENTS and os.environ.get("BENCH_SENT_EVENTS", "1") != "0"
if os.environ.get("BENCH_MAX_MEMORY_PER_CHILD_KB"):
    # Trying Celery's recycling of a pool process that grew past this (e.g. after a submit).
    deployer.conf.worker_max_memory_per_child = int(os.environ["BENCH_MAX_MEMORY_PER_CHILD_KB"])


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["DEPLOYER_REDIS_URL"])


@deployer.task(name="bench.noop", ignore_result=True, queue=STAGES_QUEUE, acks_late=True)
def noop(ctx: dict[str, Any]) -> dict[str, Any]:
    return ctx


@deployer.task(name="bench.noop_last", ignore_result=True, queue=STAGES_QUEUE, acks_late=True)
def noop_last(ctx: dict[str, Any]) -> None:
    # The chain's end, recorded like deployer records a task's endedAt (one command).
    _redis().rpush("bench:done", time.time())


def ctx_1kb(i: int) -> dict[str, Any]:
    return {
        "planId": "raw",
        "taskId": f"task-raw_t{i:06d}",
        "tenantId": f"t{i:06d}",
        "runId": "0123456789ab",
        "stageIndex": 0,
        "additionalData": {"planVersion": 20},
        "scratch": {"pad": "x" * 850},
    }


if os.environ.get("BENCH_TRACEMALLOC"):
    # Leak hunting: `kill -USR2 <pid>` writes the top allocation sites of that process.
    import signal
    import tracemalloc

    tracemalloc.start(12)

    def _dump(signum: int, frame: object) -> None:
        snap = tracemalloc.take_snapshot()
        out = os.environ["BENCH_TRACEMALLOC"] + f".{os.getpid()}"
        with open(out, "w") as fh:
            for stat in snap.statistics("traceback")[:15]:
                fh.write(f"{stat.size / 1e6:.1f} MB in {stat.count} blocks\n")
                fh.write("\n".join(stat.traceback.format()[-12:]) + "\n\n")

    signal.signal(signal.SIGUSR2, _dump)


# The hand-written plain-Celery rollout (benchmarks/handwritten.py) runs on this same worker.
from benchmarks import handwritten_tasks  # noqa: E402, F401

# The worker's message guard (tasks/guard.py) runs only deployer's own `deployer.*` tasks and
# dead-letters any other: the benchmark's raw Celery tasks (`bench.*`, `hand.*`) would never
# run. Benchmark workers let these through too; every other check still applies, so both
# sides pay for the same guard.
from tasks import guard  # noqa: E402

_deployer_only = guard.allowed


def _allowed(name: str, tasks: Any) -> bool:
    return _deployer_only(name, tasks) or (name.startswith(("bench.", "hand.")) and name in tasks)


guard.allowed = _allowed

# Since the relay check (tasks/relays.py) a chain is let through only for `deployer.run_stage`:
# the benchmarks' own chains of `bench.*`/`hand.*` tasks were dropped as malformed. Benchmark
# workers let such a chain through when every task in it is a benchmark task; every other
# check (groups, links, chords) still applies.
from tasks.relays import relay_problem as _deployer_relays  # noqa: E402

_BENCH = ("bench.", "hand.")


def _relay_problem(task: str, embed: Any, headers: Any) -> str | None:
    chain = (embed or {}).get("chain") or []
    if task.startswith(_BENCH) and all(
        isinstance(sig, dict) and str(sig.get("task", "")).startswith(_BENCH) for sig in chain
    ):
        embed = {k: v for k, v in (embed or {}).items() if k != "chain"}
    return _deployer_relays(task, embed, headers)


vars(guard)["relay_problem"] = _relay_problem  # the name guard.py calls
