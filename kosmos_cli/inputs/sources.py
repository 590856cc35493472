"""Inputs -> a stream of `Item`s: folders, image files, globs, brace patterns, manifests, URLs, "-" for stdin.

Folders are walked recursively in sorted order, hidden entries skipped, symlinked folders followed once (a
loop is not followed forever). A folder kosmos draws or exports into (it holds DRAWN_MARKER or EXPORT_MARKER) is
left out of the walk of a folder around it, so a nightly `--draw` or a YOLO export with copies inside the library
is never grounded as new photos; named itself, it is walked. Our other outputs (results files, their `.parts/`
and `.lock`) are never image files, so never yielded. The same file reached twice is yielded once. Nothing is held
in memory but the identities of what was already yielded.

Where each input lives and how it is listed is `locations/`'s: manifests (locations/manifests.py), WebDataset
shards (shards.py), Parquet image tables (table.py), object storage (fs.py), URLs (http.py). Paths on stdin are
read as a text manifest's lines are.
"""

from __future__ import annotations

import functools
import glob
import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

from ..errors import InputError, UsageError
from .images import IMAGE_EXTENSIONS, NOT_REGULAR, is_image_path, is_special
from .listing import DRAWN_MARKER, EXPORT_MARKER, MANIFEST_EXTENSIONS, OUR_FOLDERS, Columns, Item, Unlisted
from .locations import FetchOptions, Unreadable, is_local, is_remote, is_url, local_path, named_suffix
from .locations.fs import check_remote, expand_remote
from .locations.manifests import read_lines, read_manifest, unique_names

log = logging.getLogger("kosmos_cli")

_GLOB_CHARS = set("*?[")


def check_inputs(inputs: Iterable[str], fetch: FetchOptions = FetchOptions()) -> list[str]:
    """Fail early, before a model loads (and before an output is made), on arguments that name nothing.

    An http(s) URL of an image is taken as named (a 404 is that image's error record); one of a manifest or table
    is asked for (with `fetch`'s timeout and retries), as it cannot be read at all otherwise; a URL of another
    filesystem is looked up there (a missing fsspec package is named); a brace pattern
    (`shards/{00000..00127}.tar`) is checked for each path it stands for."""
    inputs = list(inputs)
    if not inputs:
        raise UsageError("no input given: name a folder, image, glob, manifest, URL, or - for paths on stdin")
    for given in inputs:
        for arg in expand_braces(given):
            arg = local_path(arg)
            if is_url(arg) and _manifest_url(arg):
                _check_manifest_url(arg, fetch)
            if arg == "-" or is_url(arg):
                continue
            if is_remote(arg):
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


def _manifest_url(url: str) -> bool:
    """An http(s) URL read as a manifest or table (see `_expand`): not a shard, and named like a manifest."""
    return not url.lower().endswith(_SHARD_ENDINGS) and named_suffix(url).endswith(MANIFEST_EXTENSIONS)


def _check_manifest_url(url: str, fetch: FetchOptions) -> None:
    """InputError, in the line reading it would give, when the manifest at `url` cannot be had (a 404, a server
    that does not answer): its answer is asked for, and the body left unread."""
    from .locations.http import open_response, redacted  # httpx: loaded for a URL only

    try:
        open_response(url, fetch).close()
    except Unreadable as exc:
        raise InputError(f"cannot read manifest {redacted(url)}: {exc}: check the URL") from None


_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
MAX_BRACED = 1_000_000  # paths one brace pattern may stand for


def expand_braces(pattern: str) -> list[str]:
    """The paths a brace pattern stands for, in order, as the shell (and WebDataset) expand them:
    `{00000..00127}` counts with the zero padding kept, `{a,b}` lists; several groups multiply. A path that
    exists as named (a folder called `{x}`), or holds no group, is itself."""
    match = _BRACE.search(pattern)
    if match is None or (not is_remote(pattern) and os.path.exists(pattern)):
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
    unseen: Unlisted | None = None,
    columns: Columns = Columns(),
    fetch: FetchOptions = FetchOptions(),
    share: tuple[int, int] = (0, 1),
) -> Iterator[Item]:
    """Every image named by `inputs`, once, in a stable order.

    `per_row`: for jobs with several records per image (refer, find), manifest rows that name the same image
    with different columns (another box, another phrase) are all kept; only a repeated row is dropped.
    `null`: "-" reads paths separated by NUL bytes (find -print0), each taken as it is, instead of lines.
    `unseen`: gets what the listing did not see: the places under a folder that the walk could not look into (a
    folder it cannot list or that vanished, a link to nothing), and the manifest rows it skipped (a line that is not
    JSON, a row with no path): when it holds any after the listing, the listing did not see every image.
    `columns`: which manifest columns name the image. `fetch`: how remote manifests and shards are read.
    `share` (rank, world): WebDataset shards that are not this process's (see `shard`) are not read at all.

    A table row or a shard's sample that repeats the key of an earlier one is another image under the same name,
    not the same file named again: only the first is yielded, and the others are counted in one warning.
    """
    seen: set = set()
    repeats, first_repeat = 0, ""
    for item in _expand(inputs, stdin, null, unseen, columns, fetch, share):
        key: Any = _identity(item.path)
        if per_row:
            key = (key, json.dumps(item.extra, sort_keys=True, default=str))
        if key in seen:
            if item.data is not None or item.error is not None:  # a row or sample with its own bytes
                repeats, first_repeat = repeats + 1, first_repeat or item.path
            continue
        seen.add(key)
        yield item
    if repeats:
        log.warning(
            "%d rows or samples repeat the key of an earlier one (the first: %s): only the first of each key is "
            "recorded; give each its own key (--key-column names a table's key column)",
            repeats,
            first_repeat,
        )


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
        isinstance(i, str) and i != "-" and is_local(i) and not i.lower().endswith(_SHARD_ENDINGS) for i in inputs
    )


def _identity(path: str) -> tuple[int, int] | str:
    if not is_local(path):
        return path  # a URL, a shard's sample: its own name
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # a missing file (or a NUL in the path): it still gets its error record, once
        return os.path.abspath(path)
    return (st.st_dev, st.st_ino)


_SHARD_ENDINGS = (".tar", ".tar.gz", ".tgz")
_NOT_A_FILE = f"{NOT_REGULAR}: a manifest is read from a file (for paths from a pipe, give - and pipe them in)"


def _expand(
    inputs: Iterable[str],
    stdin: IO[str] | None,
    null: bool = False,
    unseen: Unlisted | None = None,
    columns: Columns = Columns(),
    fetch: FetchOptions = FetchOptions(),
    share: tuple[int, int] = (0, 1),
) -> Iterator[Item]:
    unlisted = unseen.places if unseen is not None else None
    shards = 0  # WebDataset shards met so far: each one's number decides its process
    for given in inputs:
        if given == "-":
            stream = stdin if stdin is not None else sys.stdin
            if null:
                yield from (Item(p if is_remote(p) else os.path.normpath(p)) for p in _nul_separated(stream) if p)
            else:
                yield from read_lines(_stdin_lines(stream), base=None, name="stdin", columns=columns, unseen=unseen)
            continue
        for arg in map(local_path, expand_braces(given)):
            if arg.lower().endswith(_SHARD_ENDINGS) and "#" not in arg:
                number, shards = shards, shards + 1
                if number % share[1] == share[0]:
                    from .locations.shards import iter_shard  # tarfile, http.client: loaded for a shard only

                    yield from iter_shard(arg, number, fetch, unseen)
            elif is_url(arg) and _manifest_url(arg):
                from .locations.http import open_url  # httpx: loaded for a URL only

                yield from read_manifest(arg, columns, functools.partial(open_url, fetch=fetch), unseen, fetch)
            elif is_url(arg):
                yield Item(arg)
            elif is_remote(arg):
                yield from expand_remote(arg, columns, unseen, fetch)
            elif os.path.isdir(arg):
                yield from walk_folder(arg, unlisted)
            elif os.path.exists(arg):
                if arg.lower().endswith(MANIFEST_EXTENSIONS) and is_special(arg):
                    yield Item(os.path.normpath(arg), error=_NOT_A_FILE)  # a FIFO: never waited on
                elif arg.lower().endswith(MANIFEST_EXTENSIONS):
                    yield from read_manifest(arg, columns, unseen=unseen, fetch=fetch)
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
                yield Item(os.path.normpath(path), link=_is_link(entry))
            elif entry.is_symlink() and not os.path.exists(path):
                missed(path)  # a link to nothing: perhaps to a folder on a disk that is not mounted

    yield from walk(top)


def _is_link(entry: os.DirEntry) -> bool | None:
    """Whether a folder's entry is a symbolic link, as its listing says (free: the resume key need not look again);
    None where the listing did not say and looking failed."""
    try:
        return entry.is_symlink()
    except OSError:
        return None


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


__all__ = [  # with the names that moved to inputs/listing.py and locations/manifests.py, still importable from here
    "DRAWN_MARKER",
    "EXPORT_MARKER",
    "MANIFEST_EXTENSIONS",
    "OUR_FOLDERS",
    "Columns",
    "Item",
    "check_inputs",
    "countable",
    "expand_braces",
    "iter_items",
    "nothing_found",
    "read_manifest",
    "shard",
    "unique_names",
    "walk_folder",
]
