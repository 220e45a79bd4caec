"""A simulated service fleet: real HTTP servers on loopback and real pub/sub.

One HTTP server per configured instance (`host:port`, port 0 = any free port). Each
instance of a Redis-configured service (blue-green-gateway, ob-service) subscribes to
the topic, re-reads the tenant's hash when its field is announced, and reports the
version at the health path once `delay` seconds have passed. ASBC and portal instances
answer their POST endpoints (docs/contracts.md §3.1, §3.2). Faults are chosen per tenant-id
prefix (`Behaviour`), so one fleet serves many tests and plans at once.

The fleet also counts what it observes: polls, and how many tenants were told "not yet"
at the same moment (`stats()`), which proves waiting does not hold worker processes.
"""

from __future__ import annotations

import heapq
import json
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis

from deployer.settings import Settings
from deployer.state import targets

log = logging.getLogger("deployer.fleet")

#: The Redis hash field each service reads and the broadcast `appName` it listens for.
SERVICE_FIELDS = {"blue-green-gateway": "icc-bg-gateway", "ob-service": "ob-campaign"}
PORTAL_PATH = "/icc-agent-portal/inner/v1/notify/bgSwitch"
ASBC_PATH = "/api/sbc/traffic-switch"
#: How long a "hang" fault holds a request (the client's timeout should be shorter).
HANG_SECONDS = 30.0
#: The length a slow-loris answer announces (one byte per `trickle` seconds).
TRICKLE_BYTES = 4096
#: Idle keep-alive connections are closed after this many seconds.
IDLE_SECONDS = 10.0


@dataclass(frozen=True)
class Behaviour:
    """How instances treat the tenants a rule covers."""

    delay: float = 0.0  # seconds from reading a new version to reporting it
    after_polls: int = 0  # ... and not before this many polls have asked for it
    never: bool = False  # never report a new version
    status: int | None = None  # answer every request with this HTTP status
    hang: bool = False  # hold every request past the client's timeout
    lose_broadcast: bool = False  # ignore pub/sub; re-read the hash on every poll
    only: frozenset[str] | None = None  # converge only on these instances (host:port)
    reject: bool = False  # portal/ASBC answer a business error
    trickle: float = 0.0  # send headers, then one body byte every `trickle` s, never ending
    answer_bytes: int = 0  # answer every request with a body of this many bytes
    ack: bool = True  # publish an ack when the version becomes reportable (fleet acks on)

    def acks(self) -> bool:
        """Whether an instance under this rule acks: a healthy one does; one that never
        converges, hangs, errs, misbehaves or never hears the broadcast does not."""
        sick = self.hang or self.status is not None or self.trickle > 0 or self.answer_bytes
        return self.ack and not (self.never or self.lose_broadcast or sick)


@dataclass
class _View:
    """What one instance knows of one tenant."""

    visible: Any = None
    pending: Any = None
    pending_since: float = 0.0
    pending_polls: int = 0
    loaded: bool = False
    ready_at: float = 0.0  # wall clock from which the pending version may be reported


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that leaves mid-answer (a bounded probe) is expected, not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Instance:
    def __init__(self, fleet: Fleet, service: str, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.fleet, self.service = fleet, service
        self.field = SERVICE_FIELDS.get(service)
        self.views: dict[str, _View] = {}
        self.lock = threading.Lock()
        #: A fault of the instance itself (every tenant), set by `Fleet.behave_instance`.
        self.rule: Behaviour | None = None
        self.hits = 0
        self.server = _Server((host or "127.0.0.1", int(port)), _handler_for(self))
        self.server.daemon_threads = True
        self.address = f"{host or '127.0.0.1'}:{self.server.server_address[1]}"

    def refresh(self, tenant: str) -> None:
        """Read the tenant's hash as the real service would, and schedule the new version."""
        key = targets.config_hash(self.fleet.key_prefix, tenant)
        data, meta = self.fleet.redis.hmget(key, [self.field or "metadata", "metadata"])
        version = None
        if data is not None and meta is not None:
            try:
                version = json.loads(meta).get("version")
            except (ValueError, AttributeError):
                version = None
        with self.lock:
            view = self.views.setdefault(tenant, _View())
            view.loaded = True
            if version == view.visible:
                view.pending = None
            elif version != view.pending:
                view.pending, view.pending_polls = version, 0
                view.pending_since = time.monotonic()
                delay = self.fleet.behaviour_for(tenant).delay
                view.ready_at = time.time() + delay
                self.fleet.schedule_ack(self, tenant, version, view.pending_since + delay)

    def ack_due(self, tenant: str, version: Any) -> bool:
        """At its ready time: whether this instance may report `version` now without a poll
        (still the version it read, and its rule lets it converge and ack)."""
        rule = self.rule or self.fleet.behaviour_for(tenant)
        if not rule.acks() or rule.after_polls > 0:
            return False
        if rule.only is not None and self.address not in rule.only:
            return False
        with self.lock:
            view = self.views.get(tenant)
            return view is not None and version in (view.pending, view.visible)

    def fault_rule(self, tenant: str) -> Behaviour:
        """The rule a request for `tenant` meets here (the instance's own fault first);
        counts the request."""
        with self.lock:
            self.hits += 1
        return self.rule or self.fleet.behaviour_for(tenant)

    def version_of(self, tenant: str) -> tuple[Any, bool]:
        """(version reported now, whether a newer one is still pending)."""
        rule = self.fleet.behaviour_for(tenant)
        with self.lock:
            known = tenant in self.views and self.views[tenant].loaded
        if rule.lose_broadcast or not known:
            self.refresh(tenant)
        # The rule is read now, not when the version was read: changing a tenant's
        # behaviour (e.g. lifting `never`) takes effect on the next poll.
        converges = not rule.never and (rule.only is None or self.address in rule.only)
        with self.lock:
            view = self.views[tenant]
            view.pending_polls += 1
            if (
                view.pending is not None
                and converges
                and time.monotonic() >= view.pending_since + rule.delay
                and view.pending_polls >= rule.after_polls
            ):
                view.visible, view.pending = view.pending, None
                if rule.after_polls > 0:  # reportable only now, at this poll: ack it now
                    self.fleet.schedule_ack(self, tenant, view.visible, 0.0, polled=True)
            return view.visible, view.pending is not None

    def listen(self, stop: threading.Event, ready: threading.Event) -> None:
        """Follow the broadcast topic; a lost connection (a Redis failover) is subscribed
        again, and what the instance knows is re-read, as a service's Redis client does:
        a broadcast sent while it was away is not missed for good."""
        if self.field is None:
            ready.set()
            return
        lost = False
        while not stop.is_set():
            pubsub = self.fleet.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.fleet.topic)
                pubsub.get_message(timeout=1.0)  # the subscription confirmation
                ready.set()
                if lost:
                    log.warning("fleet instance %s subscribed again", self.address)
                    self.refresh_known()
                while not stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message and message.get("type") == "message":
                        self._on_message(message["data"])
            except (redis.ConnectionError, redis.TimeoutError):
                if not stop.is_set():
                    if not lost:
                        log.warning("fleet instance %s lost its pub/sub connection", self.address)
                    lost = True
                    stop.wait(0.5)
            finally:
                pubsub.close()

    def refresh_known(self) -> None:
        with self.lock:
            known = [t for t, view in self.views.items() if view.loaded]
        for tenant in known:
            try:
                self.refresh(tenant)
            except redis.RedisError:
                return  # the next reconnect tries again

    def _on_message(self, data: str) -> None:
        try:
            msg = json.loads(data)
            tenant, app_name = str(msg["tenantId"]), msg.get("appName")
        except (ValueError, KeyError, TypeError):
            return
        if app_name != self.field:
            return
        if not self.fleet.behaviour_for(tenant).lose_broadcast:
            self.refresh(tenant)
            self.fleet.count_broadcast(tenant, self.address)


def _handler_for(instance: Instance) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = IDLE_SECONDS
        # One segment per reply, sent at once: headers and body written separately would
        # meet Nagle + delayed ACK and cost ~40 ms per keep-alive request.
        wbufsize = 64 * 1024
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def _reply(self, status: int, body: Any) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _fault(self, tenant: str) -> bool:
            rule = instance.fault_rule(tenant)
            if _misbehave(self, instance.fleet.stopping, rule):
                return True
            if rule.status is not None:
                self._reply(rule.status, {"error": "injected fault", "status": rule.status})
                return True
            return False

        def do_GET(self) -> None:  # noqa: N802
            tenant = instance.fleet.tenant_in(self.path)
            if tenant is None:
                self._reply(404, {"error": "no tenant in path"})
                return
            if self._fault(tenant):
                return
            version, pending = instance.version_of(tenant)
            instance.fleet.count_poll(tenant, instance.address, pending)
            self._reply(200, {"tenantId": tenant, "version": version})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except ValueError:
                self._reply(400, {"error": "body is not JSON"})
                return
            tenant = self.headers.get("X-Tenant-Id") or (
                body.get("tenantId") if isinstance(body, dict) else None
            )
            path = urlsplit(self.path).path
            instance.fleet.record(instance.service, instance.address, path, body, tenant)
            if self._fault(str(tenant or "")):
                return
            self._reply(*_post_answer(instance, path, body, str(tenant or "")))

    return Handler


def _misbehave(handler: BaseHTTPRequestHandler, stopping: threading.Event, rule: Behaviour) -> bool:
    """Hang, or answer as a slow-loris (`trickle`) or hugely (`answer_bytes`), until the
    client leaves or the fleet stops; False when the rule asks for none of these."""
    if not (rule.hang or rule.trickle > 0 or rule.answer_bytes > 0):
        return False
    handler.close_connection = True
    if rule.hang:
        stopping.wait(HANG_SECONDS)
        return True
    size = rule.answer_bytes or TRICKLE_BYTES
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(size))
    handler.end_headers()
    chunk = b" " if rule.trickle > 0 else b" " * 65536
    sent = 0
    try:
        handler.wfile.flush()
        while sent < size and not stopping.is_set():
            if rule.trickle > 0 and stopping.wait(rule.trickle):
                break
            piece = chunk[: size - sent]
            handler.wfile.write(piece)
            handler.wfile.flush()
            sent += len(piece)
    except OSError:  # the client gave up: what a bounded client does
        pass
    return True


def _post_answer(instance: Instance, path: str, body: Any, tenant: str) -> tuple[int, Any]:
    reject = instance.fleet.behaviour_for(tenant).reject
    if path == PORTAL_PATH and instance.service == "portal":
        return 200, {"code": "1" if reject else "0", "msg": "rejected" if reject else "success"}
    if path == ASBC_PATH and instance.service == "asbc-gateway":
        return 200, _asbc_answer(body, reject)
    return 404, {"error": f"no endpoint {path}"}


def _asbc_answer(body: Any, reject: bool) -> dict[str, Any]:
    numbers = body.get("calledNumberMatch", []) if isinstance(body, dict) else []
    trunk = body.get("targetTrunkGroupName") if isinstance(body, dict) else None
    items = [
        {"code": 1 if reject else 0, "msg": "rejected" if reject else "ok",
         "calledNumberMatch": n, "targetTrunkGroupName": trunk}
        for n in numbers
    ]  # fmt: skip
    data = {"successList": [] if reject else items, "failList": items if reject else []}
    return {"code": 0, "msg": "ok", "data": data}


class Fleet:
    """Context manager: starts every instance's server and listener, stops them on exit."""

    def __init__(
        self,
        instances: dict[str, list[str]],
        redis_url: str,
        key_prefix: str,
        topic: str,
        verify_path: str = "/actuator/bg-sdk/{tenantId}",
        default: Behaviour | None = None,
        acks: bool = False,
        ack_channel: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        from deployer.redis_client import connect  # any URL form (Sentinel, TLS, ACL)

        # Settings (Sentinel master, TLS files) read afresh when not given: never the cached
        # get_settings(), which a caller may be about to change (DEPLOYER_INSTANCES).
        self.redis = connect(
            redis_url, settings or Settings(), socket_timeout=10, socket_connect_timeout=5
        )
        self.key_prefix, self.topic = key_prefix, topic
        #: Instances publish acks (docs/contracts.md §2.1) on this channel when on.
        self.acks, self.ack_channel = acks, ack_channel or f"{topic}:ack"
        self._ack_due: list[tuple[float, int, Instance, str, Any]] = []
        self._ack_wake = threading.Condition()
        self._ack_seq = 0
        self._acks_sent: dict[str, int] = {}
        self.rules: dict[str, Behaviour] = {"": default or Behaviour()}
        pattern = re.escape(verify_path).replace(r"\{tenantId\}", r"(?P<tenant>[A-Za-z0-9_.\-]+)")
        self._health = re.compile(pattern)  # used with fullmatch: no trailing newline
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._waiting: dict[str, set[str]] = {}
        self._waiting_by_rule: dict[str, int] = {}
        self._waiting_rule: dict[str, str] = {}
        self._max_waiting: dict[str, int] = {}
        self._polls: dict[str, int] = {}
        self._broadcasts: dict[tuple[str, str], int] = {}
        self._requests: list[dict[str, Any]] = []
        self._threads: list[threading.Thread] = []
        self.instances: list[Instance] = []
        for service, addresses in instances.items():
            for address in addresses:
                try:
                    self.instances.append(Instance(self, service, address))
                except OSError as exc:  # a taken port: say which, and release the others
                    for inst in self.instances:
                        inst.server.server_close()
                    self.redis.close()
                    raise OSError(exc.errno, f"{address} ({service}): {exc.strerror}") from exc

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        default: Behaviour | None = None,
        acks: bool | None = None,
        instances: dict[str, list[str]] | None = None,
    ) -> Fleet:
        """The fleet of `settings` (its instances, or `instances` when given)."""
        return cls(
            settings.instances if instances is None else instances,
            settings.target_url,
            settings.key_prefix,
            settings.pubsub_topic,
            settings.verify_path,
            default or Behaviour(delay=settings.fleet_delay_seconds),
            acks=settings.fleet_acks if acks is None else acks,
            ack_channel=settings.acks_channel,
            settings=settings,
        )

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> Fleet:
        readies = []
        for inst in self.instances:
            ready = threading.Event()
            readies.append(ready)
            for target, args in (
                (inst.server.serve_forever, (0.2,)),
                (inst.listen, (self.stopping, ready)),
            ):
                t = threading.Thread(
                    target=target, args=args, daemon=True, name=f"fleet-{inst.address}"
                )
                t.start()
                self._threads.append(t)
        if self.acks:
            t = threading.Thread(target=self._publish_acks, daemon=True, name="fleet-acks")
            t.start()
            self._threads.append(t)
        for ready in readies:
            ready.wait(10)
        return self

    def stop(self) -> None:
        self.stopping.set()
        with self._ack_wake:
            self._ack_wake.notify_all()
        for inst in self.instances:
            inst.server.shutdown()
            inst.server.server_close()
        for t in self._threads:
            t.join(5)
        self.redis.close()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- acks (the push path: docs/contracts.md §2.1) ----------------------------------
    def schedule_ack(
        self, inst: Instance, tenant: str, version: Any, at: float, polled: bool = False
    ) -> None:
        """Publish `inst`'s ack for `version` at monotonic time `at` (if it may then)."""
        if not self.acks:
            return
        with self._ack_wake:
            self._ack_seq += 1
            entry = (at, self._ack_seq, inst, tenant, (version, polled))
            heapq.heappush(self._ack_due, entry)
            self._ack_wake.notify()

    def _publish_acks(self) -> None:
        while not self.stopping.is_set():
            with self._ack_wake:
                now = time.monotonic()
                if not self._ack_due or self._ack_due[0][0] > now:
                    wait = self._ack_due[0][0] - now if self._ack_due else 1.0
                    self._ack_wake.wait(min(wait, 1.0))
                    continue
                _, _, inst, tenant, (version, polled) = heapq.heappop(self._ack_due)
            if polled or inst.ack_due(tenant, version):
                self.publish_ack(inst, tenant, version)

    def publish_ack(self, inst: Instance, tenant: str, version: Any) -> None:
        message = {
            "tenantId": tenant, "service": inst.service, "instance": inst.address,
            "version": version,
        }  # fmt: skip
        try:
            self.redis.publish(self.ack_channel, json.dumps(message))
        except redis.RedisError as exc:
            log.warning("fleet instance %s could not publish its ack: %s", inst.address, exc)
            return
        rule = self.rule_of(tenant)
        with self._lock:
            self._acks_sent[rule] = self._acks_sent.get(rule, 0) + 1

    # -- configuration ----------------------------------------------------------------
    def behave(self, prefix: str, behaviour: Behaviour) -> None:
        """Apply `behaviour` to tenants whose id starts with `prefix` (longest prefix wins)."""
        with self._lock:
            self.rules[prefix] = behaviour

    def behave_instance(self, address: str, behaviour: Behaviour | None) -> None:
        """Give one instance a fault of its own, whatever the tenant (None: lift it)."""
        for inst in self.instances:
            if inst.address == address:
                inst.rule = behaviour

    def hits(self, address: str) -> int:
        """Requests the instance has received (any path, any tenant)."""
        return sum(inst.hits for inst in self.instances if inst.address == address)

    def ready_at(self, tenant: str) -> float | None:
        """Wall clock from which every instance that read a new version of the tenant may
        report it (None: none has read one)."""
        times = []
        for inst in self.instances:
            with inst.lock:
                view = inst.views.get(tenant)
                if view is not None and view.ready_at:
                    times.append(view.ready_at)
        return max(times) if times else None

    def rule_of(self, tenant: str) -> str:
        return max((p for p in self.rules if tenant.startswith(p)), key=len)

    def behaviour_for(self, tenant: str) -> Behaviour:
        return self.rules[self.rule_of(tenant)]

    @property
    def addresses(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for inst in self.instances:
            out.setdefault(inst.service, []).append(inst.address)
        return out

    def describe(self) -> str:
        served = ", ".join(f"{s} {' '.join(a)}" for s, a in self.addresses.items())
        d = self.rules[""]
        acks = f", acks on {self.ack_channel}" if self.acks else ""
        return f"{served} (delay {d.delay:g}s, topic {self.topic}{acks})"

    def tenant_in(self, path: str) -> str | None:
        parts = urlsplit(path)
        match = self._health.fullmatch(parts.path)
        if match:
            return match["tenant"]
        query = parse_qs(parts.query).get("tenantId")
        if query:
            return query[0]
        last = parts.path.rstrip("/").rpartition("/")[2]
        return last or None

    # -- observation ------------------------------------------------------------------
    def count_broadcast(self, tenant: str, address: str) -> None:
        with self._lock:
            key = (tenant, address)
            self._broadcasts[key] = self._broadcasts.get(key, 0) + 1

    def count_poll(self, tenant: str, address: str, pending: bool) -> None:
        rule = self.rule_of(tenant)
        with self._lock:
            self._polls[rule] = self._polls.get(rule, 0) + 1
            waiting = self._waiting.get(tenant)
            if pending:
                if waiting is None:
                    waiting = self._waiting[tenant] = set()
                    self._waiting_rule[tenant] = rule
                    now = self._waiting_by_rule.get(rule, 0) + 1
                    self._waiting_by_rule[rule] = now
                    self._max_waiting[rule] = max(self._max_waiting.get(rule, 0), now)
                waiting.add(address)
            elif waiting is not None:
                waiting.discard(address)
                if not waiting:
                    del self._waiting[tenant]
                    # under the rule it began waiting under (the tenant's rule may have changed)
                    began = self._waiting_rule.pop(tenant, rule)
                    self._waiting_by_rule[began] = self._waiting_by_rule.get(began, 1) - 1

    def record(self, service: str, address: str, path: str, body: Any, tenant: str | None) -> None:
        with self._lock:
            self._requests.append(
                {
                    "service": service,
                    "instance": address,
                    "path": path,
                    "body": body,
                    "tenantId": tenant,
                }
            )

    def requests(self, tenant: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self._requests if tenant is None or r["tenantId"] == tenant]

    def broadcasts(self, tenant: str, address: str | None = None) -> int:
        """Broadcasts for `tenant` received and acted on, summed over instances (or by one
        instance); lost ones are not counted."""
        with self._lock:
            if address is not None:
                return self._broadcasts.get((tenant, address), 0)
            return sum(n for (t, _), n in self._broadcasts.items() if t == tenant)

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Per rule: polls answered, tenants told "not yet" now and at most at once."""
        with self._lock:
            return {
                "acks": self._acks_sent.get(prefix, 0),
                "polls": self._polls.get(prefix, 0),
                "waiting": self._waiting_by_rule.get(prefix, 0),
                "max_waiting": self._max_waiting.get(prefix, 0),
            }
