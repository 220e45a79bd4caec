"""Assemblers and steps registered by stable name through entry points.

A new service type or step type is a new module plus one entry-point line; two
registrations of one name fail loudly at load time instead of one silently winning.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from deployer.errors import DeployerError
from stages.base import Assembler, Step, StepParams

ASSEMBLER_GROUP = "deployer.stages"
STEP_GROUP = "deployer.steps"


class RegistryError(DeployerError):
    code = "REGISTRY_ERROR"


def _load(group: str) -> dict[str, type]:
    found: dict[str, type] = {}
    for ep in entry_points(group=group):
        if ep.name in found:
            raise RegistryError(f"two entry points named {ep.name!r} in group {group}")
        found[ep.name] = ep.load()
    if not found:
        raise RegistryError(f"no entry points in group {group}: is deployer installed?")
    return found


@lru_cache(maxsize=1)
def assemblers() -> tuple[Assembler, ...]:
    """Every registered assembler, instantiated, in service order."""
    loaded = []
    for name, cls in _load(ASSEMBLER_GROUP).items():
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
