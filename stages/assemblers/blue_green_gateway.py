"""blue-green-gateway: route rules into the `icc-bg-gateway` field, broadcast, verify."""

from __future__ import annotations

from deployer.models import StageSpec, StepSpec, TenantConfig
from deployer.settings import Settings
from stages.assemblers.common import unit_names, unit_value, verify_params
from stages.types import Assembler

FIELD = "icc-bg-gateway"

__all__ = ["FIELD", "BlueGreenGatewayAssembler", "unit_names"]


class BlueGreenGatewayAssembler(Assembler):
    service = "blue-green-gateway"
    order = 30
    requires = ("networkEndpoints",)

    def supports(self, config: TenantConfig) -> bool:
        return bool(config.network_endpoints)

    def build(
        self, config: TenantConfig, replacing: TenantConfig | None, settings: Settings
    ) -> StageSpec:
        value = {
            **unit_value(config, replacing),
            "routes": [
                {"id": ep.key, "sourceUri": ep.source_uri, "targetUri": ep.target_uri}
                for ep in config.network_endpoints
            ],
        }
        return StageSpec(
            name=self.service,
            service=self.service,
            steps=[
                StepSpec(
                    type="key-value-write", name="bg-write", params={"field": FIELD, "value": value}
                ),
                StepSpec(type="broadcast", name="bg-broadcast", params={"appName": FIELD}),
                StepSpec(
                    type="health-check",
                    name="bg-verify",
                    params=verify_params(self.service, config),
                ),
            ],
        )
