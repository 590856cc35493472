"""Inputs -> a stream of `Item`s: folders, image files, globs, manifests (txt/csv/jsonl/parquet), "-" for stdin.

Folders are walked recursively in sorted order, hidden entries skipped, symlinked folders followed once (a
loop is not followed forever). A folder kosmos draws or exports into (it holds DRAWN_MARKER or EXPORT_MARKER) is
left out of the walk of a folder around it, so a nightly `--draw` or a YOLO export with copies inside the library
is never grounded as new photos; named itself, it is walked. Our other outputs (results files, their `.parts/`
and `.lock`) are never image files, so never yielded. The same file reached twice is yielded once. Nothing is held
in memory but the identities of what was already yielded.

Text inputs (stdin, .txt, .csv and .jsonl manifests) are UTF-8, a byte-order mark allowed; bytes that are not
UTF-8 are kept as Python keeps them in file names (surrogate escapes), so a listing of non-UTF-8 file names
opens those files; fsnames.py says how they are recorded. A JSON line that does not parse, or nests more than
MAX_DEPTH levels deep, is skipped with a warning naming its line; a CSV the csv module cannot read (an unclosed
quote, a field over 128 KiB) stops with an InputError naming its line.
"""

from __future__ import annotations

import csv
import functools
import glob
import io
import json
import logging
import os
import posixpath
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from . import locations
from .carried import from_parquet
from .errors import InputError, UsageError
from .images import IMAGE_EXTENSIONS, is_image_path

log = logging.getLogger("kosmos_cli")

DRAWN_MARKER = ".kosmos-drawn"  # in every folder kosmos draws into (drawing/naming.py); folder walks skip it
EXPORT_MARKER = ".kosmos-export"  # in every folder an export writes (exports/base.py); folder walks skip it
OUR_FOLDERS = (DRAWN_MARKER, EXPORT_MARKER)  # a folder holding one of these kosmos wrote: never walked as input
MANIFEST_EXTENSIONS = (".txt", ".csv", ".jsonl", ".ndjson", ".parquet")
MAX_DEPTH = 100  # levels of nesting a JSON manifest line may have (deeper would overflow the stack downstream)
_ENCODING, _ERRORS = "utf-8-sig", "surrogateescape"  # manifests: a BOM dropped, bytes that are not UTF-8 kept
_DEEP = object()
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Item:
    """One image to process: its path, and the manifest columns carried into its record.

    A sample read from a stream (a WebDataset shard, a Parquet row with image bytes) brings its bytes as `data`
    and its (size, modification time) as `stat`, or the `error` that makes it an error record (a sample without
    an image). `group` is the shard it came from: with several processes, whole shards go to one process each.
    """

    path: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    data: bytes | None = field(default=None, compare=False, repr=False)
    stat: tuple[int | None, float | None] | None = field(default=None, compare=False)
    error: str | None = field(default=None, compare=False)
    group: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Columns:
    """Which manifest columns name an image: `path` (a path or URL), or `image` (its bytes, in a Parquet binary
    column or a struct with `bytes`), then keyed by `key`."""

    path: str = "path"
    image: str | None = None
    key: str | None = None


def check_inputs(inputs: Iterable[str]) -> list[str]:
    """Fail early, before a model loads, on arguments that name nothing.

    An http(s) URL is taken as named (a 404 is that image's error record); a URL of another filesystem is looked
    up there (a missing fsspec package is named); a brace pattern (`shards/{00000..00127}.tar`) is checked for
    each path it stands for."""
    inputs = list(inputs)
    if not inputs:
        raise UsageError("no input given: name a folder, image, glob, manifest, URL, or - for paths on stdin")
    for given in inputs:
        for arg in expand_braces(given):
            arg = locations.local_path(arg)
            if arg == "-" or locations.is_url(arg):
                continue
            if locations.is_remote(arg):
                from .locations.fs import check_remote

                check_remote(arg)
                continue
            if os.path.exists(arg):
                continue
            if _GLOB_CHARS & set(arg):
                if not glob.glob(arg, recursive=True):
                    raise UsageError(f"no files match {arg!r}: check the pattern (quote it so the shell leaves it)")
                continue
            raise UsageError(f"input not found: {arg!r}: check the path")
    if inputs.count("-") > 1:
        raise UsageError("'-' (stdin) can be given once")
    return inputs


_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
MAX_BRACED = 1_000_000  # paths one brace pattern may stand for


def expand_braces(pattern: str) -> list[str]:
    """The paths a brace pattern stands for, in order, as the shell (and WebDataset) expand them:
    `{00000..00127}` counts with the zero padding kept, `{a,b}` lists; several groups multiply. A path that
    exists as named (a folder called `{x}`), or holds no group, is itself."""
    match = _BRACE.search(pattern)
    if match is None or (not locations.is_remote(pattern) and os.path.exists(pattern)):
        return [pattern]
    inner, head, tail = match.group(1), pattern[: match.start()], pattern[match.end() :]
    counted = _RANGE.match(inner)
    if counted:
        first, last = counted.groups()
        width = len(first) if first.lstrip("-").startswith("0") and len(first) > 1 else 0
        step = 1 if int(last) >= int(first) else -1
        if abs(int(last) - int(first)) >= MAX_BRACED:
            raise UsageError(f"{pattern!r} stands for more than {MAX_BRACED} paths: split it")
        choices = [str(n).zfill(width) for n in range(int(first), int(last) + step, step)]
    elif "," in inner:
        choices = inner.split(",")
    else:
        return [head + "{" + inner + "}" + t for t in expand_braces(tail)] if "{" in tail else [pattern]
    out: list[str] = []
    for choice in choices:
        out.extend(expand_braces(head + choice + tail))
        if len(out) > MAX_BRACED:
            raise UsageError(f"{pattern!r} stands for more than {MAX_BRACED} paths: split it")
    return out


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
    columns: Columns = Columns(),
    fetch: locations.FetchOptions = locations.FetchOptions(),
    share: tuple[int, int] = (0, 1),
) -> Iterator[Item]:
    """Every image named by `inputs`, once, in a stable order.

    `per_row`: for jobs with several records per image (refer, find), manifest rows that name the same image
    with different columns (another box, another phrase) are all kept; only a repeated row is dropped.
    `null`: "-" reads paths separated by NUL bytes (find -print0), each taken as it is, instead of lines.
    `unlisted`: gets the places under a folder that the walk could not look into (a folder it cannot list or
    that vanished, a link to nothing): when it is not empty after the walk, the walk did not see every image.
    `columns`: which manifest columns name the image. `fetch`: how remote manifests and shards are read.
    `share` (rank, world): WebDataset shards that are not this process's (see `shard`) are not read at all.
    """
    seen: set = set()
    for item in _expand(inputs, stdin, null, unlisted, columns, fetch, share):
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
    one rank and share its single decode and vision pass. An item of a WebDataset shard (`group` set) goes with
    its whole shard: to the rank of the shard's number.
    """
    index, last = -1, None
    for item in items:
        if item.group is not None:
            if item.group % world == rank:
                yield item
            continue
        if not by_image or item.path != last:
            index, last = index + 1, item.path
        if index % world == rank:
            yield item


def countable(inputs: Iterable[Any]) -> bool:
    """Whether walking `inputs` once more, to count them for a progress bar, is cheap: local paths only."""
    return all(
        isinstance(i, str) and i != "-" and locations.is_local(i) and not i.lower().endswith(_SHARD_ENDINGS)
        for i in inputs
    )


def _identity(path: str) -> tuple[int, int] | str:
    if not locations.is_local(path):
        return path  # a URL, a shard's sample: its own name
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # a missing file (or a NUL in the path): it still gets its error record, once
        return os.path.abspath(path)
    return (st.st_dev, st.st_ino)


_SHARD_ENDINGS = (".tar", ".tar.gz", ".tgz")


def _expand(
    inputs: Iterable[str],
    stdin: IO[str] | None,
    null: bool = False,
    unlisted: list[str] | None = None,
    columns: Columns = Columns(),
    fetch: locations.FetchOptions = locations.FetchOptions(),
    share: tuple[int, int] = (0, 1),
) -> Iterator[Item]:
    shards = 0  # WebDataset shards met so far: each one's number decides its process
    for given in inputs:
        if given == "-":
            stream = stdin if stdin is not None else sys.stdin
            if null:
                yield from (
                    Item(p if locations.is_remote(p) else os.path.normpath(p)) for p in _nul_separated(stream) if p
                )
            else:
                yield from _read_lines(_stdin_lines(stream), base=None, name="stdin", columns=columns)
            continue
        for arg in map(locations.local_path, expand_braces(given)):
            if arg.lower().endswith(_SHARD_ENDINGS) and "#" not in arg:
                number, shards = shards, shards + 1
                if number % share[1] == share[0]:
                    from .locations.shards import iter_shard

                    yield from iter_shard(arg, number, fetch)
            elif locations.is_url(arg) and locations.named_suffix(arg).endswith(MANIFEST_EXTENSIONS):
                from .locations.http import open_url

                yield from read_manifest(arg, columns, opener=functools.partial(open_url, fetch=fetch))
            elif locations.is_url(arg):
                yield Item(arg)
            elif locations.is_remote(arg):
                from .locations.fs import expand_remote

                yield from expand_remote(arg, columns, unlisted)
            elif os.path.isdir(arg):
                yield from walk_folder(arg, unlisted)
            elif os.path.exists(arg):
                if arg.lower().endswith(MANIFEST_EXTENSIONS):
                    yield from read_manifest(arg, columns)
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
    below `top` that kosmos drew or exported into (holding DRAWN_MARKER or EXPORT_MARKER) left out.

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
        if below and any(entry.name in OUR_FOLDERS for entry in entries):
            return  # annotated images kosmos drew, or an export's copies: not photos to ground
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


def read_manifest(path: str, columns: Columns = Columns(), opener=open) -> Iterator[Item]:
    """Rows of a manifest; relative paths resolve against the manifest's folder; other columns are carried.

    `opener(path, mode, **kwargs)` opens it (fsspec's, for a manifest in object storage). With `columns.image`,
    a Parquet manifest brings each row's image bytes (locations/table.py)."""
    base = posixpath.dirname(path) if locations.is_remote(path) else os.path.dirname(path)
    ext = os.path.splitext(locations.named_suffix(path))[1]
    if ext == ".txt":
        with opener(path, "r", encoding=_ENCODING, errors=_ERRORS) as f:
            yield from _read_lines(f, base=base, name=path, columns=columns)
    elif ext == ".csv":
        with opener(path, "r", newline="", encoding=_ENCODING, errors=_ERRORS) as f:
            yield from _read_csv(f, path, base, columns)
    elif ext in (".jsonl", ".ndjson"):
        with opener(path, "r", encoding=_ENCODING, errors=_ERRORS) as f:
            yield from _read_lines(f, base=base, name=path, json_only=True, columns=columns)
    elif ext == ".parquet" and columns.image is not None:
        from .locations.table import iter_table

        yield from iter_table(path, columns, opener)
    elif ext == ".parquet":
        with opener(path, "rb") as f:
            yield from _read_parquet(f, path, base, columns)


def _read_csv(f: IO[str], path: str, base: str, columns: Columns) -> Iterator[Item]:
    """Rows of a CSV manifest. A repeated column name gets `_2`, `_3`, ...; fields past the header's end are
    carried as a list under `_extra` (a unique name the same way)."""
    reader = csv.reader(f)
    line = 1  # where the row being read starts
    try:
        header = next(reader, [])
        _require_path_column(header, path, columns)
        names = unique_names(header + ["_extra"])
        width, ragged = len(header), names.pop()
        line = reader.line_num + 1
        while (fields := next(reader, None)) is not None:
            if fields:
                row: dict[str, Any] = dict(zip(names, fields + [None] * (width - len(fields))))
                if len(fields) > width:
                    row[ragged] = fields[width:]
                item = _item_from_row(row, base, columns)
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


def _read_lines(
    f: Iterable[str], base: str | None, name: str, json_only: bool = False, columns: Columns = Columns()
) -> Iterator[Item]:
    """One path a line; a line that starts with "{" is a JSON object with a "path" key (`columns.path`) and carried
    keys."""
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
            if not isinstance(row, dict) or not row.get(columns.path):
                log.warning('%s line %d has no "%s": skipped', name, number, columns.path)
                continue
            item = _item_from_row(row, base, columns)
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


def _read_parquet(f: Any, path: str, base: str, columns: Columns) -> Iterator[Item]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"cannot read manifest {path}: {exc}") from None
    _require_path_column(pf.schema_arrow.names, path, columns)
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            item = _item_from_row(from_parquet(row), base, columns)
            if item is not None:
                yield item


def _require_path_column(names: list[str], path: str, columns: Columns = Columns()) -> None:
    if columns.path not in names:
        if columns.path == "path":
            raise InputError(
                f"manifest {path} has no 'path' column: add one with the image paths, or name the column that "
                "holds them with --path-column (--image-column for image bytes)"
            )
        raise InputError(f"manifest {path} has no {columns.path!r} column (--path-column): check its name")


def _item_from_row(row: dict[str, Any], base: str | None, columns: Columns = Columns()) -> Item | None:
    value = row.get(columns.path)
    if value is None or str(value).strip() == "":
        return None
    extra = {k: v for k, v in row.items() if k != columns.path}
    return Item(_resolve(str(value).strip(), base), extra)


def _resolve(path: str, base: str | None) -> str:
    """A manifest's path as it is read: a URL as it is; a relative path against the manifest's folder (a folder
    in object storage too)."""
    if locations.is_remote(path):
        return path
    path = locations.local_path(path)
    if base and locations.is_remote(base) and not path.startswith("/"):
        head, _, folder = base.partition("://")
        return f"{head}://{posixpath.normpath(posixpath.join(folder, path))}"
    path = os.path.expanduser(path)
    if base and not os.path.isabs(path):
        path = os.path.join(base, path)
    return os.path.normpath(path)
