"""The simulated fleet served in its own process (as a user's fleet is not in their client).

    python -m benchmarks.fleet_process

Starts deployer's simulated fleet (no delay, free ports, the settings of the environment),
prints its addresses as one JSON line, then answers each line read on stdin with its stats
(one JSON line); stops at end of input.
"""

from __future__ import annotations

import json
import sys

from deployer.fleet import Behaviour, Fleet
from deployer.settings import DEFAULT_INSTANCES, Settings


def main() -> None:
    s = Settings()
    free = {svc: ["127.0.0.1:0"] * len(addrs) for svc, addrs in DEFAULT_INSTANCES.items()}
    with Fleet(free, s.target_url, s.key_prefix, s.pubsub_topic, s.verify_path, Behaviour()) as f:
        print(json.dumps(f.addresses), flush=True)
        for _line in sys.stdin:
            print(json.dumps(f.stats()), flush=True)


if __name__ == "__main__":
    main()
