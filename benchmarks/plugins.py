"""Benchmark-only assemblers and steps, visible only to benchmark processes.

They are registered through entry points of a tiny distribution (`deployer-bench`) whose
metadata `install_dist_info` writes into a private folder that the benchmark puts on the
PYTHONPATH of its workers and of itself. Production installs never see them, and their
`supports` only accepts a tenant that names them in `serviceNames`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from deployer.context import TaskRuntimeContext
from deployer.models import StageSpec, StepSpec, TenantConfig
from deployer.settings import Settings
from stages.base import Assembler, Done, Step, StepEnv, StepParams, StepResult, Wait

STAGES = 4


class _Bench(Assembler):
    kind: ClassVar[str]
    index: ClassVar[int]

    def supports(self, config: TenantConfig) -> bool:
        return config.service_names is not None and self.service in config.service_names

    def build(
        self, config: TenantConfig, replacing: TenantConfig | None, settings: Settings
    ) -> StageSpec:
        if self.kind == "noop":
            steps = [StepSpec(type="noop", name=f"noop-{self.index}")]
        elif self.kind == "wait":
            steps = [StepSpec(type="bench-wait", name="wait", params={"polls": 3})]
        else:
            field = f"bench-{self.index}"
            value = {"tenantId": config.tenant_id, "targetUnitName": config.deploy_unit_name}
            steps = [
                StepSpec(
                    type="key-value-write",
                    name=f"kv-{self.index}",
                    params={"field": field, "value": value},
                ),
                StepSpec(type="broadcast", name=f"bc-{self.index}", params={"appName": field}),
            ]
        return StageSpec(name=self.service, service=self.service, steps=steps)


def _assembler(kind: str, i: int) -> type[_Bench]:
    name = f"bench-{kind}-{i}"
    return type(
        f"Bench_{kind}_{i}",
        (_Bench,),
        {"service": name, "order": 1000 + i, "kind": kind, "index": i},
    )


NOOP = [_assembler("noop", i) for i in range(1, STAGES + 1)]
KV = [_assembler("kv", i) for i in range(1, STAGES + 1)]
WAIT = [_assembler("wait", 1)]
for _cls in (*NOOP, *KV, *WAIT):
    globals()[_cls.__name__] = _cls


class BenchWaitParams(StepParams):
    polls: int = 3


class BenchWait(Step[BenchWaitParams]):
    """A simulated fleet poll: one Redis GET, then Wait until `polls` polls were made."""

    type_name = "bench-wait"
    Params = BenchWaitParams

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        env.target.get(f"bench:instance:{ctx.tenant_id}")
        if ctx.attempt + 1 >= self.parse(step).polls:
            return Done()
        interval = float(os.environ.get("BENCH_POLL_INTERVAL", "1.0"))
        return Wait(countdown=interval, progress={"polls": ctx.attempt + 1})


def services(kind: str) -> list[str]:
    return [c.service for c in {"noop": NOOP, "kv": KV, "wait": WAIT}[kind]]


def install_dist_info(folder: Path) -> Path:
    """Write the entry-point metadata of `deployer-bench` into `folder`; return it."""
    dist = folder / "deployer_bench-0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: deployer-bench\nVersion: 0.0\n")
    lines = ["[deployer.assemblers]"]
    for cls in (*NOOP, *KV, *WAIT):
        lines.append(f"{cls.service} = benchmarks.plugins:{cls.__name__}")
    lines += ["", "[deployer.steps]", "bench-wait = benchmarks.plugins:BenchWait", ""]
    (dist / "entry_points.txt").write_text("\n".join(lines))
    return folder
