"""deploy/ stays true to the code: every file parses, commands are the real entry points,
queues are the real queues, and every DEPLOYER_* variable is a real setting."""

from __future__ import annotations

import configparser
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
QUEUES = "deployer.control,deployer.stages"
WORKER = ["celery", "-A", "tasks", "worker", "-Q", QUEUES]
FLOWER = ["celery", "-A", "tasks", "flower"]
METRICS = ["deployer", "metrics"]
SETTINGS = {f"DEPLOYER_{name.upper()}" for name in Settings.model_fields}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_docs() -> list[dict[str, Any]]:
    return [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in load_all(p)]


def starts_with(command: list[str], entry: list[str]) -> bool:
    """`entry` is the command, with its options in order (other options may follow)."""
    head = entry[:4]
    if command[: len(head)] != head or not all(a in command for a in entry[4:]):
        return False
    return "-Q" not in entry or command[command.index("-Q") + 1] == QUEUES


def deployer_vars(env: dict[str, Any]) -> set[str]:
    return {k for k in env if k.startswith("DEPLOYER_")}


def test_the_real_entry_points_and_queues_are_what_deploy_uses():
    import celeryconfig
    from deployer.cli import app

    assert QUEUES == f"{celeryconfig.CONTROL_QUEUE},{celeryconfig.STAGES_QUEUE}"
    assert "metrics" in {c.name or c.callback.__name__ for c in app.registered_commands}
    import tasks

    assert tasks.app.main == "deployer"  # `-A tasks` finds the app


def test_compose_has_redis_with_aof_scalable_workers_and_flower_with_auth():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "worker", "flower", "metrics"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"

    worker = services["worker"]
    assert starts_with(worker["command"], WORKER)
    assert "%h" in worker["command"][worker["command"].index("-n") + 1]  # distinct node names
    assert "container_name" not in worker and "ports" not in worker  # `--scale worker=N` works
    assert worker["stop_grace_period"].endswith("s")

    flower = services["flower"]
    assert starts_with(flower["command"], FLOWER)
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])
    assert starts_with(services["metrics"]["command"], METRICS)
    for name, svc in services.items():
        env = svc.get("environment") or {}
        assert deployer_vars(env) <= SETTINGS, name


def test_every_kubernetes_object_is_well_formed():
    docs = k8s_docs()
    assert docs
    for d in docs:
        assert d.get("apiVersion") and d.get("kind"), d
        assert d["metadata"].get("name"), d


def _deployment(name: str) -> dict[str, Any]:
    (dep,) = [d for d in k8s_docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    return dep


def test_worker_deployment_shuts_down_gracefully_on_the_real_command():
    dep = _deployment("deployer-worker")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert starts_with(container["command"], WORKER)
    (cm,) = [d for d in k8s_docs() if d["kind"] == "ConfigMap"]
    soft = float(cm["data"]["DEPLOYER_WORKER_SOFT_SHUTDOWN_SECONDS"])
    assert 0 < soft < pod["terminationGracePeriodSeconds"]
    assert deployer_vars(cm["data"]) <= SETTINGS
    assert (
        dep["spec"]["selector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )


def test_flower_deployment_requires_auth_and_runs_the_real_command():
    (container,) = _deployment("deployer-flower")["spec"]["template"]["spec"]["containers"]
    assert starts_with(container["command"], FLOWER)
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["FLOWER_BASIC_AUTH"]["valueFrom"]


def test_keda_scales_the_worker_deployment_on_the_stage_queue_length():
    (so,) = [d for d in k8s_docs() if d["kind"] == "ScaledObject"]
    assert so["apiVersion"].startswith("keda.sh/")
    assert so["spec"]["scaleTargetRef"]["name"] == "deployer-worker"
    lists = {t["metadata"]["listName"] for t in so["spec"]["triggers"] if t["type"] == "redis"}
    # Every list a stage can wait in: kombu's Redis transport keeps one per priority step.
    from kombu.transport.redis import Channel

    from tasks.chains import stage_priority

    stage_lists = {
        f"deployer.stages{Channel.sep}{p}" if p else "deployer.stages"
        for p in {stage_priority(i) or 0 for i in range(4)}
    }
    assert stage_lists <= lists and "deployer.control" in lists
    assert so["spec"]["minReplicaCount"] >= 1 < so["spec"]["maxReplicaCount"]


def _unit(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / name)
    return parser["Service"]


@pytest.mark.parametrize(
    ("unit", "entry"),
    [
        ("deployer-worker@.service", WORKER),
        ("deployer-flower.service", FLOWER),
        ("deployer-metrics.service", METRICS),
    ],
)
def test_systemd_units_run_the_real_entry_points(unit, entry):
    service = _unit(unit)
    command = shlex.split(service["ExecStart"])
    command[0] = Path(command[0]).name
    assert starts_with(command, entry)
    assert service["EnvironmentFile"] == "/etc/deployer/deployer.env"
    if unit.startswith("deployer-worker"):
        assert int(service["TimeoutStopSec"]) > 50 and service["KillSignal"] == "SIGTERM"


def test_systemd_env_file_names_only_real_settings():
    lines = (DEPLOY / "systemd" / "deployer.env").read_text().splitlines()
    names = {ln.split("=", 1)[0] for ln in lines if ln and not ln.startswith("#")}
    assert names and deployer_vars(dict.fromkeys(names)) == names
    assert names <= SETTINGS


def test_the_image_runs_a_worker_by_default():
    cmd = [ln for ln in (DEPLOY / "Dockerfile").read_text().splitlines() if ln.startswith("CMD")]
    assert starts_with(json.loads(cmd[-1][3:]), WORKER)


SERVE = ["deployer", "serve"]


def test_compose_runs_the_api_with_a_required_token_on_loopback():
    api = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["api"]
    assert starts_with(api["command"], SERVE)
    assert api["environment"]["DEPLOYER_API_TOKEN"].startswith("${DEPLOYER_API_TOKEN:?")
    assert all(p.startswith("127.0.0.1:") for p in api["ports"])
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    assert deployer_vars(api["environment"]) <= SETTINGS


def test_api_deployment_probes_healthz_and_takes_its_token_from_a_secret():
    (container,) = _deployment("deployer-api")["spec"]["template"]["spec"]["containers"]
    assert starts_with(container["command"], SERVE)
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz", probe
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["DEPLOYER_API_TOKEN"]["valueFrom"]
    assert deployer_vars(env) <= SETTINGS
    (svc,) = [
        d for d in k8s_docs() if d["kind"] == "Service" and d["metadata"]["name"] == "deployer-api"
    ]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
