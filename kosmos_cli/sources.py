"""Inputs -> a stream of `Item`s: folders, image files, globs, manifests (txt/csv/jsonl/parquet), "-" for stdin.

Folders are walked recursively in sorted order, hidden entries skipped, symlinked folders followed once (a
loop is not followed forever). The same file reached twice is yielded once. Nothing is held in memory but the
identities of what was already yielded.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from .errors import InputError, UsageError
from .images import IMAGE_EXTENSIONS, is_image_path

log = logging.getLogger("kosmos_cli")

MANIFEST_EXTENSIONS = (".txt", ".csv", ".jsonl", ".ndjson", ".parquet")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Item:
    """One image to process: its path, and the manifest columns carried into its record."""

    path: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def check_inputs(inputs: Iterable[str]) -> list[str]:
    """Fail early, before a model loads, on arguments that name nothing."""
    inputs = list(inputs)
    if not inputs:
        raise UsageError("no input given: name a folder, image, glob, manifest, or - for paths on stdin")
    for arg in inputs:
        if arg == "-" or os.path.exists(arg):
            continue
        if _GLOB_CHARS & set(arg):
            if not glob.glob(arg, recursive=True):
                raise UsageError(f"no files match {arg!r}: check the pattern (quote it so the shell leaves it)")
            continue
        raise UsageError(f"input not found: {arg!r}: check the path")
    if inputs.count("-") > 1:
        raise UsageError("'-' (stdin) can be given once")
    return inputs


def nothing_found(inputs) -> str:
    """The warning for inputs that named no image: which extensions a folder or glob is searched for."""
    named = [i for i in inputs if isinstance(i, str)] if isinstance(inputs, (list, tuple)) else []
    where = ", ".join(named[:3]) + (", ..." if len(named) > 3 else "") if named else "the inputs"
    extensions = " ".join(sorted(IMAGE_EXTENSIONS))
    return (f"no images found in {where}: folders and globs are searched for {extensions} (any case); "
            "other files, such as .heic or .avif, are left out unless named one by one or in a manifest")


def iter_items(inputs: Iterable[str], stdin: IO[str] | None = None, per_row: bool = False) -> Iterator[Item]:
    """Every image named by `inputs`, once, in a stable order.

    `per_row`: for jobs with several records per image (refer, find), manifest rows that name the same image
    with different columns (another box, another phrase) are all kept; only a repeated row is dropped.
    """
    seen: set = set()
    for item in _expand(inputs, stdin):
        key = _identity(item.path)
        if per_row:
            key = (key, json.dumps(item.extra, sort_keys=True, default=str))
        if key in seen:
            continue
        seen.add(key)
        yield item


def shard(items: Iterable[Item], rank: int, world: int, by_image: bool = False) -> Iterator[Item]:
    """This process's share: every `world`-th item from `rank`. Disjoint across ranks, and together complete.

    `by_image` (manifest rows of refer and find): consecutive rows of one image count as one item, so they stay on
    one rank and share its single decode and vision pass.
    """
    index, last = -1, None
    for item in items:
        if not by_image or item.path != last:
            index, last = index + 1, item.path
        if index % world == rank:
            yield item


def _identity(path: str) -> tuple[int, int] | str:
    try:
        st = os.stat(path)
    except OSError:  # a missing file in a manifest: it still gets its (error) record, once per path
        return os.path.abspath(path)
    return (st.st_dev, st.st_ino)


def _expand(inputs: Iterable[str], stdin: IO[str] | None) -> Iterator[Item]:
    for arg in inputs:
        if arg == "-":
            yield from _read_lines(stdin if stdin is not None else sys.stdin, base=None, name="stdin")
        elif os.path.isdir(arg):
            yield from walk_folder(arg)
        elif os.path.exists(arg):
            if arg.lower().endswith(MANIFEST_EXTENSIONS):
                yield from read_manifest(arg)
            else:
                yield Item(os.path.normpath(arg))  # named explicitly: tried whatever its extension
        else:
            for match in sorted(glob.glob(arg, recursive=True)):
                if os.path.isdir(match):
                    yield from walk_folder(match)
                elif is_image_path(match):
                    yield Item(os.path.normpath(match))


def walk_folder(top: str) -> Iterator[Item]:
    """Images under `top`, recursively, sorted; hidden files and folders skipped; each real folder once."""
    visited: set[tuple[int, int]] = set()

    def walk(folder: str) -> Iterator[Item]:
        try:
            st = os.stat(folder)
        except OSError:
            return
        if (st.st_dev, st.st_ino) in visited:  # a symlink loop, or a folder reached twice
            return
        visited.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc.strerror or exc)
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = os.path.join(folder, entry.name)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                continue
            if is_dir:
                yield from walk(path)
            elif is_image_path(entry.name):
                yield Item(os.path.normpath(path))

    yield from walk(top)


def read_manifest(path: str) -> Iterator[Item]:
    """Rows of a manifest; relative paths resolve against the manifest's folder; other columns are carried."""
    base = os.path.dirname(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".txt":
        with open(path, encoding="utf-8") as f:
            yield from _read_lines(f, base=base, name=path)
    elif ext == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            _require_path_column(reader.fieldnames or [], path)
            for row in reader:
                item = _item_from_row(row, base)
                if item is not None:
                    yield item
    elif ext in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            yield from _read_lines(f, base=base, name=path, json_only=True)
    elif ext == ".parquet":
        yield from _read_parquet(path, base)


def _read_lines(f: IO[str], base: str | None, name: str, json_only: bool = False) -> Iterator[Item]:
    """One path a line; a line that starts with "{" is a JSON object with a "path" key and carried keys."""
    for number, line in enumerate(f, 1):
        line = line.strip()
        if not line or (line.startswith("#") and not json_only):
            continue
        if line.startswith("{") or json_only:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                log.warning("%s line %d is not valid JSON (%s): skipped", name, number, exc.msg)
                continue
            if not isinstance(row, dict) or not row.get("path"):
                log.warning("%s line %d has no \"path\": skipped", name, number)
                continue
            item = _item_from_row(row, base)
        else:
            item = Item(_resolve(line, base))
        if item is not None:
            yield item


def _read_parquet(path: str, base: str) -> Iterator[Item]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"cannot read manifest {path}: {exc}") from None
    _require_path_column(pf.schema_arrow.names, path)
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            item = _item_from_row(row, base)
            if item is not None:
                yield item


def _require_path_column(names: list[str], path: str) -> None:
    if "path" not in names:
        raise InputError(f"manifest {path} has no 'path' column: add one with the image paths")


def _item_from_row(row: dict[str, Any], base: str | None) -> Item | None:
    value = row.get("path")
    if value is None or str(value).strip() == "":
        return None
    extra = {k: v for k, v in row.items() if k != "path"}
    return Item(_resolve(str(value).strip(), base), extra)


def _resolve(path: str, base: str | None) -> str:
    path = os.path.expanduser(path)
    if base and not os.path.isabs(path):
        path = os.path.join(base, path)
    return os.path.normpath(path)
