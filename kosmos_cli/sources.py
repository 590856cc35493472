"""Inputs -> a stream of `Item`s: folders, image files, globs, manifests (txt/csv/jsonl/parquet), "-" for stdin.

Folders are walked recursively in sorted order, hidden entries skipped, symlinked folders followed once (a
loop is not followed forever). A folder kosmos draws into (it holds DRAWN_MARKER) is left out of the walk of a
folder around it, so a nightly `--draw` inside the library is never grounded as new photos; named itself, it is
walked. Our other outputs (results files, their `.parts/` and `.lock`) are never image files, so never yielded.
The same file reached twice is yielded once. Nothing is held in memory but the identities of what was already
yielded.

Text inputs (stdin, .txt, .csv and .jsonl manifests) are UTF-8, a byte-order mark allowed; bytes that are not
UTF-8 are kept as Python keeps them in file names (surrogate escapes), so a listing of non-UTF-8 file names
opens those files; fsnames.py says how they are recorded. A JSON line that does not parse, or nests more than
MAX_DEPTH levels deep, is skipped with a warning naming its line; a CSV the csv module cannot read (an unclosed
quote, a field over 128 KiB) stops with an InputError naming its line.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from .carried import from_parquet
from .errors import InputError, UsageError
from .images import IMAGE_EXTENSIONS, is_image_path

log = logging.getLogger("kosmos_cli")

DRAWN_MARKER = ".kosmos-drawn"  # in every folder kosmos draws into (drawing/naming.py); folder walks skip it
MANIFEST_EXTENSIONS = (".txt", ".csv", ".jsonl", ".ndjson", ".parquet")
MAX_DEPTH = 100  # levels of nesting a JSON manifest line may have (deeper would overflow the stack downstream)
_ENCODING, _ERRORS = "utf-8-sig", "surrogateescape"  # manifests: a BOM dropped, bytes that are not UTF-8 kept
_DEEP = object()
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
    named = ["stdin" if i == "-" else i for i in named]
    where = ", ".join(named[:3]) + (", ..." if len(named) > 3 else "") if named else "the inputs"
    extensions = " ".join(sorted(IMAGE_EXTENSIONS))
    return (
        f"no images found in {where}: folders and globs are searched for {extensions} (any case); "
        "other files, such as .heic or .avif, are left out unless named one by one or in a manifest"
    )


def iter_items(
    inputs: Iterable[str],
    stdin: IO[str] | None = None,
    per_row: bool = False,
    null: bool = False,
    unlisted: list[str] | None = None,
) -> Iterator[Item]:
    """Every image named by `inputs`, once, in a stable order.

    `per_row`: for jobs with several records per image (refer, find), manifest rows that name the same image
    with different columns (another box, another phrase) are all kept; only a repeated row is dropped.
    `null`: "-" reads paths separated by NUL bytes (find -print0), each taken as it is, instead of lines.
    `unlisted`: gets the places under a folder that the walk could not look into (a folder it cannot list or
    that vanished, a link to nothing): when it is not empty after the walk, the walk did not see every image.
    """
    seen: set = set()
    for item in _expand(inputs, stdin, null, unlisted):
        key: Any = _identity(item.path)
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
    except (OSError, ValueError):  # a missing file (or a NUL in the path): it still gets its error record, once
        return os.path.abspath(path)
    return (st.st_dev, st.st_ino)


def _expand(
    inputs: Iterable[str], stdin: IO[str] | None, null: bool = False, unlisted: list[str] | None = None
) -> Iterator[Item]:
    for arg in inputs:
        if arg == "-":
            stream = stdin if stdin is not None else sys.stdin
            if null:
                yield from (Item(os.path.normpath(p)) for p in _nul_separated(stream) if p)
            else:
                yield from _read_lines(_stdin_lines(stream), base=None, name="stdin")
        elif os.path.isdir(arg):
            yield from walk_folder(arg, unlisted)
        elif os.path.exists(arg):
            if arg.lower().endswith(MANIFEST_EXTENSIONS):
                yield from read_manifest(arg)
            else:
                yield Item(os.path.normpath(arg))  # named explicitly: tried whatever its extension
        else:
            for match in sorted(glob.glob(arg, recursive=True)):
                if os.path.isdir(match):
                    yield from walk_folder(match, unlisted)
                elif is_image_path(match):
                    yield Item(os.path.normpath(match))


def walk_folder(top: str, unlisted: list[str] | None = None) -> Iterator[Item]:
    """Images under `top`, recursively, sorted; hidden files and folders skipped; each real folder once; folders
    below `top` that kosmos drew into (holding DRAWN_MARKER) left out.

    What it cannot look into (see `iter_items`) is added to `unlisted` when given.
    """
    visited: set[tuple[int, int]] = set()
    missed = unlisted.append if unlisted is not None else (lambda path: None)

    def walk(folder: str, below: bool = False) -> Iterator[Item]:
        try:
            st = os.stat(folder)
        except OSError:
            missed(folder)  # gone since its parent was listed
            return
        if (st.st_dev, st.st_ino) in visited:  # a symlink loop, or a folder reached twice
            return
        visited.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc.strerror or exc)
            missed(folder)
            return
        if below and any(entry.name == DRAWN_MARKER for entry in entries):
            return  # annotated images kosmos drew: not photos to ground
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = os.path.join(folder, entry.name)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                missed(path)
                continue
            if is_dir:
                yield from walk(path, below=True)
            elif is_image_path(entry.name):
                yield Item(os.path.normpath(path))
            elif entry.is_symlink() and not os.path.exists(path):
                missed(path)  # a link to nothing: perhaps to a folder on a disk that is not mounted

    yield from walk(top)


def read_manifest(path: str) -> Iterator[Item]:
    """Rows of a manifest; relative paths resolve against the manifest's folder; other columns are carried."""
    base = os.path.dirname(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".txt":
        with open(path, encoding=_ENCODING, errors=_ERRORS) as f:
            yield from _read_lines(f, base=base, name=path)
    elif ext == ".csv":
        yield from _read_csv(path, base)
    elif ext in (".jsonl", ".ndjson"):
        with open(path, encoding=_ENCODING, errors=_ERRORS) as f:
            yield from _read_lines(f, base=base, name=path, json_only=True)
    elif ext == ".parquet":
        yield from _read_parquet(path, base)


def _read_csv(path: str, base: str) -> Iterator[Item]:
    """Rows of a CSV manifest. A repeated column name gets `_2`, `_3`, ...; fields past the header's end are
    carried as a list under `_extra` (a unique name the same way)."""
    with open(path, newline="", encoding=_ENCODING, errors=_ERRORS) as f:
        reader = csv.reader(f)
        line = 1  # where the row being read starts
        try:
            header = next(reader, [])
            _require_path_column(header, path)
            names = unique_names(header + ["_extra"])
            width, ragged = len(header), names.pop()
            line = reader.line_num + 1
            while (fields := next(reader, None)) is not None:
                if fields:
                    row: dict[str, Any] = dict(zip(names, fields + [None] * (width - len(fields))))
                    if len(fields) > width:
                        row[ragged] = fields[width:]
                    item = _item_from_row(row, base)
                    if item is not None:
                        yield item
                line = reader.line_num + 1
        except csv.Error as exc:
            raise InputError(f"manifest {path} line {line}: {exc}: check that its quotes are closed") from None


def unique_names(names: list[str]) -> list[str]:
    """`names` with each repeat renamed `name_2`, `name_3`, ... (the first that is free)."""
    taken = set(names)
    out: list[str] = []
    for name in names:
        if name in out:
            n = 2
            while f"{name}_{n}" in taken:
                n += 1
            name = f"{name}_{n}"
            taken.add(name)
        out.append(name)
    return out


def _read_lines(f: Iterable[str], base: str | None, name: str, json_only: bool = False) -> Iterator[Item]:
    """One path a line; a line that starts with "{" is a JSON object with a "path" key and carried keys."""
    for number, line in enumerate(f, 1):
        line = line.strip().lstrip("\ufeff") if number == 1 else line.strip()
        if not line or (line.startswith("#") and not json_only):
            continue
        if line.startswith("{") or json_only:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                log.warning("%s line %d is not valid JSON (%s): skipped", name, number, exc.msg)
                continue
            except RecursionError:
                row = _DEEP
            if row is _DEEP or _too_deep(row):
                log.warning("%s line %d nests more than %d levels deep: skipped", name, number, MAX_DEPTH)
                continue
            if not isinstance(row, dict) or not row.get("path"):
                log.warning('%s line %d has no "path": skipped', name, number)
                continue
            item = _item_from_row(row, base)
        else:
            item = Item(_resolve(line, base))
        if item is not None:
            yield item


def _stdin_lines(stream: IO[str]) -> Iterator[str]:
    """Lines of stdin; read as bytes where it has them, so names that are not UTF-8 come through."""
    if not isinstance(stream, io.TextIOWrapper):  # a StringIO given by a caller: text already
        yield from stream
        return
    for line in stream.buffer:
        yield line.decode("utf-8", "surrogateescape")


def _nul_separated(stream: IO[str]) -> Iterator[str]:
    """NUL-separated paths on stdin, read as bytes where it has them (names that are not UTF-8 come through)."""
    if not isinstance(stream, io.TextIOWrapper):  # a StringIO given by a caller: text already
        text = ""
        while chunk := stream.read(65536):
            *done, text = (text + chunk).split("\0")
            yield from done
        yield text
        return
    rest = b""
    while data := stream.buffer.read1(65536):
        *names, rest = (rest + data).split(b"\0")
        yield from (os.fsdecode(p) for p in names)
    yield os.fsdecode(rest)


def _too_deep(value: Any) -> bool:
    level = [value]
    for _ in range(MAX_DEPTH):
        level = [v for x in level if isinstance(x, (dict, list)) for v in (x.values() if isinstance(x, dict) else x)]
        if not level:
            return False
    return True


def _read_parquet(path: str, base: str) -> Iterator[Item]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"cannot read manifest {path}: {exc}") from None
    _require_path_column(pf.schema_arrow.names, path)
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            item = _item_from_row(from_parquet(row), base)
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
