"""Assemblers registered under the deprecated entry-point group `deployer.stages` still load,
with a warning; one name in both groups is refused."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.models import StageSpec, TenantConfig
from deployer.settings import Settings
from stages import registry
from stages.base import Assembler


class LegacyAssembler(Assembler):
    """A plugin built for 0.1: registered in the old group."""

    service = "legacy-service"
    order = 99

    def supports(self, config: TenantConfig) -> bool:
        return False

    def build(
        self, config: TenantConfig, replacing: TenantConfig | None, settings: Settings
    ) -> StageSpec:
        raise NotImplementedError


def plugin(folder: Path, group: str, name: str) -> None:
    """A distribution in `folder` with one assembler entry point `name` in `group`."""
    dist = folder / "legacy_plugin-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: legacy-plugin\nVersion: 0.0\n")
    target = f"{__name__}:LegacyAssembler"
    (dist / "entry_points.txt").write_text(f"[{group}]\n{name} = {target}\n")


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    registry.assemblers.cache_clear()
    yield
    registry.assemblers.cache_clear()  # the next test loads the installed entry points only


def test_an_assembler_in_the_old_group_still_loads_with_a_warning(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_registry: None,
) -> None:
    plugin(tmp_path, registry.OLD_ASSEMBLER_GROUP, "legacy-service")
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="deployer.registry"):
        services = [a.service for a in registry.assemblers()]
    assert services[-1] == "legacy-service"
    assert {"asbc-gateway", "portal", "blue-green-gateway", "ob-service"} <= set(services)
    assert "deprecated group deployer.stages" in caplog.text
    assert "register it in deployer.assemblers" in caplog.text


def test_one_name_in_both_groups_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: None
) -> None:
    plugin(tmp_path, registry.OLD_ASSEMBLER_GROUP, "portal")  # deployer's own portal
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(registry.RegistryError, match="two entry points named 'portal'"):
        registry.assemblers()
