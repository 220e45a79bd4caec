"""Who runs a stage: the worker node a heartbeat vouches for (hostname, main pid, start id).

A stage runs in a pool process, but the heartbeat comes from the worker's main process
(deployer/liveness.py): the main pid is recorded before the pool forks, so every stage can
name the node whose heartbeat says whether its run is still alive. The random start id
tells incarnations apart: a container restarted after a kill -9 often has the same hostname
and pid (1), and must not vouch for the runs its dead predecessor left behind.
"""

from __future__ import annotations

import os
import secrets
import socket

_main_pid: int | None = None
#: Drawn once per process start, before the pool forks (pool processes inherit it).
_start_id = secrets.token_hex(3)


def mark_main_process() -> None:
    """Called in the worker's main process before the pool forks (children inherit it)."""
    global _main_pid
    _main_pid = os.getpid()


def node_name(hostname: str = "") -> str:
    return f"{hostname or socket.gethostname()}:{_main_pid or os.getpid()}:{_start_id}"


def worker_label(hostname: str = "") -> str:
    """What a stage records as the task's `worker`: `{node}/{pid of the process running it}`."""
    return f"{node_name(hostname)}/{os.getpid()}"


def node_of(worker: str) -> str | None:
    """The heartbeat node of a recorded `worker`; None when it names none (older records)."""
    node, sep, _pid = worker.rpartition("/")
    return node if sep and node else None
