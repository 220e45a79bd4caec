"""A command loads what it uses: the CLI's start-up cost is its imports (benchmarks/
observability.py), so what each path imports is checked here, in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("redis", "pydantic", "pydantic_settings", "celery", "kombu", "httpx", "fastapi",
         "stages", "tasks", "opentelemetry", "sqlalchemy", "alembic")  # fmt: skip


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return {name.split(".")[0] for name in json.loads(out.splitlines()[-1])}


def test_importing_the_cli_loads_no_client_library() -> None:
    loaded = loaded_after("import deployer.cli")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_help_of_every_command_loads_no_client_library() -> None:
    code = (
        "from typer.testing import CliRunner\n"
        "from deployer.cli import app\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0"
    )
    loaded = loaded_after(code)
    assert not loaded & {"redis", "celery", "kombu", "httpx", "stages", "tasks", "sqlalchemy",
                         "alembic"}  # fmt: skip


def test_status_loads_neither_celery_nor_http_nor_the_stages() -> None:
    # no such server: the command fails to connect, after importing what it uses
    code = (
        "import os\n"
        "os.environ['DEPLOYER_BROKER_URL'] = 'redis://127.0.0.1:1/0'\n"
        "from typer.testing import CliRunner\n"
        "from deployer.cli import app\n"
        "CliRunner().invoke(app, ['status', 'p'])"
    )
    loaded = loaded_after(code)
    assert "redis" in loaded  # it did get as far as reading
    assert not loaded & {"celery", "kombu", "httpx", "stages", "tasks", "fastapi"}
