"""portal: tell one portal instance the tenant switches deploy unit (docs/contracts.md §3.2)."""

from __future__ import annotations

from deployer.models import StageSpec, StepSpec, TenantConfig
from deployer.settings import Settings
from stages.assemblers.common import post_json_params
from stages.types import Assembler

PATH = "/icc-agent-portal/inner/v1/notify/bgSwitch"


class PortalAssembler(Assembler):
    service = "portal"
    order = 20
    requires = ("deployUnitName",)

    def supports(self, config: TenantConfig) -> bool:
        return config.deploy_unit_name is not None

    def build(
        self, config: TenantConfig, replacing: TenantConfig | None, settings: Settings
    ) -> StageSpec:
        params = post_json_params(
            self.service,
            PATH,
            config,
            {"tenantId": config.tenant_id, "targetDeployUnit": config.deploy_unit_name},
            timestampField="timestamp",
            expectJson={"$.code": "0"},
        )
        return StageSpec(
            name=self.service,
            service=self.service,
            steps=[StepSpec(type="http-request", name="portal-notify", params=params)],
        )
