"""How long creating a 100,000-tenant plan blocks Redis.

`Store.create_plan` wrote a plan in one Lua script (lua/plan_create.lua): atomic, but Redis
serves nobody else (any database) while it runs. A plan over `plan_create_slice` tenants is
now written in slices (lua/plan_claim, plan_slice, plan_finish). This times both on an
embedded server for N tiny tenants: the whole create, the longest script (SLOWLOG), and
what another client feels (the longest PING answered meanwhile).

    .venv/bin/python -m benchmarks.create_block [N]
"""

from __future__ import annotations

import sys
import threading
import time

import redis

from deployer.embedded import EmbeddedRedis
from deployer.settings import Settings
from deployer.state.store import Store, TaskRow

CONFIG = '{"tenantId":"t","planVersion":20,"deployUnitName":"green"}'


def longest_ping(probe: redis.Redis, done: threading.Event, worst: list[float]) -> None:
    while not done.is_set():
        t = time.perf_counter()
        while True:
            try:
                probe.ping()
                break
            except redis.ResponseError:  # BUSY: a script has run past busy-reply-threshold
                time.sleep(0.01)
        worst[0] = max(worst[0], time.perf_counter() - t)


def once(url: str, n: int, slice_size: int, tag: str) -> tuple[float, float, float]:
    """(seconds create_plan took, longest script in SLOWLOG, longest PING meanwhile)."""
    settings = Settings(redis_url=url, broker_url=url, plan_create_slice=slice_size)
    # no socket timeout: the one-script create can outlast redis-py's default
    store = Store(redis.Redis.from_url(url, decode_responses=True, socket_timeout=120), settings)
    probe = redis.Redis.from_url(url, socket_timeout=120)
    rows = [TaskRow(f"{tag}-{i:06d}", 1, CONFIG) for i in range(n)]
    probe.config_set("slowlog-log-slower-than", 1000)
    probe.slowlog_reset()
    done, worst = threading.Event(), [0.0]
    pinger = threading.Thread(target=longest_ping, args=(probe, done, worst))
    pinger.start()
    t0 = time.perf_counter()
    assert store.create_plan(f"big-{tag}", rows, 10, f"{tag}-", "d" * 64)
    took = time.perf_counter() - t0
    done.set()
    pinger.join()
    script_us = max((int(e["duration"]) for e in probe.slowlog_get(10_000)), default=0)
    return took, script_us / 1e6, worst[0]


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with EmbeddedRedis() as server:
        for k in range(2):
            for slice_size in (n, Settings().plan_create_slice):
                took, script, ping = once(server.url, n, slice_size, f"r{k}s{slice_size}")
                print(
                    f"{n} tenants, slices of {slice_size}: create_plan {took:.2f} s, "
                    f"longest script {script:.3f} s, longest PING meanwhile {ping:.3f} s"
                )
