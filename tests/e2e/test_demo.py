"""`deployer demo` when its default ports are taken: it runs on free ones and says so.

Before: Flower was silently left out when 5555 was taken, and a taken fleet port
(18101-18401) ended the demo in a 57-line traceback.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.cli.demo import FLOWER_PORT
from deployer.settings import DEFAULT_INSTANCES
from tests.helpers import ROOT

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def hold(port: int) -> Iterator[None]:
    """Keep `port` taken meanwhile (if something else holds it already, it is taken too)."""
    with socket.socket() as s:
        with contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            s.listen()
        yield


def test_the_demo_runs_on_free_ports_when_its_defaults_are_taken():
    fleet_port = int(DEFAULT_INSTANCES["blue-green-gateway"][0].rpartition(":")[2])
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYER_", "PYTEST"))}
    with hold(FLOWER_PORT), hold(fleet_port):
        done = subprocess.run(
            [str(Path(sys.executable).with_name("deployer")), "demo", "--timeout", "90"],
            cwd=ROOT,
            env=clean,
            capture_output=True,
            text=True,
            timeout=180,
        )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Traceback" not in out
    lines = out.splitlines()
    (flower,) = [line for line in lines if line.startswith(f"port {FLOWER_PORT} is taken")]
    assert "Flower listens on" in flower and "--flower-port PORT chooses" in flower
    (fleet,) = [line for line in lines if line.startswith("fleet port taken")]
    assert f"127.0.0.1:{fleet_port} (blue-green-gateway)" in fleet and "free ports" in fleet
    assert f":{fleet_port}" not in "\n".join(lines[lines.index(fleet) + 1 :])  # not served on it
    assert any(line.startswith("plan demo-") and line.endswith("COMPLETED") for line in lines)
