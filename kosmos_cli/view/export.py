"""The `kosmos export` command line that exports what the page shows.

`--classes` and `--min-score` say the boxes the page draws; `kosmos export` of the whole results file then
writes those boxes in every image with an ok record. When the page shows fewer records than that (a text,
phrase, region, class or error filter), the page offers those records as a JSONL file (`shown.jsonl`, every
record whole, image paths made absolute so it exports from any folder) and the command line for it.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from typing import Any

from ..errors import UsageError
from ..exports import FORMATS
from ..inputs import locations
from .index import Index, Query

SHOWN = "shown.jsonl"


def offer(index: Index, query: Query, to: str | None = "coco") -> dict[str, Any]:
    """What the page's export box says: the command line, whether it exports exactly what is shown, and why not.
    UsageError naming the formats when `to` is not one."""
    to = to or "coco"
    if to not in FORMATS:
        raise UsageError(f"{{param}} {to!r}: one of {', '.join(FORMATS)}", param="to")
    if not index.task.detects:
        return {
            "possible": False,
            "note": f"kosmos export reads the results of ground and find; these are {index.task.name} records "
            "(descriptions of regions you gave), which hold no boxes to export",
        }

    shown, boxes = index.count_shown(query)
    ok = int(index.ok.sum())
    exact = int(index.ok[index.order(query)].sum()) == ok  # the same ok records: export skips error records
    options = []
    if query.classes:
        options += ["--classes", shlex.quote(",".join(query.classes))]
    if query.min_score is not None:
        options += ["--min-score", f"{query.min_score:g}"]
    results = shlex.quote(os.path.abspath(index.results.path))
    line = " ".join(["kosmos", "export", results, "--to", to, shlex.quote(FORMATS[to].default_out), *options])
    out: dict[str, Any] = {"possible": True, "command": line, "exact": exact, "shown": shown, "boxes": boxes}
    if exact:
        out["note"] = f"exports the {boxes} boxes shown, in all {ok} ok records"
    else:
        narrowed = " ".join(["kosmos", "export", SHOWN, "--to", to, shlex.quote(FORMATS[to].default_out), *options])
        out["note"] = (
            f"the command above exports these boxes in all {ok} ok records of the results; the page shows {shown}. "
            f"To export only those, save them as {SHOWN} and run the second command"
        )
        out["shown_command"] = narrowed
    return out


def shown_lines(index: Index, query: Query) -> Iterator[bytes]:
    """The records the query shows, whole, as JSONL; image paths absolute (resolved as the viewer opens them).
    Error records are left out: export skips them anyway."""
    wanted = {int(r) for r in index.order(query)}
    for number, row in enumerate(index.results.rows()):
        if number in wanted and row.get("status") == "ok":
            row["path"] = _absolute(index.results.source(row["path"]))
            yield (json.dumps(row) + "\n").encode()


def _absolute(path: str) -> str:
    if locations.is_remote(path):
        return path
    member = locations.split_member(path)
    if member is not None:
        return f"{_absolute(member[0])}#{member[1]}"
    return os.path.abspath(locations.local_path(path))
