"""Tracing is off unless the standard OTEL_* variables ask, and then costs no import."""

from __future__ import annotations

import json
import subprocess
import sys

from deployer import tracing


def test_the_standard_variables_switch_tracing_on_and_off() -> None:
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none",
                               "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})  # fmt: skip
    assert not tracing.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})


def test_off_a_worker_loads_no_tracing_sdk_and_contexts_carry_no_trace() -> None:
    code = (
        "import os, json, sys\n"
        "for k in list(os.environ):\n"
        "    if k.startswith('OTEL_'): del os.environ[k]\n"
        "import tasks.app, tasks.stage\n"
        "from deployer.planner import initial_context\n"
        "from deployer.models import RunKind, TenantConfig\n"
        "c = TenantConfig.model_validate({'tenantId': 't', 'planVersion': 3})\n"
        "ctx = initial_context('p', 'task-p:t', c, RunKind.FORWARD, 'r', 1)\n"
        "print(json.dumps([ctx.to_wire()['additionalData'],"
        " sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace',"
        " 'opentelemetry.instrumentation', 'opentelemetry.exporter')))]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data, sdk = json.loads(out.stdout.splitlines()[-1])
    assert data == {"planVersion": 3}
    assert sdk == []
