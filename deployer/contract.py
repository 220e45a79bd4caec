"""The versioned public contract: its version number and the exported JSON Schema of a plan.

Version 1 is the wire format of DESIGN.md and docs/contracts.md: the plan (`planId`,
`maxConcurrency`, `strategy`, `tenants`), the context a chain carries, the task names and
the answers (deployer/public.py). A plan may say `contractVersion: 1`; one without it is
version 1. The schema of a version-1 plan is kept in `docs/schema/plan.v1.json`, generated
from the models that validate plans; a test fails when the models and the file disagree.
Regenerate it with `make schema` (`python -m deployer.contract --write`). The deprecation
rule is in docs/architecture.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: The contract this deployer speaks. Messages without a version are version 1.
CONTRACT_VERSION = 1
#: The exported schema of a plan, relative to the repository root.
SCHEMA_FILE = Path("docs/schema") / f"plan.v{CONTRACT_VERSION}.json"


def plan_schema() -> dict[str, Any]:
    """The JSON Schema of a plan of this contract version (what `deployer schema` prints,
    without the deployment's own tenant limit)."""
    from deployer.intake import plan_schema as schema_of_plan

    return schema_of_plan(None)


def schema_text() -> str:
    """The schema as written to SCHEMA_FILE: sorted keys, two-space indent, a final newline."""
    return json.dumps(plan_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """Print the schema; with `--write [PATH]` write it (default SCHEMA_FILE)."""
    if argv and argv[0] == "--write":
        path = Path(argv[1]) if len(argv) > 1 else SCHEMA_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(schema_text(), encoding="utf-8")
        print(f"wrote {path}")
        return 0
    sys.stdout.write(schema_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
