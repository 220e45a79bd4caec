"""asbc-gateway: switch the tenant's called numbers to its trunk group (docs/contracts.md §3.1).

Success needs HTTP 2xx, `code == 0` and an empty `failList`. The scheme is http unless
DEPLOYER_SCHEMES says otherwise (the Java call alone used https).
"""

from __future__ import annotations

from deployer.models import StageSpec, StepSpec, TenantConfig
from deployer.settings import Settings
from stages.assemblers.common import post_json_params
from stages.types import Assembler, ConfigError

PATH = "/api/sbc/traffic-switch"


def called_numbers(rules: str) -> list[str]:
    return [n.strip() for n in rules.split(",") if n.strip()]


class AsbcGatewayAssembler(Assembler):
    service = "asbc-gateway"
    order = 10
    requires = ("trunkGroup", "calledNumberRules")

    def supports(self, config: TenantConfig) -> bool:
        return config.media_routing

    def build(
        self, config: TenantConfig, replacing: TenantConfig | None, settings: Settings
    ) -> StageSpec:
        numbers = called_numbers(config.called_number_rules or "")
        if not numbers or not config.trunk_group:
            raise ConfigError("calledNumberRules", "needs at least one number and a trunkGroup")
        params = post_json_params(
            self.service,
            PATH,
            config,
            {"calledNumberMatch": numbers, "targetTrunkGroupName": config.trunk_group},
            expectJson={"$.code": 0},
            expectEmpty=["$.data.failList"],
        )
        return StageSpec(
            name=self.service,
            service=self.service,
            steps=[StepSpec(type="http-request", name="asbc-traffic-switch", params=params)],
        )
