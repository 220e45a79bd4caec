"""Profile the stage hot path: py-spy samples one worker's pool children during a no-op plan.

Prints the top frames (self and cumulative) as JSON lines; not part of `make bench` (py-spy
is optional: `pip install py-spy`).
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from benchmarks import common, overhead

TOP = 25


def main() -> None:
    server = common.setup()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    kind = sys.argv[1] if len(sys.argv) > 1 else "noop"
    with common.worker(concurrency=2) as w:
        overhead.warm_up(server)
        outs = []
        procs = []
        for pid in [w.proc.pid, *w.children()]:
            out = Path(f"/tmp/deployer-spy-{kind}-{pid}.txt")
            outs.append((pid, out))
            procs.append(
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "-p",
                        str(pid),
                        "-d",
                        "8",
                        "-r",
                        "200",
                        "-f",
                        "raw",
                        "-o",
                        str(out),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
            )
        runner = threading.Thread(
            target=lambda: (
                overhead.run_raw(server) if kind == "raw" else overhead.run_deployer(server, kind)
            )
        )
        runner.start()
        for p in procs:
            p.wait(timeout=60)
        runner.join(timeout=120)
    for pid, out in outs:
        self_c: collections.Counter[str] = collections.Counter()
        cum: collections.Counter[str] = collections.Counter()
        total = 0
        for line in out.read_text().splitlines() if out.exists() else []:
            stack, _, n = line.rpartition(" ")
            frames = stack.split(";")
            total += int(n)
            self_c[frames[-1]] += int(n)
            for f in set(frames):
                cum[f] += int(n)
        common.emit("profile", pid=pid, samples=total)
        shown = [(f, n) for f, n in cum.most_common() if n < 0.9 * total][:TOP]
        for f, n in shown:
            print(f"  cum {n / max(total, 1):6.1%}  {f}")
        for f, n in self_c.most_common(TOP):
            print(f"  self {n / max(total, 1):6.1%}  {f}")


if __name__ == "__main__":
    main()
