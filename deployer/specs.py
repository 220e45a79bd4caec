"""The wire models every layer shares: a run's kind, the stage and step specs an assembler
builds, and their camelCase base model.

Apart from deployer/models.py (the plan and tenant edge models, which re-export these) so that
the run context (deployer/context.py) and the plugin interface (stages/types.py) can import
them without the plan models, and without an import cycle.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class RunKind(StrEnum):
    FORWARD = "FORWARD"
    RETRY = "RETRY"
    ROLLBACK = "ROLLBACK"


class WireModel(BaseModel):
    """camelCase aliases, snake_case names, both accepted on input."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=False
    )

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StepSpec(WireModel):
    """One step of a stage: a registered step type and its JSON parameters."""

    type: str
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class StageSpec(WireModel):
    """One stage = one Celery task; built by an assembler, stored with the run."""

    name: str
    service: str
    steps: list[StepSpec]
