"""A real RabbitMQ for the tests: a vhost of their own on the local server, or a private node.

Found: a server listening on 127.0.0.1:5672 that `rabbitmqctl` administers gets a fresh
vhost (`deployer-test-<hex>`, permissions for guest, the dead-letter policy operators set:
docs/operators.md), deleted after the session; nobody else's queues are touched.
Started: else, when the RabbitMQ server is installed, a private node (own name, ports and
data directory in a temporary folder), stopped after the session.
Neither: the tests that need it are skipped, with the reason printed in the summary.

`DEPLOYER_TEST_AMQP_URL` names a server to use as is instead (its vhost is purged: use a
dedicated one); the dead-letter policy must then be set on it already.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from tests.helpers import free_port, wait_for

QUEUES = ("deployer.control", "deployer.stages")
DEAD_LETTERS = "deployer.dead-letters"
POLICY = json.dumps({"dead-letter-exchange": DEAD_LETTERS})
POLICY_PATTERN = r"^deployer\.(control|stages)$"
_SBIN = Path("/usr/lib/rabbitmq/bin")


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidate = _SBIN / name
    return str(candidate) if candidate.exists() else None


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@dataclass
class Rabbit:
    """One usable RabbitMQ: where it is, and how to administer it."""

    port: int
    vhost: str
    ctl: list[str] = field(default_factory=list)  # rabbitmqctl, with its node options
    env: dict[str, str] = field(default_factory=dict)
    own_vhost: bool = True
    proc: subprocess.Popen[bytes] | None = None
    home: Path | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{quote(self.vhost, safe='')}"

    def rabbitmqctl(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [*self.ctl, *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()[-500:]}")
        return done.stdout

    def prepare_vhost(self) -> None:
        self.rabbitmqctl("add_vhost", self.vhost)
        self.rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        self.rabbitmqctl(
            "set_policy", "-p", self.vhost, "deployer-dead-letters", POLICY_PATTERN, POLICY,
            "--apply-to", "queues",
        )  # fmt: skip

    def connection(self) -> Any:
        import amqp

        conn = amqp.Connection(
            f"127.0.0.1:{self.port}",
            userid="guest",
            password="guest",
            virtual_host=self.vhost,
            confirm_publish=True,
            connect_timeout=10,
        )
        conn.connect()
        return conn

    def ready(self, queue: str) -> int:
        """Messages ready in `queue` (0 when it does not exist)."""
        import amqp

        conn = self.connection()
        try:
            ch = conn.channel()
            try:
                return int(ch.queue_declare(queue, passive=True).message_count)
            except amqp.exceptions.NotFound:
                return 0
        finally:
            conn.close()

    def unsettled(self, *queues: str) -> dict[str, tuple[int, int]]:
        """(ready, unacknowledged) per queue, as the broker counts them (every queue of the
        vhost when none is named)."""
        out = self.rabbitmqctl(
            "list_queues", "-p", self.vhost, "name", "messages_ready",
            "messages_unacknowledged", "--quiet", "--no-table-headers",
        )  # fmt: skip
        counts = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and (not queues or parts[0] in queues):
                counts[parts[0]] = (int(parts[1]), int(parts[2]))
        return counts

    def purge(self, *queues: str) -> None:
        import amqp

        conn = self.connection()
        try:
            ch = conn.channel()
            for queue in queues:
                try:
                    ch.queue_purge(queue)
                except amqp.exceptions.NotFound:
                    ch = conn.channel()
        finally:
            conn.close()

    def stop(self) -> None:
        if self.own_vhost:
            self.rabbitmqctl("delete_vhost", self.vhost, check=False)
        if self.proc is not None:
            self.rabbitmqctl("stop", check=False)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)


def _vhost() -> str:
    return f"deployer-test-{uuid.uuid4().hex[:10]}"


def _given(url: str) -> Rabbit | str:
    parts = urlsplit(url)
    rabbit = Rabbit(parts.port or 5672, parts.path.lstrip("/") or "/", own_vhost=False)
    try:
        rabbit.purge(*QUEUES, DEAD_LETTERS)
    except Exception as exc:  # noqa: BLE001 - any reason it cannot be used is the answer
        return f"DEPLOYER_TEST_AMQP_URL does not answer ({type(exc).__name__}: {exc})"
    return rabbit


def _local() -> Rabbit | str:
    """The server on 127.0.0.1:5672, with a vhost of the tests' own, or why not."""
    ctl = _tool("rabbitmqctl")
    if ctl is None:
        return "a server listens on 127.0.0.1:5672 but rabbitmqctl is not installed"
    rabbit = Rabbit(5672, _vhost(), [ctl])
    try:
        rabbit.prepare_vhost()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"rabbitmqctl cannot administer the server on 127.0.0.1:5672 ({exc})"
    return rabbit


def _private() -> Rabbit | str:
    """A private node on free ports, in a temporary folder, or why not."""
    server, ctl = _tool("rabbitmq-server"), _tool("rabbitmqctl")
    if server is None or ctl is None:
        return "no RabbitMQ on 127.0.0.1:5672 and rabbitmq-server is not installed"
    if Path(server).parent != _SBIN and (_SBIN / "rabbitmq-server").exists():
        server = str(_SBIN / "rabbitmq-server")  # Debian's wrapper would `su rabbitmq`
        ctl = str(_SBIN / "rabbitmqctl")
    home = Path(tempfile.mkdtemp(prefix="deployer-rabbit-"))
    node = f"deployer-test-{uuid.uuid4().hex[:8]}@localhost"
    port = free_port()
    (home / "enabled_plugins").write_text("[].\n")
    (home / "env.conf").write_text("")
    env = {
        "HOME": str(home),
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(free_port()),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_CONF_ENV_FILE": str(home / "env.conf"),
        "RABBITMQ_PID_FILE": str(home / "pid"),
    }
    log = (home / "server.log").open("wb")
    with log:
        proc = subprocess.Popen(
            [server], env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
    rabbit = Rabbit(port, _vhost(), [ctl, "-n", node], env, proc=proc, home=home)
    try:
        wait_for(lambda: _listening(port) or proc.poll() is not None, timeout=60, what="rabbitmq")
        if proc.poll() is not None:
            raise RuntimeError((home / "server.log").read_text(errors="replace")[-500:])
        rabbit.prepare_vhost()
    except (AssertionError, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        rabbit.stop()
        return f"a private RabbitMQ node did not start ({exc})"
    return rabbit


def find_or_start() -> Rabbit | str:
    """A RabbitMQ for this session, or the reason there is none."""
    url = os.environ.get("DEPLOYER_TEST_AMQP_URL")
    if url:
        return _given(url)
    if _listening(5672):
        return _local()
    return _private()


# ---- raw AMQP publishing: any bytes as a message's properties ------------------------


def raw_message(body: bytes, properties: bytes) -> Any:
    """A py-amqp message whose content header carries exactly `properties` (flags and
    values as encoded on the wire), whatever py-amqp's own encoder would write."""
    from amqp.basic_message import Message

    class Raw(Message):  # type: ignore[misc]
        def _serialize_properties(self) -> bytes:
            return properties

    return Raw(body)


class Publisher:
    """Publishes with confirms. A message the broker refuses (it closes the channel or the
    connection, whatever py-amqp then fails to decode of its answer) answers False and the
    publisher reconnects; one not confirmed in time is counted in `uncertain` (False too)."""

    CONFIRM_TIMEOUT = 10.0

    def __init__(self, rabbit: Rabbit) -> None:
        self.rabbit = rabbit
        self.conn: Any = None
        self.channel: Any = None
        self.uncertain = 0

    def _open(self) -> None:
        if self.conn is None:
            self.conn = self.rabbit.connection()
        if self.channel is None or not self.channel.is_open:
            self.channel = self.conn.channel()

    def publish(self, message: Any, queue: str) -> bool:
        self._open()
        try:
            self.channel.basic_publish(
                message, exchange="", routing_key=queue, confirm_timeout=self.CONFIRM_TIMEOUT
            )
            return True
        except TimeoutError:
            self.uncertain += 1
        except Exception:  # noqa: BLE001 - refused by the broker: not taken
            pass
        self.close()
        return False

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - already closed by the broker
                pass
        self.conn = self.channel = None
