"""Figure 4: thousands of tenants waiting at once on one worker (2 processes).

Two runs, because two things limit them:
- `sim`: 10,000 tenants whose only stage is a benchmark-local waiting step (`bench-wait`:
  one Redis GET per poll, "not yet" until its third poll, re-sent with a 1 s countdown like
  HealthCheck). This measures what the worker pays to supervise 10,000 waiting tenants.
- `fleet`: the real blue-green-gateway stage (KeyValueWrite, Broadcast, HealthCheck over
  HTTP) against the simulated fleet (`deployer.fleet`, one instance, in this process), which
  answers "not yet" to each tenant's first poll. Here the fleet's own Python HTTP server is
  the limit, so it runs fewer tenants.
Reports wall time, polls per second, tenants waiting at once, peak RSS and PSS per process.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from typing import Any

from benchmarks import common, plugins

SIM_TENANTS = int(os.environ.get("BENCH_WAIT_TENANTS", "10000"))
FLEET_TENANTS = int(os.environ.get("BENCH_FLEET_TENANTS", "2000"))
SIM_POLLS, SIM_INTERVAL = 3, 1.0
FLEET_POLLS, FLEET_INTERVAL = 2, 2.0
REPEATS = int(os.environ.get("BENCH_WAIT_REPEATS", "2"))


def main() -> None:
    server = common.setup(BENCH_POLL_INTERVAL=str(SIM_INTERVAL))
    with common.worker(concurrency=2) as w:
        _plan(server, 50, plugins.services("wait"))  # warm up
        for _ in range(REPEATS):
            _measure(server, w, "sim", SIM_TENANTS, plugins.services("wait"), SIM_POLLS, None)
    _fleet(server)


def _fleet(server: common.Server) -> None:
    from deployer.fleet import Behaviour, Fleet
    from deployer.settings import Settings

    s = Settings(broker_url=server.url)
    instances = {"blue-green-gateway": ["127.0.0.1:0"]}
    with Fleet(
        instances, server.url, s.key_prefix, s.pubsub_topic, s.verify_path,
        Behaviour(after_polls=FLEET_POLLS),
    ) as fleet:  # fmt: skip
        env = common.env_for(
            server,
            DEPLOYER_INSTANCES=json.dumps(fleet.addresses),
            DEPLOYER_VERIFY_INTERVAL_SECONDS=str(FLEET_INTERVAL),
            DEPLOYER_VERIFY_MAX_ATTEMPTS="200",
            DEPLOYER_LEASE_TTL_SECONDS="600",
        )
        with common.worker(env=env, concurrency=2) as w:
            _plan(server, 50, ["blue-green-gateway"])
            for _ in range(REPEATS):
                _measure(server, w, "fleet", FLEET_TENANTS, ["blue-green-gateway"], 0, fleet)


def _plan(server: common.Server, n: int, services: list[str]) -> tuple[str, float]:
    plan_id = f"wait-{uuid.uuid4().hex[:8]}"
    p = common.plan(plan_id, n, services, n)
    t0 = time.time()
    common.submit(p)
    common.wait_plan(server, plan_id, 1500, 0.2)
    return plan_id, time.time() - t0


def _measure(
    server: common.Server,
    w: common.Worker,
    mode: str,
    tenants: int,
    services: list[str],
    polls_each: int,
    fleet: Any,
) -> None:
    peak: dict[str, float] = {}
    peak_pss: dict[str, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            for k, v in w.rss_mb().items():
                peak[k] = max(peak.get(k, 0.0), v)
            for k, v in w.rss_mb("Pss").items():
                peak_pss[k] = max(peak_pss.get(k, 0.0), v)

    before = fleet.stats()["polls"] if fleet else 0
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, wall = _plan(server, tenants, services)
    finally:
        stop.set()
        sampler.join()
    if fleet:
        stats = fleet.stats()
        polls, at_once = stats["polls"] - before, stats["max_waiting"]
    else:
        polls, at_once = tenants * polls_each, None
    common.emit(
        f"waiting.{mode}",
        tenants=tenants,
        wall_s=round(wall, 1),
        polls=polls,
        polls_per_s=round(polls / wall, 1),
        max_waiting_at_once=at_once,
        rss_peak_mb={k: round(v, 1) for k, v in peak.items()},
        pss_peak_mb={k: round(v, 1) for k, v in peak_pss.items()},
        rss_end_mb={k: round(v, 1) for k, v in w.rss_mb().items()},
        goal_rss_mb_per_process=150,
    )


if __name__ == "__main__":
    main()
