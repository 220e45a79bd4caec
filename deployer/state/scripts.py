"""The Lua boundary: the one loader of deployer/state/lua, and the typed replies of its scripts.

Every script is registered through `load` (the shared prelude in front, history retention
from the settings written into it), and every reply a caller branches on is decoded here
into an enum or a named record. A reply no caller knows is a `ScriptReplyError` — loud —
never read as the nearest known answer (an unknown stage verdict once meant "run the steps").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from functools import cache
from importlib import resources
from typing import Any, Literal, TypeVar

import redis
from redis.commands.core import Script

from deployer import tracing
from deployer.errors import ScriptReplyError
from deployer.state import prelude
from deployer.state.replies import verdict as verdict

#: Every script in deployer/state/lua (the prelude is no script of its own).
ScriptName = Literal[
    "archive_drop",
    "archive_mark",
    "event_record",
    "failover_claim",
    "kv_write",
    "notify_claim",
    "notify_settle",
    "orphan_claim",
    "park",
    "park_tick",
    "plan_cancel_slice",
    "plan_claim",
    "plan_control",
    "plan_create",
    "plan_fill",
    "plan_finish",
    "plan_job",
    "plan_pause_slice",
    "plan_slice",
    "reconcile_claim",
    "stage_begin",
    "stage_end",
    "task_command",
    "task_fail",
    "task_scan",
    "wave_step",
    "worker_beat",
]

#: Scripts sent without the prelude: kv_write runs on the target Redis (another server,
#: perhaps), which keeps none of deployer's plans, tasks or events.
_BARE: frozenset[ScriptName] = frozenset({"kv_write"})


def _read(name: str) -> str:
    return resources.files("deployer.state").joinpath(f"lua/{name}.lua").read_text()


@cache
def source(name: ScriptName) -> str:
    """The text of deployer/state/lua/{name}.lua with the shared helpers in front (scripts cannot
    import). Cached: the settings it reads are fixed for a process."""
    if name in _BARE:
        return _read(name)
    text = prelude.configure_prelude(_read("_prelude"))  # history retention from the settings
    return text + "\n" + _read(name)


def load(client: redis.Redis, name: ScriptName) -> Script:
    """Register script `name` on `client` (no round trip: redis-py sends EVALSHA, and the
    text once if the server does not know it yet). With tracing on, each call is a span
    named for the script (deployer/tracing.py)."""
    if tracing.enabled():
        return TracedScript(client, source(name), name)
    return client.register_script(source(name))


class TracedScript(Script):
    """A script whose every call is a `deployer.script <name>` span (the redis
    instrumentation's EVALSHA span inside it)."""

    def __init__(self, client: redis.Redis, text: str, name: str) -> None:
        super().__init__(client, text)
        self.name = name

    def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        with tracing.span(f"deployer.script {self.name}", **{"deployer.script": self.name}):
            return super().__call__(keys=keys, args=args, client=client)


# ---- replies -------------------------------------------------------------------------------
# The stage scripts' verdicts and `verdict` itself live in replies.py, so a caller branches
# on a reply without importing the loader; `verdict` is re-exported above for the other
# state modules' replies.

R = TypeVar("R")


def records(kind: type[R], raw: Sequence[Any], script: str, **fixed: Any) -> Iterator[R]:
    """A flat reply of fixed-size records, each bound to the fields of dataclass `kind` by
    name: the script sends them in the order the dataclass declares them, leaving out the
    `fixed` ones (the same for every record, given here)."""
    names = [f.name for f in dataclasses.fields(kind) if f.name not in fixed]  # type: ignore[arg-type]
    width = len(names)
    if len(raw) % width:
        raise ScriptReplyError(
            f"{script}.lua answered {len(raw)} values: not records of {width} ({kind.__name__})"
        )
    for start in range(0, len(raw), width):
        yield kind(**fixed, **dict(zip(names, raw[start : start + width], strict=True)))
