"""A TLS Redis that refuses this client is told apart from any other connection error."""

from __future__ import annotations

import pytest
import redis

from deployer.errors import Code
from deployer.redis_client import tls_refusal

ALERT = "Error 1 connecting: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert certificate required"
EOF_AFTER = ("Error 8 while writing to socket. EOF occurred in violation of protocol "
             "(_ssl.c:2427).")  # fmt: skip


def test_the_alert_is_a_refusal_with_or_without_a_certificate(monkeypatch):
    monkeypatch.delenv("DEPLOYER_REDIS_TLS_CERT", raising=False)
    refused = tls_refusal(redis.ConnectionError(ALERT))
    assert refused is not None and refused.code == Code.REDIS_TLS_REFUSED
    assert "DEPLOYER_REDIS_TLS_CERT" in refused.message
    monkeypatch.setenv("DEPLOYER_REDIS_TLS_CERT", "/x/client.crt")
    refused = tls_refusal(redis.ConnectionError(ALERT))
    assert refused is not None and "did not accept" in refused.message


def test_a_close_after_the_handshake_is_a_refusal_only_without_a_certificate(monkeypatch):
    """The server's alert may be lost to a write racing its close: the client sees an EOF."""
    monkeypatch.delenv("DEPLOYER_REDIS_TLS_CERT", raising=False)
    refused = tls_refusal(redis.ConnectionError(EOF_AFTER))
    assert refused is not None and refused.code == Code.REDIS_TLS_REFUSED
    assert "closed the connection after the TLS handshake" in refused.message
    monkeypatch.setenv("DEPLOYER_REDIS_TLS_CERT", "/x/client.crt")
    assert tls_refusal(redis.ConnectionError(EOF_AFTER)) is None


@pytest.mark.parametrize("text", ["Error 111 connecting to 127.0.0.1:1. Connection refused.",
                                  "Timeout reading from socket"])  # fmt: skip
def test_other_errors_are_not_refusals(monkeypatch, text):
    monkeypatch.delenv("DEPLOYER_REDIS_TLS_CERT", raising=False)
    assert tls_refusal(redis.ConnectionError(text)) is None
