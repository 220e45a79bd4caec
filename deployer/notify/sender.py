"""A worker's notifier (a duty of its maintenance loop): claims deliveries and sends them,
one thread per receiver, so a receiver that hangs or fails costs its own deliveries' time
and nothing else (no stage, no other receiver, no other duty of the loop waits on it)."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import redis

from deployer.notify.message import body, slack
from deployer.notify.outbox import Attempt, Delivery, Outbox
from deployer.settings import NotifyReceiver, Settings

log = logging.getLogger("deployer.notify")

#: An answer is read up to this many bytes (a receiver's body is never used).
MAX_ANSWER_BYTES = 64 * 1024


def send(
    client: httpx.Client, receiver: NotifyReceiver, d: Delivery, settings: Settings
) -> Attempt:
    """POST one notification, bounded by the call's deadline (connect, headers and body) and
    the answer cap; 2xx is delivered, anything else (or no answer) failed."""
    from stages.probe import request

    payload = body(d.fields, settings.public_url)
    if receiver.format == "slack":
        payload = slack(payload)
    headers = {k: v.get_secret_value() for k, v in receiver.headers.items()}
    headers.update({
        "Content-Type": "application/json",
        "Idempotency-Key": d.event_id,
        "X-Deployer-Event": d.fields.get("type", ""),
        "X-Deployer-Attempt": str(d.attempt),
    })  # fmt: skip
    answer = request(
        client,
        "POST",
        receiver.url,
        d.receiver,
        settings.notify_timeout_seconds,
        max_bytes=MAX_ANSWER_BYTES,
        json=payload,
        headers=headers,
    )
    if answer.ok:
        return Attempt(d, True, f"HTTP {answer.status}")
    return Attempt(d, False, answer.describe())


class Notifier:
    """`tick`: one claim (fan-out included) for the receivers whose thread is free, their
    batches handed to those threads, each settled when sent (a worker's maintenance loop
    ticks it every `notify_interval_seconds`)."""

    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.settings = settings
        self.receivers = dict(settings.notify)
        self.outbox = Outbox(r, settings)
        self.stopped = threading.Event()
        self.pools = {
            name: ThreadPoolExecutor(1, thread_name_prefix=f"deployer-notify-{name}")
            for name in self.receivers
        }
        self.busy: dict[str, Future[None]] = {}
        from stages.probe import new_client

        self.client = new_client(settings.notify_timeout_seconds)

    def tick(self) -> int:
        ready = [n for n in self.receivers if n not in self.busy or self.busy[n].done()]
        deliveries = self.outbox.claim(self.receivers, ready)
        by_receiver: dict[str, list[Delivery]] = {}
        for d in deliveries:
            by_receiver.setdefault(d.receiver, []).append(d)
        for name, batch in by_receiver.items():
            self.busy[name] = self.pools[name].submit(self._deliver, name, batch)
        return len(deliveries)

    def _deliver(self, name: str, batch: list[Delivery]) -> None:
        attempts = []
        for d in batch:
            if self.stopped.is_set():
                break  # not settled: due again when the claim lapses
            try:
                attempts.append(send(self.client, self.receivers[name], d, self.settings))
            except Exception as exc:  # a bad event must not stop the receiver's queue
                log.exception("notification %s to %s could not be built", d.event_id, name)
                attempts.append(Attempt(d, False, f"{type(exc).__name__}: {exc}"))
        for a in attempts:
            log.log(
                logging.INFO if a.ok else logging.WARNING,
                "notification %s %s to %s (attempt %d): %s",
                a.delivery.fields.get("type", "?"),
                a.delivery.event_id,
                name,
                a.delivery.attempt,
                a.detail,
            )
        try:
            self.outbox.settle(attempts)
        except redis.RedisError as exc:  # due again when the claim lapses: sent again, once more
            log.warning("notifications to %s sent but not settled (%s)", name, exc)

    def stop(self) -> None:
        self.stopped.set()
        for pool in self.pools.values():
            pool.shutdown(wait=False, cancel_futures=True)


def describe(receivers: dict[str, NotifyReceiver]) -> Any:
    """Receivers for a log line: names and event counts, never URLs' secrets or headers."""
    return {name: sorted(r.events) for name, r in receivers.items()}
