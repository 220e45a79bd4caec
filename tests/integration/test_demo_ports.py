"""`deployer demo` on ports that are taken, when they were asked for: one line, exit 2,
nothing started (before: a 57-line traceback, or Flower silently left out)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT


@pytest.fixture()
def taken() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def demo(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYER_", "PYTEST"))}
    return subprocess.run(
        [str(Path(sys.executable).with_name("deployer")), "demo", *args],  # the console script
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def test_a_flower_port_asked_for_and_taken_is_refused_in_one_line(taken):
    done = demo("--flower-port", str(taken))
    assert done.returncode == 2
    line = one_line(done)
    assert f"port {taken} on 127.0.0.1 is taken" in line
    assert "--flower-port PORT" in line  # how to choose another


def test_fleet_addresses_set_by_the_operator_and_taken_are_refused_in_one_line(taken):
    instances = {"asbc-gateway": ["127.0.0.1:0"], "portal": [f"127.0.0.1:{taken}"],
                 "blue-green-gateway": ["127.0.0.1:0"], "ob-service": ["127.0.0.1:0"]}  # fmt: skip
    done = demo("--flower-port", "0", DEPLOYER_INSTANCES=json.dumps(instances))
    assert done.returncode == 2
    out = done.stdout + done.stderr
    assert "Traceback" not in out
    (line,) = [line for line in out.splitlines() if "deployer demo" in line]
    assert f"127.0.0.1:{taken} (portal)" in line and "set DEPLOYER_INSTANCES" in line
    # What it had started (the embedded server) said so and is stopped again.
    assert [line for line in out.splitlines() if line.strip()][0].startswith("embedded server")
