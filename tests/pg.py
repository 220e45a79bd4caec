"""A throwaway PostgreSQL cluster for the archive's tests: initdb in a temporary directory,
`pg_ctl start` on a free port (Unix socket in the same directory), stopped at the end.

Binaries are looked for in DEPLOYER_TEST_PG_BIN, then /usr/lib/postgresql/*/bin, then PATH;
without them the PostgreSQL tests are skipped, loudly (a line in the summary says why).
Set DEPLOYER_TEST_ARCHIVE_PG_URL to use an existing database instead (its tables are dropped).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port


@dataclass
class PgCluster:
    url: str
    data: Path | None = None
    pg_ctl: str = ""
    run_as: tuple[str, ...] = ()

    def stop(self) -> None:
        if self.data is not None:
            subprocess.run([*self.run_as, self.pg_ctl, "-D", str(self.data), "-m", "immediate",
                            "stop"], capture_output=True, check=False, timeout=60)  # fmt: skip
            shutil.rmtree(self.data.parent, ignore_errors=True)


def find_bin() -> str | None:
    candidates = [os.environ.get("DEPLOYER_TEST_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if folder and os.access(os.path.join(folder, "initdb"), os.X_OK):
            return folder
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


def start() -> PgCluster | str:
    """A running cluster, or why there is none (a string)."""
    url = os.environ.get("DEPLOYER_TEST_ARCHIVE_PG_URL")
    if url:
        return PgCluster(url)
    folder = find_bin()
    if folder is None:
        return "no PostgreSQL binaries (initdb, pg_ctl): install them or set DEPLOYER_TEST_PG_BIN"
    root = Path(tempfile.mkdtemp(prefix="deployer-pg-"))
    data = root / "data"
    user = ["-U", "deployer"]
    env = dict(os.environ)
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as nobody
        shutil.chown(root, "nobody")
        run_as = ["runuser", "-u", "nobody", "--"]
    init = subprocess.run([*run_as, f"{folder}/initdb", "-D", str(data), *user, "-A", "trust",
                           "-E", "UTF8", "--no-sync"], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        return f"initdb failed: {init.stderr.strip()[-500:]}"
    port = free_port()
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    started = subprocess.run([*run_as, f"{folder}/pg_ctl", "-D", str(data), "-o", opts, "-w",
                              "-l", str(root / "log"), "start"], capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    if started.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        return f"pg_ctl start failed: {started.stderr.strip()[-500:]}"
    return PgCluster(f"postgresql+psycopg://deployer@127.0.0.1:{port}/postgres", data,
                     f"{folder}/pg_ctl", tuple(run_as))  # fmt: skip
