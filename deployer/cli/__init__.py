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
    import redis
    from redis.sentinel import MasterNotFoundError

    from deployer.cli.app import Exit, err
    from deployer.errors import Code, SettingsInvalid
    from deployer.settings import get_settings

    try:
        app()
    except SettingsInvalid as exc:  # settings that cannot work: one line, nothing started
        err.print(exc.line(), soft_wrap=True, markup=False, highlight=False)
        sys.exit(Exit.REFUSED)
    except MasterNotFoundError:  # sentinels that do not answer, or know no such master
        # (a ConnectionError too: it must come first)
        master = get_settings().sentinel_master
        err.print(
            f"refused {Code.SENTINEL_MASTER_UNKNOWN}: no sentinel answers for master "
            f"{master!r} (DEPLOYER_SENTINEL_MASTER; sentinels in the sentinel:// URL)",
            soft_wrap=True, markup=False, highlight=False,
        )  # fmt: skip
        sys.exit(Exit.REFUSED)
    except redis.ConnectionError as exc:  # a TLS Redis refusing this client: one line
        from deployer.redis_client import tls_refusal

        refused = tls_refusal(exc)
        if refused is None:
            raise
        err.print(refused.line(), soft_wrap=True, markup=False, highlight=False)
        sys.exit(Exit.REFUSED)


__all__ = ["app", "main"]
