"""The state boundary: only deployer/state names a Redis key of deployer's, runs a script or
sends Redis commands to deployer's state. Everything else goes through its records and methods.

Three checks over the AST of every module in deployer/, tasks/ and stages/ outside
deployer/state: no import of the key templates, the script loader or the prelude; no string
that is a deployer key (`deployer:` followed by a name); no call of a Redis command method.
`TALKS_TO_TARGETS` are the modules whose Redis is a *target's* or the connection itself, not
deployer's state: the connection factory, the simulated fleet, and the steps that write and
read a service's Redis.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STATE_MODULES = {"deployer.state.keys", "deployer.state.scripts", "deployer.state.prelude"}
KEY = re.compile(r"^deployer:[a-z]")
#: Redis command methods distinctive enough not to be a dict's or a list's.
COMMANDS = frozenset(
    """hget hgetall hmget hset hsetnx hincrby hdel hexists hlen hscan hscan_iter hkeys hvals
    xadd xrange xrevrange xlen xread xreadgroup xtrim xdel zadd zrange zrangebyscore
    zrevrange zrevrangebyscore zscore zmscore zrem zremrangebyscore zcard zcount zincrby
    zpopmin zpopmax sadd srem smembers sismember scard lrange lpush rpush llen lrem ltrim
    lpop rpop lindex expire pexpire pexpireat ttl pttl exists unlink scan_iter eval evalsha
    register_script pipeline publish incr incrby setex psetex mget mset script_load
    transaction""".split()
)
#: Whose Redis is not deployer's state (see the module docstring).
TALKS_TO_TARGETS = {
    "deployer/redis_client.py",
    "deployer/fleet.py",
    "stages/steps/redis_ack.py",
    "stages/steps/broadcast.py",
}
#: Modules that still reach into the state directly (issue 24: each leaves this list when
#: it goes through deployer/state). Empty is the goal; the test fails when a module not
#: listed starts to, and when a listed one no longer does (so the list only shrinks).
NOT_YET: set[str] = set()


def _sources() -> list[Path]:
    paths = [p for d in ("deployer", "tasks", "stages") for p in (ROOT / d).rglob("*.py")]
    return [p for p in paths if "deployer/state/" not in p.relative_to(ROOT).as_posix()]


def _is_path(node: ast.expr) -> bool:
    """`Path(p).exists()` is a file's, not a key's."""
    return isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Path"


def violations(text: str, module: str) -> list[str]:
    """What in `text` reaches past the state boundary, as 'module:line: what'."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            for name in sorted(names & STATE_MODULES):
                found.append(f"{module}:{node.lineno}: imports {name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in STATE_MODULES:
                    found.append(f"{module}:{node.lineno}: imports {a.name}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):  # f-strings too
            if KEY.match(node.value):
                found.append(f"{module}:{node.lineno}: names the key {node.value!r}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in COMMANDS
            and module not in TALKS_TO_TARGETS
            and not _is_path(node.func.value)
        ):
            found.append(f"{module}:{node.lineno}: sends {node.func.attr.upper()}")
    return sorted(found, key=lambda f: int(f.split(":")[1]))


def _all() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in _sources():
        module = path.relative_to(ROOT).as_posix()
        found = violations(path.read_text(), module)
        if found:
            out[module] = found
    return out


def test_no_module_outside_the_state_package_touches_redis_state():
    found = _all()
    new = {m: v for m, v in found.items() if m not in NOT_YET}
    assert new == {}


def test_the_list_of_modules_not_yet_behind_the_boundary_only_shrinks():
    assert sorted(NOT_YET - set(_all())) == []


def test_the_checks_catch_each_kind_of_reach():
    text = (
        "from deployer.state import keys\n"
        "import deployer.state.scripts\n"
        "K = 'deployer:plan:' + p\n"
        "F = f'deployer:task:{t}'\n"
        "r.hgetall(k)\n"
        "{}.get('x')\n"
    )
    found = violations(text, "deployer/x.py")
    assert [f.split(": ", 1)[1].split(" ")[0] for f in found] == [
        "imports", "imports", "names", "names", "sends",
    ]  # fmt: skip
    assert violations("r.hgetall(k)\n", "deployer/fleet.py") == []
