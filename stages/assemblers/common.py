"""What several assemblers share: unit names and the verification parameters."""

from __future__ import annotations

from typing import Any

from deployer.models import TenantConfig
from stages.types import ConfigError


def unit_names(config: TenantConfig, replacing: TenantConfig | None) -> tuple[str, str]:
    """(sourceUnitName, targetUnitName): the unit replaced, else the target itself."""
    if not config.deploy_unit_name:
        raise ConfigError("deployUnitName", "is required to name the target unit")
    source = (replacing.deploy_unit_name if replacing else None) or config.deploy_unit_name
    return source, config.deploy_unit_name


def unit_value(config: TenantConfig, replacing: TenantConfig | None) -> dict[str, Any]:
    """The head every Redis-configured service's value starts with: tenantId, then the unit
    replaced and the unit applied (docs/contracts.md §2)."""
    source, target = unit_names(config, replacing)
    return {"tenantId": config.tenant_id, "sourceUnitName": source, "targetUnitName": target}


def verify_params(service: str, config: TenantConfig) -> dict[str, Any]:
    """HealthCheck parameters: the service's instances (never a host from the config),
    the tenant's own health path when it names one, its Nacos namespace."""
    params: dict[str, Any] = {"service": service}
    if config.health_check_path:
        params["path"] = config.health_check_path
    if config.nacos_name_space:
        params["namespace"] = config.nacos_name_space
    return params


def post_json_params(
    service: str, path: str, config: TenantConfig, body: dict[str, Any], **expect: Any
) -> dict[str, Any]:
    """HttpRequest parameters of a JSON POST to one (RANDOM) instance of `service`."""
    params: dict[str, Any] = {
        "service": service,
        "method": "POST",
        "path": path,
        "selection": "RANDOM",
        "headers": {"Content-Type": "application/json", "X-Tenant-Id": config.tenant_id},
        "body": body,
        **expect,
    }
    if config.nacos_name_space:
        params["namespace"] = config.nacos_name_space
    return params
