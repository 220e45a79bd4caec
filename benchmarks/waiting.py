"""Figure 4: 10,000 tenants in HealthCheck wait at once on one worker (2 processes).

Each tenant runs the real blue-green-gateway stage (KeyValueWrite, Broadcast, HealthCheck)
against the simulated fleet (`deployer.fleet`, one instance, in this process) which answers
"not yet" to the first POLLS-1 polls of each tenant. Reports wall time, polls per second,
the most tenants the fleet saw waiting at once and the worker's peak RSS per process.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

from benchmarks import common

TENANTS = int(os.environ.get("BENCH_WAIT_TENANTS", "10000"))
POLLS = int(os.environ.get("BENCH_WAIT_POLLS", "2"))
INTERVAL = 2.0
REPEATS = int(os.environ.get("BENCH_WAIT_REPEATS", "2"))


def main() -> None:
    server = common.setup()
    from deployer.fleet import Behaviour, Fleet
    from deployer.settings import Settings

    s = Settings(broker_url=server.url)
    instances = {"blue-green-gateway": ["127.0.0.1:0"]}
    with Fleet(
        instances, server.url, s.key_prefix, s.pubsub_topic, s.verify_path,
        Behaviour(after_polls=POLLS),
    ) as fleet:  # fmt: skip
        env = common.env_for(
            server,
            DEPLOYER_INSTANCES=json.dumps(fleet.addresses),
            DEPLOYER_VERIFY_INTERVAL_SECONDS=str(INTERVAL),
            DEPLOYER_VERIFY_MAX_ATTEMPTS="200",
            DEPLOYER_LEASE_TTL_SECONDS="600",
        )
        os.environ.update(env)
        with common.worker(env=env, concurrency=2) as w:
            _plan(server, fleet, 50)  # warm up
            for _ in range(REPEATS):
                _measure(server, fleet, w)


def _plan(server: common.Server, fleet: object, n: int) -> tuple[str, float]:
    plan_id = f"wait-{uuid.uuid4().hex[:8]}"
    p = common.plan(plan_id, n, ["blue-green-gateway"], n)
    t0 = time.time()
    common.submit(p)
    common.wait_plan(server, plan_id, 1800, 0.2)
    return plan_id, time.time() - t0


def _measure(server: common.Server, fleet: object, w: common.Worker) -> None:
    peak: dict[str, float] = {}
    peak_pss: dict[str, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            for k, v in w.rss_mb().items():
                peak[k] = max(peak.get(k, 0.0), v)
            for k, v in w.rss_mb("Pss").items():
                peak_pss[k] = max(peak_pss.get(k, 0.0), v)

    before = fleet.stats()["polls"]  # type: ignore[attr-defined]
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, wall = _plan(server, fleet, TENANTS)
    finally:
        stop.set()
        sampler.join()
    stats = fleet.stats()  # type: ignore[attr-defined]
    polls = stats["polls"] - before
    common.emit(
        "waiting.10k",
        tenants=TENANTS,
        polls_per_tenant=POLLS,
        poll_interval_s=INTERVAL,
        wall_s=round(wall, 1),
        polls=polls,
        polls_per_s=round(polls / wall, 1),
        max_waiting_at_once=stats["max_waiting"],
        rss_peak_mb={k: round(v, 1) for k, v in peak.items()},
        pss_peak_mb={k: round(v, 1) for k, v in peak_pss.items()},
        goal_rss_mb_per_process=150,
    )


if __name__ == "__main__":
    main()
