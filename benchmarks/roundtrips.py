"""Figure 2: Redis round trips per stage and per KeyValueWrite, from INFO commandstats deltas.

Three private servers keep the counts apart: the broker (Celery's traffic only), the state
store (deployer's bookkeeping only) and the target (the tenant configs the services read).
commandstats also counts the commands a Lua script issues, so round trips are the calls
only a client can send (EVALSHA, EVAL, MULTI/EXEC); the per-command breakdown is printed
next to them.
"""

from __future__ import annotations

import os
import time
from typing import Any

from benchmarks import common, plugins

TENANTS = 200
CLIENT_ONLY = {"evalsha", "eval", "multi", "exec"}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    out = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {k: v for k, v in out.items() if v > 0 and k not in ("info", "ping")}


def main() -> None:
    broker = common.setup()
    state, target = common.Server(), common.Server()
    env = common.env_for(broker, DEPLOYER_REDIS_URL=state.url, DEPLOYER_TARGET_REDIS_URL=target.url)
    os.environ.update(env)
    from benchmarks import overhead

    quiet_state = common.Remote(state.url)
    quiet_state.commandstats = lambda: {}  # type: ignore[method-assign]
    runs: dict[str, Any] = {
        "raw": lambda n: overhead.run_raw(quiet_state, n=n),
        "noop": lambda n: overhead.run_deployer(quiet_state, "noop", n=n),
        "kv": lambda n: overhead.run_deployer(quiet_state, "kv", n=n),
    }
    servers = {"broker": broker, "state": state, "target": target}
    with common.worker(env=env, concurrency=2):
        for run in runs.values():
            run(20)  # warm up: scripts loaded, connections open
        for kind, run in runs.items():
            before = {k: s.commandstats() for k, s in servers.items()}
            run(TENANTS)
            time.sleep(1.0)  # the last acks and events land
            stages = TENANTS * plugins.STAGES
            d = {k: delta(before[k], s.commandstats()) for k, s in servers.items()}
            state_rt = sum(v for k, v in d["state"].items() if k in CLIENT_ONLY)
            target_rt = sum(v for k, v in d["target"].items() if k in CLIENT_ONLY)
            common.emit(
                f"roundtrips.{kind}",
                tenants=TENANTS,
                stages=stages,
                broker_commands_per_stage=round(sum(d["broker"].values()) / stages, 2),
                state_round_trips_per_stage=round(state_rt / stages, 3),
                state_commands_per_stage_incl_lua=round(sum(d["state"].values()) / stages, 2),
                target_round_trips_per_stage=round(target_rt / stages, 3),
                target_commands_per_stage=round(sum(d["target"].values()) / stages, 3),
                broker=d["broker"],
                state=d["state"],
                target=d["target"],
            )


if __name__ == "__main__":
    main()
