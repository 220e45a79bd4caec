"""Worker-side machinery: the reconciler timer started with every worker (no beat needed).

`ReconcilerStep` is a bootstep of the worker blueprint, so it runs once per worker in the
main process (whatever the pool), starts with the worker and stops with it. Many workers may
run it at once: the claim is one atomic Lua script.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from celery import bootsteps
from celery.signals import worker_init

from deployer.reconciler import Reconciler, ReconcilerThread
from stages import registry
from tasks import runtime
from tasks.app import app

log = logging.getLogger("deployer.reconciler")


def build_reconciler() -> Reconciler:
    planner = runtime.planner()
    return Reconciler(
        runtime.store(),
        planner.launch,
        planner.dispatch,
        lambda plan_id: planner.advance(plan_id, ask_gates=True),
    )


class ReconcilerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    label = "deployer reconciler"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: ReconcilerThread | None = None

    def start(self, worker: Any) -> None:
        interval = runtime.settings().reconcile_interval_seconds
        self.thread = ReconcilerThread(build_reconciler(), interval)
        self.thread.start()
        log.info("reconciler started (every %.1fs)", interval)

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None

    shutdown = stop


app.steps["worker"].add(ReconcilerStep)


@worker_init.connect(weak=False)
def warm_up(**_: Any) -> None:
    """Load entry points, settings and scripts once in the main process, before the pool
    forks: every pool process (including one recycled after a big submit) starts warm."""
    registry.assemblers()
    registry.steps()
    runtime.store()
    # What is loaded now lives as long as the worker: out of the collector's sight, so a
    # full collection in a pool process does not walk (and copy-on-write) all of it.
    gc.freeze()
