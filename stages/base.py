"""What a step may touch at run time (`StepEnv`: the target Redis, the HTTP client,
discovery), and the plugin interface re-exported from its home, stages/types.py.

The interface (`Assembler`, `Step`, `StepParams`, `Done`, `Wait`, `WakeOn`, the specs and the
context) lives in stages/types.py, which imports no Redis, Celery or thread code; plugins
written against `stages.base` keep importing the same names from here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property

import httpx
import redis

from deployer.settings import Settings
from deployer.state import targets
from stages import probe
from stages.discovery import Resolver, resolver_for
from stages.types import (
    Assembler,
    ConfigError,
    Done,
    StageSpec,
    Step,
    StepParams,
    StepResult,
    StepSpec,
    TaskRuntimeContext,
    TenantConfig,
    Wait,
    WakeOn,
)


@dataclass
class StepEnv:
    """What steps may touch; built once per worker process and shared."""

    settings: Settings
    target: redis.Redis
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("deployer.steps"))

    @property
    def same_server(self) -> bool:
        return self.settings.target_url == self.settings.state_url

    def fence_key(self, tenant_id: str) -> str:
        """The key whose value must equal the run's token for a config write to land."""
        return targets.fence_key(tenant_id, self.same_server)

    @cached_property
    def discovery(self) -> Resolver:
        return resolver_for(self.settings, self.http)

    @cached_property
    def http(self) -> httpx.Client:
        # Every request through it is bounded in wall-clock time (stages/probe.py).
        return probe.new_client(self.settings.http_timeout_seconds)


#: The interface, re-exported from stages/types.py (plugins written for 0.1 import it here).
__all__ = [
    "Assembler",
    "ConfigError",
    "Done",
    "StageSpec",
    "Step",
    "StepEnv",
    "StepParams",
    "StepResult",
    "StepSpec",
    "TaskRuntimeContext",
    "TenantConfig",
    "Wait",
    "WakeOn",
]
