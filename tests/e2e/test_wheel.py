"""The built wheel installs into a fresh virtualenv and imports everything from outside the repo.

setuptools' automatic discovery silently drops a top-level package named `tasks`; this
test is what notices if the explicit package list ever loses it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_wheel_installs_and_imports_outside_the_repo(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
    )
    wheel = next(dist.glob("deployer-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # Reuse this environment's dependencies (a plain path, so its editable-install hook of
    # the repo is not activated); only the project itself comes from the wheel.
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    Path(site, "deps.pth").write_text(deps + "\n")
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
        check=True,
        cwd=tmp_path,
    )
    probe = (
        "import celeryconfig, flowerconfig, tasks, deployer.cli, stages.factory, sys;"
        "from stages import registry;"
        f"assert tasks.__file__.startswith({str(venv)!r}), tasks.__file__;"
        "assert 'deployer.run_stage' in tasks.app.tasks;"
        "print(sorted(a.service for a in registry.assemblers()));"
        "from deployer.cli.demo import demo_plan; print(demo_plan()['planId']);"
        # the dashboard's templates and static files ship in the wheel
        "import deployer.web.app as web; web.create_app();"
        "assert (web.HERE / 'templates' / 'plan.html').is_file(), web.HERE;"
        "assert (web.HERE / 'static' / 'app.js').is_file(), web.HERE;"
        # the archive's migrations ship in the wheel and run from it
        "from deployer.archive import Archive; from deployer.archive.db import engine_for;"
        "a = Archive(engine_for('sqlite:///' + __import__('tempfile').mkdtemp() + '/a.db'));"
        "assert a.counts() == {'plans': 0, 'tasks': 0, 'events': 0}, a.counts()"
    )
    out = subprocess.run(
        [str(py), "-c", probe],
        check=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert "blue-green-gateway" in out.stdout
    cli = subprocess.run(
        [str(venv / "bin" / "deployer"), "schema"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"tenants"' in cli.stdout
