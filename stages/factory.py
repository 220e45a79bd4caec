"""The stage factory: the ordered stages a TenantConfig needs, forward or rollback alike."""

from __future__ import annotations

from pydantic import ValidationError

from deployer.models import StageSpec, TenantConfig
from deployer.settings import Settings
from stages import registry
from stages.discovery import namespace_refusal
from stages.types import ConfigError


def known_services() -> list[str]:
    return [a.service for a in registry.assemblers()]


def build_stages(
    config: TenantConfig,
    replacing: TenantConfig | None,
    settings: Settings,
    *,
    named_required: bool = False,
) -> list[StageSpec]:
    """Every supported service in service order, narrowed by `serviceNames` when given.

    The Java system ignored `serviceNames`; here it selects (never reorders) services,
    and a name no assembler knows is an error rather than a silent skip. With
    `named_required` (a forward run: the caller's own config), a named service the config
    lacks the fields for is an error too, naming the first missing field; a rollback's
    snapshot legitimately lacks services it never had, and skips them.
    """
    wanted = config.service_names
    if wanted is not None:
        unknown = sorted(set(wanted) - set(known_services()))
        if unknown:
            raise ConfigError(
                "serviceNames", f"unknown services {unknown}; known: {known_services()}"
            )
    if named_required and wanted is not None:
        for a in registry.assemblers():
            if a.service in wanted and not a.supports(config):
                raise ConfigError(
                    a.missing(config),
                    f"is required by {a.service}, which serviceNames names",
                )
    refused = namespace_refusal(settings, config.nacos_name_space)
    if refused is not None:
        raise ConfigError("nacosNameSpace", refused)
    specs = [
        a.build(config, replacing, settings)
        for a in registry.assemblers()
        if (wanted is None or a.service in wanted) and a.supports(config)
    ]
    for spec in specs:
        check_steps(spec)
    if not specs:
        raise ConfigError(
            "tenantId",
            "no stage applies to this tenant (give networkEndpoints with deployUnitName, "
            "a deploy unit, or trunkGroup with calledNumberRules)",
        )
    return specs


def check_steps(stage: StageSpec) -> None:
    """Every step of `stage` is of a registered type and its parameters are what that type
    declares (`Step.Params`), else ConfigError naming the first wrong parameter: checked
    when the stages are built (at submit), not found out when the step runs."""
    for spec in stage.steps:
        try:
            step = registry.step(spec.type)
        except registry.RegistryError as exc:
            raise ConfigError(f"stages[{stage.name}].steps[{spec.name}].type", str(exc)) from None
        try:
            step.parse(spec)
        except ValidationError as exc:
            err = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in err["loc"])
            field = f"stages[{stage.name}].steps[{spec.name}].params" + (
                f".{where}" if where else ""
            )
            reason = (
                f"not a parameter of step type {spec.type}"
                if err["type"] == "extra_forbidden"
                else f"{err['msg']} (step type {spec.type})"
            )
            raise ConfigError(field, reason) from None


def forward_stages(config: TenantConfig, settings: Settings) -> list[StageSpec]:
    """The stages of a config replacing its own snapshot (`previousConfig`): a forward run."""
    return build_stages(config, config.previous_config, settings, named_required=True)
