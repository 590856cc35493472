"""The viewer's one way into a results file: the columns its grid needs for every record, and one whole record.

    results = open_results("results.parquet")     # InputError, one line, when it cannot be read
    results.task, len(results)                    # the task that wrote it; how many records
    results.table()                               # Arrow: path, status, error, width, height, the task's fields
    results.head(offset, limit)                   # the same, of a few records, read without reading them all
    results.record(row)                           # one whole record as written (carried columns too)
    results.image_path(row)                       # the image it names, as recorded
    results.signature == signature(path)          # False once the file (or a part) was replaced or changed

What a results path is (a JSONL file, a Parquet file, a folder of Parquet parts; a FIFO, a missing path or a folder
without parts refused in one line) is the one reader's to say (output/reader/); what the viewer adds is random
access by row: a Parquet file read column by column and by row group (parquet_table.py), a JSONL file read once
into an Arrow table of cards with each record's byte offset (jsonl_table.py).

A results file can change while it is viewed (a `--prune` or `--overwrite` rewrites it, a run appends to it, a
copy is cut short). `signature` tells (device, inode, size, modification time of each file); the viewer reads it
again when it differs. Until then the records read are those of the file as it was opened: a JSONL file is read
through the file it opened (still the old one after a rename over it), a Parquet part is read only when it is
still the file opened; a record that is no longer where it was is `Changed`, never another record.
"""

from __future__ import annotations

import os

from ..errors import InputError
from ..inputs import locations
from ..output import reader
from .cards import MAX_DEPTH, Changed, Results, card_schema, stat_of, viewable
from .jsonl_table import JsonlResults
from .parquet_table import ParquetResults

__all__ = [
    "MAX_DEPTH",
    "Changed",
    "JsonlResults",
    "ParquetResults",
    "Results",
    "card_schema",
    "grown",
    "open_results",
    "signature",
    "viewable",
]


def open_results(path: str) -> Results:
    """The results at `path`: a .jsonl or .parquet file of kosmos ground, refer or find, or a folder of Parquet
    parts. InputError, one line saying what to pass, when it cannot be read."""
    path = os.fspath(path)
    if locations.is_remote(path):
        raise InputError(
            f"{path}: kosmos view reads local results: copy the results file (or folder of parts) here first, "
            "then view the copy"
        )
    source = reader.results_path(path, reader.VIEW)
    if source.kind == reader.JSONL:
        return JsonlResults(path)
    return ParquetResults(path, source.files())


def signature(path: str) -> tuple:
    """What tells a results file (or folder of parts) from a changed one: each file's device, inode, size and
    modification time (a folder: which parts it holds, and theirs). Cheap: a stat per file, nothing read."""
    try:
        if os.path.isdir(path):
            return tuple((name, stat_of(os.stat(name))) for name in reader.results_path(path, reader.VIEW).files())
        return stat_of(os.stat(path))
    except (OSError, InputError):
        return ("gone",)


def grown(old: Results, new: Results) -> bool:
    """Whether `new` is `old` with records added after its own (a run appending, a part added): the same task,
    and the same card columns for every record `old` has, so a record's number still names the same record."""
    if new.task is not old.task or len(new) < len(old):
        return False
    before = old.table()
    return new.table().slice(0, before.num_rows).equals(before)
