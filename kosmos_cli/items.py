"""What an input names: one `Item` per image, and which manifest `Columns` name it.

The types every stage that reads inputs shares (sources, locations, tasks, the pipeline), with the names by which
inputs are told apart: a manifest by its extension, a folder kosmos drew into by its marker. A leaf: it imports
nothing of ours, so anything may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DRAWN_MARKER = ".kosmos-drawn"  # in every folder kosmos draws into (drawing/naming.py); folder walks skip it
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


@dataclass(frozen=True)
class Columns:
    """Which manifest columns name an image: `path` (a path or URL), or `image` (its bytes, in a Parquet binary
    column or a struct with `bytes`), then keyed by `key`."""

    path: str = "path"
    image: str | None = None
    key: str | None = None
