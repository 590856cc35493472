"""Whose file an output is: kosmos writes only over its own results, and only over one task's.

Before the lock, a repair or a write, the main process checks that an existing output is a results file of
kosmos (`owner`: the task of its first row, read cheaply) written by the same task, and that it is not one of the
run's inputs. Anything else is refused and left byte for byte as it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from . import tasks
from .errors import UsageError

FIRST_LINE_LIMIT = 1 << 24  # bytes: a first JSONL line longer than this is not a record of ours
TASK_METADATA = b"kosmos_cli.task"  # the Parquet schema metadata naming the task (tasks.base.Task.schema)


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


def not_ours(path: str, why: NotOurs) -> UsageError:
    return UsageError(
        f"{{param}} {path} is not a results file of kosmos ({why}): kosmos writes only over its own results; "
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
        if last and not line.endswith(b"\n") and line.startswith(b'{"path": '):
            return None  # the first record, cut short by a crash: repair() drops it
        raise NotOurs("its first line is not a JSON record") from None
    return row_owner(row)


def parquet_owner(path: str) -> str | None:
    """The task of a Parquet results file: its schema metadata, else its first row; None when it has no rows."""
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
    schema = pf.schema_arrow
    named = (schema.metadata or {}).get(TASK_METADATA)
    if named is not None:
        task = tasks.REGISTRY.get(named.decode(errors="replace"))
        if task is None:
            raise NotOurs(f"it names an unknown task {named.decode(errors='replace')!r}")
        return task.name
    if "path" not in schema.names or "status" not in schema.names:
        raise NotOurs("it has no 'path' and 'status' columns")
    for batch in pf.iter_batches(batch_size=1):
        if batch.num_rows:
            return row_owner(batch.to_pylist()[0])
    return None


def row_owner(row: Any) -> str:
    """The task of a first row, or NotOurs: it must be a record (path, status) of a known task."""
    if not isinstance(row, dict) or "path" not in row or "status" not in row:
        raise NotOurs("its first row is not a kosmos record: no 'path' and 'status'")
    task = tasks.of_row(row)
    if task is None:
        raise NotOurs("its first row is a record of no kosmos task")
    return task.name


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # either is missing, or a name the system cannot take
        return False
