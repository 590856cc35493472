"""Whose file an output is: kosmos writes only over its own results, and only over one task's.

Before the lock, a repair or a write, the main process checks that an existing output is a results file of
kosmos written by the same task, and that it is not one of the run's inputs. Anything else is refused and left
byte for byte as it was, whatever its columns are called.

A file is ours only by what no other writer puts there:

- Parquet: its schema metadata names a kosmos task (`kosmos_cli.task`), as every Parquet file kosmos ever wrote;
- JSONL: its first record has exactly the fields a kosmos record begins with, in kosmos's order and of kosmos's
  types: the common fields, then the task's own (`records.COMMON_FIELDS`, `Task.arrow_fields`), then columns
  carried from a manifest, none with a name of ours. Fields added since the first version (`task`, `decoding`,
  `scores`) may be absent, so outputs of earlier versions (tests/fixtures/legacy-outputs) stay ours. A file
  whose first row merely has `path`, `status` and `caption` (img2dataset's meta.jsonl) is not.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from typing import Any

from .. import tasks
from ..errors import UsageError
from ..tasks.records import ERROR, OK, common_arrow_fields

FIRST_LINE_LIMIT = 1 << 24  # bytes: a first JSONL line longer than this is not a record of ours
TASK_METADATA = b"kosmos_cli.task"  # the Parquet schema metadata naming the task (tasks.base.Task.schema)
ADDED_LATER = frozenset({"task", "decoding", "scores"})  # fields a record written by an earlier version lacks
_TORN_KEY = re.compile(rb'(?:^\{|, )"([a-z_]+)": ')  # the names of the fields a torn JSON line began


class NotOurs(Exception):
    """A file that is not a results file of kosmos; the message says why, in a few words."""


def refuse_inputs(path: str, inputs: Iterable[Any]) -> None:
    """UsageError when the output `path` is one of `inputs` (a manifest or an image named as input)."""
    for given in inputs:
        if isinstance(given, str) and given != "-" and same_file(given, path):
            raise UsageError(
                f"{{param}} {path} is also one of the inputs: writing there would destroy it; choose another {{param}}",
                param="out",
            )


def refuse_other_task(path: str, owner: str | None, task: str, overwrite: bool) -> None:
    """UsageError when the output holds another task's records (unless `overwrite`)."""
    if owner is not None and owner != task and not overwrite:
        raise UsageError(
            f"{{param}} {path} holds kosmos {owner} records: a {task} run would mix its own in; choose another "
            "{param}, or pass --overwrite to replace them",
            param="out",
        )


def not_ours(path: str, why: NotOurs, what: str = "file") -> UsageError:
    return UsageError(
        f"{{param}} {path} is not a results {what} of kosmos ({why}): kosmos writes only over its own results; "
        "choose another {param}",
        param="out",
    )


def owner_of(path: str, jsonl: bool) -> str | None:
    """The task whose records the file `path` holds; None when it holds none (absent, or empty). Raises NotOurs."""
    return jsonl_owner(path) if jsonl else parquet_owner(path)


def jsonl_owner(path: str) -> str | None:
    """The task of a JSONL results file's first record; None when it has none yet."""
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"PAR1":
                raise NotOurs("it is Parquet, not JSONL")
            f.seek(0)
            line = b"\n"
            while line and not line.strip():
                line = f.readline(FIRST_LINE_LIMIT)
            last = not f.read(1)
    except IsADirectoryError:
        raise NotOurs("it is a folder") from None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NotOurs(exc.strerror or str(exc)) from None
    if not line.strip():
        return None  # empty: ours to write
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        if last and not line.endswith(b"\n") and _torn_record(line):
            return None  # the first record, cut short by a crash: repair() drops it
        raise NotOurs("its first line is not a JSON record") from None
    return row_owner(row)


def _torn_record(line: bytes) -> bool:
    """Whether a line cut short began as a record of ours: its first two fields or more are those of one."""
    names = [m.decode() for m in _TORN_KEY.findall(line)]
    return len(names) >= 2 and any(_begins(names, task) for task in tasks.REGISTRY.values())


def _begins(names: list[str], task: type[tasks.Task]) -> bool:
    expected = [name for name, _ in _fields(task)]
    for name in names:
        while expected and expected[0] != name and expected[0] in ADDED_LATER:
            expected.pop(0)
        if not expected or expected.pop(0) != name:
            return False
    return True


def parquet_owner(path: str) -> str | None:
    """The task a Parquet results file names in its schema metadata; None when it is empty (no bytes)."""
    import pyarrow.parquet as pq

    if os.path.isdir(path):
        raise NotOurs("it is a folder")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NotOurs(exc.strerror or str(exc)) from None
    if not magic:
        return None  # empty: ours to write
    if magic != b"PAR1":
        raise NotOurs("it is not Parquet")
    try:
        pf = pq.ParquetFile(path)
    except Exception:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise NotOurs("it is not a readable Parquet file") from None
    return schema_owner(pf.schema_arrow)


def schema_owner(schema: Any) -> str:
    """The task a Parquet schema names in its metadata (every Parquet file kosmos writes has it), or NotOurs."""
    named = (schema.metadata or {}).get(TASK_METADATA)
    if named is None:
        raise NotOurs("its schema names no kosmos task")
    task = tasks.REGISTRY.get(named.decode(errors="replace"))
    if task is None:
        raise NotOurs(f"it names an unknown task {named.decode(errors='replace')!r}")
    return task.name


def row_owner(row: Any) -> str:
    """The task of a first JSONL row, or NotOurs: it must be a record as kosmos writes it, field by field."""
    if not isinstance(row, dict) or "path" not in row or "status" not in row:
        raise NotOurs("its first row is not a kosmos record: no 'path' and 'status'")
    named = row.get("task")
    if named is not None and named not in tasks.REGISTRY:
        raise NotOurs("its first row is a record of no kosmos task")
    candidates = [tasks.REGISTRY[named]] if named is not None else list(tasks.REGISTRY.values())
    for task in candidates:
        if _shaped_as(row, task):
            return task.name
    raise NotOurs("its first row is not a record kosmos writes")


def _fields(task: type[tasks.Task]) -> list[tuple[str, Any]]:
    """(name, Arrow type) of the fields a record of `task` begins with, in order."""
    return [(f.name, f.type) for f in common_arrow_fields() + task.arrow_fields()]


def _shaped_as(row: dict[str, Any], task: type[tasks.Task]) -> bool:
    """Whether `row` is a record of `task` as some version of kosmos wrote it (the module's docstring)."""
    expected = [(name, kind) for name, kind in _fields(task) if name in row or name not in ADDED_LATER]
    keys = list(row)
    if keys[: len(expected)] != [name for name, _ in expected]:
        return False
    if any(name in tasks.reserved_names() for name in keys[len(expected) :]):
        return False  # a carried column with a name of ours would have been written input_<name>
    if row["status"] not in (OK, ERROR) or (row.get("task") is not None and row["task"] != task.name):
        return False
    return all(_fits(row[name], kind) for name, kind in expected)


def _fits(value: Any, kind: Any) -> bool:
    """Whether a JSON value is one kosmos writes for a field of this Arrow type (null for any)."""
    import pyarrow as pa

    if value is None:
        return True
    if pa.types.is_string(kind):
        return isinstance(value, str)
    if pa.types.is_integer(kind):
        return isinstance(value, int) and not isinstance(value, bool)
    if pa.types.is_floating(kind):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if pa.types.is_list(kind):
        return isinstance(value, list) and all(_fits(v, kind.value_type) for v in value[:1])
    if pa.types.is_struct(kind):
        return isinstance(value, dict)
    return True


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # either is missing, or a name the system cannot take
        return False
