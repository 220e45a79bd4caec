"""Redis URLs of the broker, state and target (deployer/redisurl.py) and the settings errors
they raise at start: one stable code, one line, never a password, never a guessed server."""

from __future__ import annotations

import pytest

from deployer import brokers, redisurl
from deployer.errors import Code, SettingsInvalid
from deployer.settings import Settings, redact_url


@pytest.fixture(autouse=True)
def _no_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings here come from arguments only, not the session's environment."""
    for name in ("BROKER_URL", "REDIS_URL", "TARGET_REDIS_URL", "RESULT_BACKEND"):
        monkeypatch.delenv(f"DEPLOYER_{name}", raising=False)


def test_sentinel_form_of_celery() -> None:
    url = redisurl.parse("sentinel://app:s3cret@10.0.0.1:26379/2;sentinel://10.0.0.2;")
    assert url.sentinel and url.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379))
    assert (url.db, url.username, url.password) == (2, "app", "s3cret")
    assert "s3cret" not in repr(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("sentinel://a:1;redis://b:2", "every address"),
        ("sentinel://", "no host"),
        ("sentinel://a:1/1;sentinel://b:2/2", "two databases"),
        ("sentinel://a:port", "not valid"),
        ("redis://h:1/x", "must be a number"),
        ("http://h:1", "not a Redis URL"),
        ("127.0.0.1:6379", "no scheme"),
        ("redis:///0", "needs a host"),
    ],
)
def test_bad_urls_are_one_clear_refusal(url: str, why: str) -> None:
    with pytest.raises(SettingsInvalid) as caught:
        redisurl.parse(url, "DEPLOYER_REDIS_URL")
    assert caught.value.code == Code.REDIS_URL_INVALID
    assert why in caught.value.message and "DEPLOYER_REDIS_URL" in caught.value.message
    assert "\n" not in caught.value.line()


def test_acl_and_tls_urls() -> None:
    acl = redisurl.parse("redis://deployer:pw@127.0.0.1:6380/3")
    assert (acl.username, acl.password, acl.db, acl.tls) == ("deployer", "pw", 3, False)
    assert redisurl.parse("rediss://h:6380").tls


def test_no_silent_default_state_store() -> None:
    """A RabbitMQ broker and no DEPLOYER_REDIS_URL: refused, not redis://127.0.0.1:6379/0."""
    with pytest.raises(SettingsInvalid) as caught:
        Settings(broker_url="amqp://u:pw@rabbit:5672//")
    assert caught.value.code == Code.STATE_URL_REQUIRED
    assert "pw" not in caught.value.message
    ok = Settings(broker_url="amqp://rabbit//", redis_url="redis://r:6379/1")
    assert ok.state_url == ok.target_url == "redis://r:6379/1"


def test_state_and_target_follow_a_sentinel_broker() -> None:
    s = Settings(broker_url="sentinel://a:26379;sentinel://b:26379")
    assert s.state_url == s.target_url == s.broker_url
    assert s.wait_replicas == 1
    assert Settings(broker_url="redis://h:1/0").wait_replicas == 0


def test_every_role_is_checked_at_start() -> None:
    for field in ("broker_url", "redis_url", "target_redis_url"):
        with pytest.raises(SettingsInvalid):
            Settings(**{field: "sentinel://a:1;redis://b:2"})  # type: ignore[arg-type]
    with pytest.raises(SettingsInvalid) as caught:
        Settings(broker_url="sentinel://a:1", sentinel_master=" ")
    assert caught.value.code == Code.SENTINEL_MASTER_UNKNOWN


def test_tls_files_are_checked(tmp_path: object) -> None:
    with pytest.raises(SettingsInvalid) as caught:
        Settings(broker_url="rediss://h:1", redis_tls_ca="/nonexistent/ca.pem")
    assert caught.value.code == Code.REDIS_TLS_INVALID and "DEPLOYER_REDIS_TLS_CA" in str(
        caught.value
    )
    with pytest.raises(SettingsInvalid):
        Settings(broker_url="rediss://h:1", redis_tls_cert="/etc/hostname")


def test_celery_gets_the_sentinel_master_and_tls() -> None:
    s = Settings(
        broker_url="sentinel://a:1;sentinel://b:2",
        sentinel_master="deploys",
        sentinel_password="sentinel-pw",  # type: ignore[arg-type]
        result_backend="sentinel://a:1;sentinel://b:2/1",
    )
    conf = brokers.celery_conf(s)
    options = conf["broker_transport_options"]
    assert options["master_name"] == "deploys"
    assert options["sentinel_kwargs"]["password"] == "sentinel-pw"
    assert conf["result_backend_transport_options"]["master_name"] == "deploys"
    assert "broker_use_ssl" not in conf
    tls = brokers.celery_conf(Settings(broker_url="rediss://h:1/0"))
    assert tls["broker_use_ssl"]["ssl_cert_reqs"] is not None


def test_guard_covers_the_sentinel_transport() -> None:
    from kombu.transport import redis as kombu_redis

    from tasks.transport import GuardedChannel, GuardedSentinelTransport

    channel = GuardedSentinelTransport.Channel
    assert issubclass(channel, GuardedChannel) and issubclass(channel, kombu_redis.SentinelChannel)
    assert GuardedSentinelTransport.default_port == 26379


def test_redact_every_sentinel_address() -> None:
    shown = redact_url("sentinel://u:p1@a:1/0;sentinel://:p2@b:2")
    assert "p1" not in shown and "p2" not in shown and shown.count("***") == 2
