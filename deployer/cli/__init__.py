"""The `deployer` command line (typer + rich); each verb family in its own module."""

from __future__ import annotations

from deployer.cli import (  # noqa: F401  (commands)
    commands,
    demo,
    diffs,
    fleet,
    history,
    metrics,
    plans,
    serve,
)
from deployer.cli.app import app


def main() -> None:
    import sys

    from deployer import tracing

    if not tracing.wanted():
        # redis-py imports OpenTelemetry's metrics SDK when it is installed (≈ 0.1 s, a third
        # of `deployer status`); nothing in a CLI process uses it, so without tracing the
        # import is declined (a None entry makes `import` raise ImportError, which redis-py
        # expects when the SDK is absent).
        sys.modules.setdefault("opentelemetry.sdk.metrics", None)  # type: ignore[arg-type]
    app()


__all__ = ["app", "main"]
