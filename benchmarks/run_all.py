"""Run every benchmark, one subprocess each (own server, own workers), bounded in time.

`make bench` runs this. Each script prints one JSON line per figure; this prints them as
they come. `python -m benchmarks.run_all overhead submit` runs a subset.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: (module, time limit in seconds)
SCRIPTS = [
    ("overhead", 900),
    ("roundtrips", 300),
    ("submit", 300),
    ("progressive", 900),
    ("scaleout", 900),
    ("waiting", 1800),
    ("fleet_wait", 300),  # waiting on a slow fleet costs latency only
    ("api", 600),  # deployer serve on a 100,000-tenant plan, SSE keeping up
    ("sick_instances", 300),  # hanging instances never slow the healthy
    ("handwritten", 1500),  # deployer beside hand-written plain Celery (its own app and worker)
    ("worker_death", 600),  # a dead worker's tenants back within 15 s
    ("growth", 600),  # Redis bytes per tenant-task and at 1,000,000
    ("observability", 600),  # CLI start-up per command; /metrics with 200 plans x 500 tenants
]


def main(argv: list[str]) -> int:
    wanted = set(argv) or {name for name, _ in SCRIPTS}
    failed = 0
    for name, limit in SCRIPTS:
        if name not in wanted:
            continue
        t0 = time.monotonic()
        print(f"# {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.Popen([sys.executable, "-m", f"benchmarks.{name}"], cwd=ROOT)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.terminate()  # the script's SIGTERM handler stops its server and workers
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        if rc != 0:
            print(f"# {name} failed (exit {rc})", file=sys.stderr, flush=True)
            failed += 1
        print(f"# {name}: {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
