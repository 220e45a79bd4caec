"""ob-service: the `ob-campaign` field + metadata, broadcast and verify (one RedisAck step).

The Java stage also had an `ob-agent-polling` step whose condition was never wired (it
always passed, docs/contracts.md §3.4); it is left out rather than faked.
"""

from __future__ import annotations

import time

from deployer.models import StageSpec, StepSpec, TenantConfig
from deployer.settings import Settings
from stages.assemblers.common import unit_value, verify_params
from stages.types import Assembler

FIELD = "ob-campaign"


class ObServiceAssembler(Assembler):
    service = "ob-service"
    order = 40
    requires = ("deployUnitName",)
    volatile = {FIELD: ("$.timestamp",)}  # set when each run is planned

    def supports(self, config: TenantConfig) -> bool:
        return config.deploy_unit_name is not None

    def build(
        self, config: TenantConfig, replacing: TenantConfig | None, settings: Settings
    ) -> StageSpec:
        value = {
            **unit_value(config, replacing),
            # Fixed when the run is planned, so a retry writes exactly the same value.
            "timestamp": int(time.time() * 1000),
        }
        params = {"field": FIELD, "value": value, "appName": FIELD}
        return StageSpec(
            name=self.service,
            service=self.service,
            steps=[
                StepSpec(
                    type="redis-ack",
                    name="ob-redis-ack",
                    params={**params, **verify_params(self.service, config)},
                )
            ],
        )
