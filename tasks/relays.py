"""What a message may make the worker send on: nothing, except deployer's own stage chain.

Celery publishes what a message embeds when its task ends: the next signature of `chain`,
every `callbacks` (link) or `errbacks` (link_error) signature, a chord's callback. A valid
`deployer.pause` carrying `chain: [billing.refund_all on queue billing] x 51` made the worker
publish 51 messages to a queue its sender may have no right to write to, and
`celery.chord_unlock` onto `celery`: the broker's per-queue permissions walked around.

So, before Celery sees a message (tasks/guard.py):

- a control task (`deployer.submit_plan`, `pause`, ...) embeds nothing: no chain, no
  callbacks, no errbacks, no chord;
- a stage (`deployer.run_stage`) may carry only what deployer's chains carry
  (tasks/chains.py: `build_chain`): a `chain` of `deployer.run_stage` signatures, each with
  one argument (the stage spec) and no options but the stages queue, its Flower label and
  its priority; no callbacks, errbacks or chord;
- no message names a group (deployer sends none; Celery counts group members on it).

Anything else is refused whole (dead-lettered), never run with its relays stripped: the
sender meant something deployer does not do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celeryconfig import STAGES_QUEUE

RUN_STAGE = "deployer.run_stage"
#: A tenant's chain is one signature per stage; no assembler set builds this many.
MAX_CHAIN = 64
_SIGNATURE_KEYS = frozenset(
    {"task", "args", "kwargs", "options", "subtask_type", "immutable", "chord_size"}
)
_STAGE_OPTIONS = frozenset({"queue", "shadow", "priority"})
_MAX_SHOWN = 80


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _is_mapping(value: Any) -> bool:
    """A decoded JSON object is a dict: tested by exact type first (the ABC check costs
    ~1 µs, several per signature of every stage message)."""
    return type(value) is dict or isinstance(value, Mapping)


def _empty(value: Any) -> bool:
    return value is None or value == [] or value == ()


def _stage_options(options: Any) -> str | None:
    if options is None:
        return None
    if not _is_mapping(options):
        return "options are not an object"
    unknown = set(options) - _STAGE_OPTIONS
    if unknown:
        return f"options {_shown(sorted(map(str, unknown)))} are not deployer's"
    if options.get("queue") not in (None, STAGES_QUEUE):
        return f"queue {_shown(options.get('queue'))} is not {STAGES_QUEUE}"
    shadow = options.get("shadow")
    if shadow is not None and not isinstance(shadow, str):
        return "shadow is not a string"
    priority = options.get("priority")
    if priority is not None and (type(priority) is not int or not 0 <= priority <= 255):
        return "priority is not an integer 0..255"
    return None


def _stage_signature(sig: Any) -> str | None:
    """Why `sig` is not a signature deployer's own chains carry, or None."""
    if not _is_mapping(sig):
        return "is not a signature"
    if sig.get("task") != RUN_STAGE:
        return f"names task {_shown(sig.get('task'))}"
    unknown = set(sig) - _SIGNATURE_KEYS
    if unknown:
        return f"has keys {_shown(sorted(map(str, unknown)))}"
    if sig.get("subtask_type") is not None or sig.get("chord_size") is not None:
        return "is a group or chord"
    args, kwargs = sig.get("args", []), sig.get("kwargs", {})
    if not isinstance(args, list | tuple) or len(args) != 1 or not _is_mapping(args[0]):
        return "arguments are not one stage"
    if kwargs not in (None, {}):
        return "has keyword arguments"
    immutable = sig.get("immutable", False)
    if not isinstance(immutable, bool):
        return "immutable is not a boolean"
    return _stage_options(sig.get("options"))


def relay_problem(
    task: str, embed: Mapping[str, Any] | None, headers: Mapping[str, Any]
) -> str | None:
    """Why a message of `task` with this `embed` (protocol 2) must not run, or None."""
    if headers.get("group") is not None or not _empty(headers.get("groups")):
        return "names a group (deployer sends none)"
    embed = embed or {}
    for name in ("callbacks", "errbacks"):
        if not _empty(embed.get(name)):
            return f"embed.{name} refused: deployer links no task"
    if embed.get("chord") is not None:
        return "embed.chord refused (deployer uses no chords)"
    chain = embed.get("chain")
    if _empty(chain):
        return None
    if task != RUN_STAGE:
        return f"embed.chain refused: {task} runs no chain"
    if not isinstance(chain, list) or len(chain) > MAX_CHAIN:
        return f"embed.chain is not a list of at most {MAX_CHAIN} stages"
    for i, sig in enumerate(chain):
        problem = _stage_signature(sig)
        if problem:
            return f"embed.chain[{i}] {problem}"
    return None
