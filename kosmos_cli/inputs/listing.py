"""What an input names: one `Item` per image, which manifest `Columns` name it, and what a listing did not see.

The types every stage that reads inputs shares (sources, locations, tasks, the pipeline), with the names by which
inputs are told apart: a manifest by its extension, a folder kosmos drew into by its marker. A leaf: it imports
nothing of ours, so anything may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DRAWN_MARKER = ".kosmos-drawn"  # in every folder kosmos draws into (drawing/naming.py); folder walks skip it
EXPORT_MARKER = ".kosmos-export"  # in every folder an export writes (exports/base.py); folder walks skip it
OUR_FOLDERS = (DRAWN_MARKER, EXPORT_MARKER)  # a folder holding one of these kosmos wrote: never walked as input
MANIFEST_EXTENSIONS = (".txt", ".csv", ".jsonl", ".ndjson", ".parquet")


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
    link: bool | None = field(default=None, compare=False)  # a folder's listing says whether the path is a symlink


@dataclass(frozen=True)
class Columns:
    """Which manifest columns name an image: `path` (a path or URL), or `image` (its bytes, in a Parquet binary
    column or a struct with `bytes`), then keyed by `key`."""

    path: str = "path"
    image: str | None = None
    key: str | None = None


@dataclass
class Unlisted:
    """What a listing of the inputs did not see (sources.iter_items fills it in): `places` it could not look into
    (a folder it cannot list or that vanished, a link to nothing), and parts it skipped, each warned about as it
    was met (a manifest line that is not JSON or has no path, a table row without a key, a shard's member that is
    a link or names a place outside the shard): `skipped` of them, the first named. A pass with any did not see
    every input, so --prune removes nothing after it."""

    places: list[str] = field(default_factory=list)
    skipped: int = 0
    first_skipped: str | None = None

    def skip(self, where: str, count: int = 1) -> None:
        """`count` parts skipped, the first of them at `where`."""
        self.skipped += count
        if self.first_skipped is None:
            self.first_skipped = where

    def __bool__(self) -> bool:
        return bool(self.places) or self.skipped > 0

    def line(self) -> str:
        """What was not seen, in one line: the first of each kind named, the rest counted."""
        parts = []
        if self.places:
            parts.append(
                f"could not look into {_more(self.places[0], len(self.places))} (a folder it cannot list or that "
                "vanished, or a link to nothing)"
            )
        if self.skipped:
            parts.append(f"skipped {_more(self.first_skipped or '', self.skipped)} (warned above)")
        return f"this pass {' and '.join(parts)}, so it did not see every input"


def _more(first: str, count: int) -> str:
    return f"{first} and {count - 1} more" if count > 1 else first
