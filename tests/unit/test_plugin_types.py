"""The plugin interface (stages/types.py) stands alone: importing it loads no Redis, Celery,
HTTP client or deployer state code, and the old import paths name the very same classes."""

from __future__ import annotations

import json
import subprocess
import sys

#: What the interface must not drag into a plugin's process (top-level names, plus ours).
FORBIDDEN = ("redis", "celery", "kombu", "httpx", "fastapi", "tasks")
FORBIDDEN_MODULES = (
    "deployer.parking",
    "deployer.state.store",
    "deployer.state.scripts",
    "stages.base",
)


def loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return list(json.loads(out.splitlines()[-1]))


def test_importing_the_plugin_types_loads_no_redis_celery_or_state_code() -> None:
    loaded = loaded_after("import stages.types")
    tops = {name.split(".")[0] for name in loaded}
    assert "stages.types" in loaded  # the probe did import it
    assert not tops & set(FORBIDDEN), sorted(tops & set(FORBIDDEN))
    assert not set(loaded) & set(FORBIDDEN_MODULES), sorted(set(loaded) & set(FORBIDDEN_MODULES))


def test_the_old_import_paths_name_the_same_classes() -> None:
    from deployer import parking
    from stages import base, types

    for name in ("Assembler", "Step", "StepParams", "Done", "Wait", "WakeOn", "StageSpec",
                 "StepSpec", "TaskRuntimeContext", "TenantConfig", "ConfigError"):  # fmt: skip
        assert getattr(base, name) is getattr(types, name), name
    assert parking.WakeOn is types.WakeOn
    assert types.Params is types.StepParams


def test_every_registered_step_and_assembler_is_built_on_the_plugin_types() -> None:
    from stages import registry, types

    assert all(isinstance(a, types.Assembler) for a in registry.assemblers())
    assert all(isinstance(s, types.Step) for s in registry.steps().values())
