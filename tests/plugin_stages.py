"""Test-only assemblers registered through entry points (`installed`), as a plugin would be.

`typo-service` builds one KeyValueWrite step whose parameters come from the tenant's
`deployUnitName`: "ok" gives valid ones, "misspelt" a parameter KeyValueWrite does not have
(`deleteField` for `deleteFields`), "mistyped" a field that is not a string. Only a tenant
naming `typo-service` in `serviceNames` gets the stage.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stages import registry
from stages.types import Assembler, Settings, StageSpec, StepSpec, TenantConfig

SERVICE = "typo-service"
FIELD = "typo-field"

PARAMS: dict[str, dict[str, Any]] = {
    "ok": {"field": FIELD, "value": {"ok": True}},
    "misspelt": {"field": FIELD, "value": {"ok": True}, "deleteField": ["other"]},
    "mistyped": {"field": 5, "value": {"ok": True}},
}


class TypoAssembler(Assembler):
    service = SERVICE
    order = 900

    def supports(self, config: TenantConfig) -> bool:
        return config.service_names is not None and SERVICE in config.service_names

    def build(
        self, config: TenantConfig, replacing: TenantConfig | None, settings: Settings
    ) -> StageSpec:
        params = PARAMS[config.deploy_unit_name or "ok"]
        step = StepSpec(type="key-value-write", name="typo-write", params=params)
        return StageSpec(name=SERVICE, service=SERVICE, steps=[step])


@contextmanager
def installed(folder: Path) -> Iterator[None]:
    """`TypoAssembler` registered (entry-point metadata in `folder`, on sys.path) for this
    process while the block runs; the registry forgets it afterwards."""
    dist = folder / "deployer_typo_plugin-0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: deployer-typo-plugin\nVersion: 0.0\n"
    )
    (dist / "entry_points.txt").write_text(
        f"[deployer.stages]\n{SERVICE} = tests.plugin_stages:TypoAssembler\n"
    )
    sys.path.append(str(folder))
    registry.assemblers.cache_clear()
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        registry.assemblers.cache_clear()
