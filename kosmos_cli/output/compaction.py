"""Folding record files into one, and clearing what a crashed run left half-done.

Compaction rewrites an output from itself and its parts: the last record of each key (a record written again for
a changed image replaces the older one), only the keys a `keep` function keeps (--prune after a complete pass).
The result is written under a temporary name and renamed into place, so the output is always complete.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from ..inputs import carried_columns
from ..tasks import Task
from .atomic import atomic_write, unlink
from .formats import dumps, readable_parquet, repair_jsonl_tail, unified_schema

log = logging.getLogger("kosmos_cli")

Rows = Callable[..., Iterator[dict[str, Any]]]  # rows(source, columns=None): the rows of one record file
Position = tuple[int, int]  # (which source, which row of it)
CHUNK = 4096  # rows per Arrow table written


def last_positions(sources: list[str], rows: Rows, task: type[Task], folder: str | None) -> dict[str, Position]:
    """Key -> where its last record is, reading only the columns that make the key."""
    last: dict[str, Position] = {}
    for i, source in enumerate(sources):
        for j, row in enumerate(rows(source, task.resume_columns())):
            last[task.key(row, folder)] = (i, j)
    return last


def fold(
    sources: list[str],
    target: str,
    fmt: str,
    task: type[Task],
    rows: Rows,
    folder: str,
    keep: Callable[[str], bool] | None = None,
) -> int:
    """Write `target` (atomically) from `sources`: the last record of each key, `keep(key)` ones only. Raises
    OSError when it cannot be written; the sources are left for the caller to remove. Returns the rows written."""
    last = last_positions(sources, rows, task, folder)
    wanted = {pos for key, pos in last.items() if keep is None or keep(key)}
    del last
    return write_kept(sources, wanted, target, fmt, task, rows)


def write_kept(sources: list[str], wanted: set[Position], target: str, fmt: str, task: type[Task], rows: Rows) -> int:
    """Write `target` (atomically) from the rows of `sources` at the `wanted` positions, in order."""
    kept = kept_rows(sources, wanted, task, rows)
    with atomic_write(target, "w" if fmt == "jsonl" else "wb") as f:
        if fmt == "jsonl":
            return write_jsonl(kept, f)
        import pyarrow.parquet as pq

        schemas = {s: pq.read_schema(s) for s in sources if s.endswith(".parquet")}
        return write_parquet(kept, schemas, unified_schema(task, list(schemas.values())), f)


def kept_rows(
    sources: list[str], wanted: set[Position], task: type[Task], rows: Rows
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(source, row) of the rows of `sources` at the `wanted` positions, in order, each naming its task."""
    for i, source in enumerate(sources):
        for j, row in enumerate(rows(source)):
            if (i, j) in wanted:
                yield source, named(row, task)


def write_jsonl(kept: Iterable[tuple[str, dict[str, Any]]], out: IO[str]) -> int:
    written = 0
    for _, row in kept:
        out.write(dumps(row))
        written += 1
    return written


def write_parquet(kept: Iterable[tuple[str, dict[str, Any]]], schemas: dict[str, Any], schema: Any, out) -> int:
    """Rows into one Parquet file of `schema` (the unified schema of the sources' `schemas`): a carried column that
    a source holds typed and `schema` as JSON text is turned into JSON text (carried_columns.py, rule 3)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    as_text = {s: carried_columns.to_json_text(found, schema) for s, found in schemas.items()}
    written, chunk = 0, []
    with pq.ParquetWriter(out, schema) as writer:
        for source, row in kept:
            chunk.append(carried_columns.as_json_text(row, as_text.get(source, [])))
            if len(chunk) >= CHUNK:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                written, chunk = written + len(chunk), []
        if chunk:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            written += len(chunk)
    return written


def named(row: dict[str, Any], task: type[Task]) -> dict[str, Any]:
    """A row as it is written again: one written before records named their task gets its task."""
    if row.get("task") is None:
        out = {"path": row["path"], "task": task.name}
        out.update((k, v) for k, v in row.items() if k != "task")
        return out
    return row


def repair(path: str, fmt: str, parts_dir: str) -> None:
    """Clear what a crashed run left half-done beside the output `path`: unfinished or unreadable parts, a torn
    last JSONL line, the `{path}.{pid}.tmp` of a merge killed before its rename.

    Only the lock holder may call this: another process's `.tmp` part is work in progress, not damage.
    """
    folder, base = os.path.split(os.path.abspath(path))
    for leftover in glob.glob(os.path.join(glob.escape(folder), glob.escape(base) + ".*.tmp")):
        if os.path.basename(leftover)[len(base) + 1 : -4].isdigit():  # write_kept names it by the merging pid
            log.warning("removing %s left by an interrupted merge", leftover)
            unlink(leftover)
    if os.path.isdir(parts_dir):
        for name in sorted(os.listdir(parts_dir)):
            full = os.path.join(parts_dir, name)
            if name.endswith(".tmp"):
                log.warning("removing unfinished part %s left by an interrupted run", full)
                unlink(full)
            elif name.endswith(".parquet") and not readable_parquet(full):
                log.warning("removing damaged part %s left by an interrupted run", full)
                unlink(full)
            elif name.endswith(".jsonl"):
                repair_jsonl_tail(full)
    if fmt == "jsonl":
        repair_jsonl_tail(path)
