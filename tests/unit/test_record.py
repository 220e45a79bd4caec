"""TaskRecord owns the task hash: round trip, lenient reading, and no other module reading
a task-hash field by its string name."""

from __future__ import annotations

import ast
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.models import RunKind, TaskStatus
from deployer.state.record import Cursor, Field, TaskRecord

ROOT = Path(__file__).resolve().parents[2]
FULL = {
    "taskId": "task-p:t1", "planId": "p", "tenantId": "t1", "status": "RUNNING",
    "config": '{"tenantId":"t1"}', "runId": "r-1", "runKind": "RETRY", "run": "{}",
    "ctx": "{}", "checkpoint": "-1", "totalStages": "3", "stageIndex": "1",
    "stageName": "portal", "retryCount": "1", "redeliveries": "0", "token": "r-1.2",
    "gen": "2", "slot": "1", "cursor": "r-1.2:1:0:3", "control": "PAUSE", "controlBy": "ops",
    "controlReason": "why", "force": "1", "wave": "0", "progress": "1/2 instances at v20",
    "worker": "w@h:12:ab/13", "lastError": "boom", "failedStage": "portal",
    "failureCode": "STEP_FAILED",
    "cancelledBy": "ops", "supersededBy": "task-q:t1", "createdAt": "1764000000000",
    "updatedAt": "1764000000001", "dispatchedAt": "1764000000002",
    "startedAt": "1764000000003", "endedAt": "1764000000004",
    "stageStartedAt": "1764000000005",
}  # fmt: skip


def test_every_field_is_in_the_full_example():
    assert set(FULL) == {f.value for f in Field}


def test_a_full_hash_round_trips_and_is_typed():
    record = TaskRecord.from_hash(FULL)
    assert record.to_hash() == FULL
    assert TaskRecord.from_hash(record.to_hash()) == record
    assert record.status is TaskStatus.RUNNING and record.run_kind is RunKind.RETRY
    assert record.cursor == Cursor("r-1.2", 1, 0, 3) and record.cursor.at == (1, 0, 3)
    assert (record.checkpoint, record.stage_index, record.created_at) == (-1, 1, 1764000000000)


def test_missing_fields_read_as_absent():
    record = TaskRecord.from_hash({"status": "PENDING", "lastError": None})
    assert record.task_id == "" and record.last_error == ""
    assert record.checkpoint is None and record.last_checkpoint == -1
    assert record.cursor is None and record.run_model() is None and record.context() is None
    assert not record.started
    assert record.to_hash() == {"status": "PENDING"}
    assert record.stored([Field.STATUS, Field.LAST_ERROR]) == {
        "status": "PENDING",
        "lastError": None,
    }


def test_unknown_fields_are_ignored():
    assert TaskRecord.from_hash({"prevConfig": "{}", "x": "1"}) == TaskRecord()


@pytest.mark.parametrize(
    "field, text, attr",
    [
        ("status", "RUNNIN", "status"),
        ("runKind", "SIDEWAYS", "run_kind"),
        ("checkpoint", "two", "checkpoint"),
        ("stageIndex", "", "stage_index"),
        ("createdAt", "1.5e12", "created_at"),
        ("cursor", "no-colons", "cursor"),
        ("cursor", "tok:1:x:0", "cursor"),
    ],
)
def test_a_corrupt_value_reads_as_absent_never_raises(field, text, attr):
    assert getattr(TaskRecord.from_hash({field: text}), attr) is None


def test_a_corrupt_json_field_raises_a_value_error_only_when_parsed():
    record = TaskRecord.from_hash({"run": "not json", "ctx": "[]", "config": "{"})
    for parse in (record.run_model, record.context, record.tenant_config):
        with pytest.raises(ValueError):
            parse()


def test_to_hash_of_chosen_fields_writes_empty_text_to_clear_it():
    update = TaskRecord(checkpoint=-1, retry_count=0, last_error="")
    fields = [Field.CHECKPOINT, Field.RETRY_COUNT, Field.LAST_ERROR]
    assert update.to_hash(fields) == {"checkpoint": "-1", "retryCount": "0", "lastError": ""}
    assert update.to_hash() == {"checkpoint": "-1", "retryCount": "0"}


@given(st.dictionaries(st.sampled_from([f.value for f in Field]), st.text(max_size=20)))
def test_any_hash_reads_without_raising(raw):
    record = TaskRecord.from_hash(raw)
    assert TaskRecord.from_hash(record.to_hash()) == record


def test_every_field_name_is_one_the_lua_scripts_use():
    lua = "".join(
        p.read_text() for p in resources.files("deployer.state").joinpath("lua").iterdir()
        if p.name.endswith(".lua")
    )  # fmt: skip
    assert [f.value for f in Field if f"'{f.value}'" not in lua] == []


# ---- nobody else reads the task hash by name ------------------------------------------

FIELDS = {f.value for f in Field}
HASH_COMMANDS = {"hget", "hmget", "hgetall", "hset", "hsetnx", "hdel", "hincrby", "hexists",
                 "hkeys", "hvals", "hstrlen", "hlen"}  # fmt: skip
READS = {"get", "pop", "setdefault"}
#: Names a task hash was (and would again be) bound to: a read of a task-hash field name
#: through one of them is a read of the hash behind TaskRecord's back.
TASKISH = {"task", "tasks", "raw", "row", "rows", "rec", "record", "stored", "found", "first",
           "t", "hash", "fields"}  # fmt: skip
#: Reads of dicts that share a name with a task-hash field but are not the hash, each
#: (module, receiver, key): the plan hash, view JSON rows, plan files, event fields.
NOT_THE_HASH = {
    ("deployer/cli/plans.py", "t", "tenantId"),  # view / diff JSON rows
    ("deployer/cli/plans.py", "t", "status"),
    ("deployer/cli/plans.py", "t", "stageName"),
    ("deployer/cli/plans.py", "t", "progress"),
    ("deployer/cli/plans.py", "row", "tenantId"),  # dry-run rows
    ("deployer/cli/commands.py", "fields", "planId"),  # event stream fields
    ("deployer/cli/commands.py", "fields", "tenantId"),
    ("deployer/web/history.py", "fields", "planId"),
    ("deployer/web/history.py", "fields", "tenantId"),
    ("deployer/retention.py", "fields", "tenantId"),  # event stream fields
    # rows of the archive's tables and of the history read model (deployer/archive)
    ("deployer/archive/views.py", "row", "status"),
    ("deployer/archive/views.py", "row", "config"),
    ("deployer/archive/views.py", "row", "taskId"),
    ("deployer/archive/views.py", "fields", "control"),  # the archived plan hash
    ("deployer/cli/history.py", "t", "planId"),
    ("deployer/cli/history.py", "t", "status"),
    ("deployer/cli/history.py", "t", "runKind"),
    ("deployer/cli/history.py", "t", "startedAt"),
    ("deployer/cli/history.py", "t", "endedAt"),
}


def _is_task_key(node: ast.expr) -> bool:
    """`keys.task(...)`, `keys.TASK...`: an expression naming a task hash key."""
    text = ast.unparse(node)
    return "keys.task(" in text or "keys.TASK" in text


def violations(source: str, module: str) -> list[str]:
    """Where `source` reads or writes a task-hash field by its string name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            args = node.args
            if node.func.attr in HASH_COMMANDS and args and _is_task_key(args[0]):
                if module != "deployer/state/store.py":
                    found.append(f"{module}:{node.lineno}: {node.func.attr} on a task key")
                found += [
                    f"{module}:{node.lineno}: field {a.value!r} by name"
                    for a in ast.walk(node)
                    if isinstance(a, ast.Constant) and a.value in FIELDS
                ]
                continue
            if node.func.attr not in READS or not args:
                continue
            key, receiver = args[0], node.func.value
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            key, receiver = node.slice, node.value
        else:
            continue
        if not (isinstance(key, ast.Constant) and key.value in FIELDS):
            continue
        name = ast.unparse(receiver)
        taskish = name in TASKISH or "task" in name.lower()
        if taskish and (module, name, key.value) not in NOT_THE_HASH:
            found.append(f"{module}:{node.lineno}: {name}[{key.value!r}]")
    return found


def test_the_check_catches_the_old_reads():
    old = """
task["status"]
raw.get("lastError")
self.store.get_tasks_raw(ids, FIELDS)[0]["tenantId"]
r.hget(keys.task(task_id), "planId")
pipe.hmget(keys.task(task_id), ["cursor", "stageName"])
"""
    lines = {int(v.split(":")[1]) for v in violations(old, "deployer/views.py")}
    assert lines == {2, 3, 4, 5, 6}
    assert violations("self.r.hgetall(keys.task(task_id))", "deployer/state/store.py") == []
    assert violations('plan.get("status"); event["taskId"]', "deployer/views.py") == []


def test_no_module_reads_a_task_hash_field_by_name():
    """The task hash's field names live in deployer/state/record.py (and the Lua scripts): every
    other module reads a task through Store.get_task/get_tasks and TaskRecord."""
    sources = [p for d in ("deployer", "tasks", "stages") for p in (ROOT / d).rglob("*.py")]
    assert len(sources) > 50
    found = []
    for path in sources:
        module = path.relative_to(ROOT).as_posix()
        if module != "deployer/state/record.py":
            found += violations(path.read_text(), module)
    assert found == []
