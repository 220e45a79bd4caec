"""What a receiver gets: the JSON body (or Slack's `text`), from an outbox event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from deployer.redact import redact

#: Task statuses whose counts a body carries (the plan's `c:<STATUS>` at the event).
COUNTED = ("PENDING", "RUNNING", "PAUSED", "COMPLETED", "FAILED", "CANCELLED", "ROLLING_BACK",
           "ROLLED_BACK", "ROLLBACK_FAILED", "SUPERSEDED")  # fmt: skip
#: Event fields that are the body's own keys (the rest go under `details`).
_OWN = {"type", "planId", "wave", "ts", "id", "reason", "by"}


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def body(event: dict[str, str], public_url: str) -> dict[str, Any]:
    """The JSON body of one notification (docs/operators.md "Notifications"), from the
    outbox event's fields."""
    plan_id = event.get("planId", "")
    ts = _int(event.get("ts")) or _int(event.get("id", "").split("-")[0]) or 0
    counts = {s: _int(event.get(f"plan.c:{s}")) or 0 for s in COUNTED}
    wave = _int(event.get("wave"))
    if wave is None:
        wave = _int(event.get("plan.wave"))
    out: dict[str, Any] = {
        "id": event.get("id", ""),
        "event": event.get("type", ""),
        "planId": plan_id,
        "wave": wave,
        "waves": _int(event.get("plan.waves")),
        "at": datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "status": event.get("plan.status"),
        "total": _int(event.get("plan.total")) or 0,
        "counts": {k: v for k, v in counts.items() if v},
        "stopReason": event.get("plan.stopReason") or None,
        "reason": event.get("reason") or None,
        "by": event.get("by") or None,
        "link": f"{public_url.rstrip('/')}/plans/{quote(plan_id, safe='')}" if plan_id else None,
        "details": {
            k: v for k, v in event.items()
            if k not in _OWN and not k.startswith(("plan.", "a:", "ok:"))
        },
    }  # fmt: skip
    return redact(out)  # type: ignore[no-any-return]


_HEADLINE = {
    "WAVE_AWAITING_APPROVAL": "wave {wave} waits for approval",
    "BUDGET_EXCEEDED": "failure budget exceeded",
    "PLAN_AUTO_PAUSED": "paused by its failure budget",
    "PLAN_AUTO_ROLLBACK": "rolling back: failure budget exceeded",
    "PLAN_COMPLETED": "completed",
    "PLAN_FAILED": "failed",
    "PLAN_CANCELLED": "cancelled",
    "PLAN_ROLLED_BACK": "rolled back",
    "GATE_REFUSED": "gate refused wave {wave}",
}


def slack(b: dict[str, Any]) -> dict[str, Any]:
    """Slack's incoming-webhook body: one `text` (mrkdwn) saying what happened and where."""
    headline = _HEADLINE.get(b["event"], b["event"]).format(wave=b["wave"])
    counts = ", ".join(f"{n} {s.lower()}" for s, n in b["counts"].items())
    lines = [f"*deployer* plan `{b['planId']}`: {headline}"]
    if counts:
        lines.append(f"{counts} of {b['total']}")
    if b["stopReason"] or b["reason"]:
        lines.append(f"reason: {b['stopReason'] or b['reason']}")
    if b["link"]:
        lines.append(f"<{b['link']}|open the plan>")
    return {"text": "\n".join(lines)}
