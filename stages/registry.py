"""Assemblers and steps registered by stable name through entry points.

A new service type or step type is a new module plus one entry-point line; two
registrations of one name fail loudly at load time instead of one silently winning.

Assemblers register in group `deployer.assemblers`. Their old group `deployer.stages` (the
name of the stages queue too, hence the rename) is still read, with a warning, so a plugin
built for 0.1 keeps working; it will be dropped in a later release.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from deployer.errors import RegistryError as RegistryError  # re-exported
from stages.types import Assembler, Step, StepParams

ASSEMBLER_GROUP = "deployer.assemblers"
#: Deprecated alias of ASSEMBLER_GROUP, still loaded (see the module docstring).
OLD_ASSEMBLER_GROUP = "deployer.stages"
STEP_GROUP = "deployer.steps"

log = logging.getLogger("deployer.registry")


def _load(group: str, *aliases: str) -> dict[str, type]:
    """The entry points of `group` and of its deprecated `aliases`, by name (unique across
    all of them)."""
    found: dict[str, type] = {}
    for name in (group, *aliases):
        for ep in entry_points(group=name):
            if ep.name in found:
                raise RegistryError(f"two entry points named {ep.name!r} in group {group}")
            if name != group:
                log.warning(
                    "entry point %r (%s) is in the deprecated group %s: register it in %s",
                    ep.name,
                    ep.value,
                    name,
                    group,
                )
            found[ep.name] = ep.load()
    if not found:
        raise RegistryError(f"no entry points in group {group}: is deployer installed?")
    return found


@lru_cache(maxsize=1)
def assemblers() -> tuple[Assembler, ...]:
    """Every registered assembler, instantiated, in service order."""
    loaded = []
    for name, cls in _load(ASSEMBLER_GROUP, OLD_ASSEMBLER_GROUP).items():
        if not issubclass(cls, Assembler) or cls.service != name:
            raise RegistryError(f"entry point {name!r} is not an Assembler for service {name!r}")
        loaded.append(cls())
    return tuple(sorted(loaded, key=lambda a: a.order))


@lru_cache(maxsize=1)
def steps() -> dict[str, Step[Any]]:
    out: dict[str, Step[Any]] = {}
    for name, cls in _load(STEP_GROUP).items():
        if not issubclass(cls, Step) or cls.type_name != name:
            raise RegistryError(f"entry point {name!r} is not a Step of type {name!r}")
        params = getattr(cls, "Params", None)
        if not (isinstance(params, type) and issubclass(params, StepParams)):
            raise RegistryError(f"step type {name!r} declares no Params (a StepParams model)")
        out[name] = cls()
    return out


def step(type_name: str) -> Step[Any]:
    try:
        return steps()[type_name]
    except KeyError:
        raise RegistryError(f"unknown step type {type_name!r}") from None
