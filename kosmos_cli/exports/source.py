"""The images of a ground or find results file, each with every box the model found in it. Streamed in two passes,
each reading the file through `reader.read` (the reader draw, export and view share).

The first pass reads every row once to check it (a results file of ours, of a task that finds boxes, images below
`--root`) and to note each image's last row; nothing is written before it ends. The second pass gathers each
image's rows (find has one per phrase, and they need not be next to each other: prompts of other lengths go through
the model in other batches) and hands the image on at its last row. What is held at once: a path per image (as
resuming holds its keys) and the boxes of images whose rows are still coming, never an image's pixels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from .. import tasks
from ..errors import UsageError
from ..inputs import locations
from ..inputs.names import recorded
from ..output import reader
from ..output.placement import fit, remote_layout

log = logging.getLogger("kosmos_cli")


@dataclass(frozen=True)
class Found:
    """One box as the results file has it: its phrase, pixel box [x1, y1, x2, y2] (displayed frame), score."""

    phrase: str
    box: tuple[int, int, int, int]
    score: float | None


@dataclass
class Image:
    """One image of the results and the boxes found in it."""

    path: str  # as recorded
    source: str  # where it can be opened: as recorded, else beside the results file
    name: str  # relative to --root ('/' separators), else as recorded
    layout: str  # its path below --root, else below the images' common folder: where per-image files go
    width: int
    height: int
    model: str | None
    found: list[Found] = field(default_factory=list)


@dataclass
class Scan:
    """What the first pass learnt."""

    task: str | None = None
    rows: int = 0
    errors: int = 0  # error records: skipped
    unusable: int = 0  # lines or records that cannot be used: warned, skipped
    last: dict[str, int] = field(default_factory=dict)  # path -> number of its last ok row
    base: str | None = None  # the common folder of the images


def scan(path: str, root: str | None) -> Scan:
    """Check every row and note where each image's rows end. Raises before anything is written."""
    out = Scan()
    for number, result in enumerate(reader.read(path), 1):
        if isinstance(result, reader.Bad):
            out.unusable += 1
            log.warning("%s", result.message(path))
            continue
        if not tasks.get(result.task).detects:
            raise UsageError(
                f"{path} holds {result.task} records: they describe regions you gave, they find no boxes; "
                "export and eval read the results of kosmos ground or kosmos find"
            )
        out.task, out.rows = result.task, number
        if not result.ok:
            out.errors += 1
            continue
        full, folder = _place(recorded(result.source))
        if root is not None and full is not None and _outside(full, root):
            raise UsageError(
                f"{{param}} {root}: {result.path} is not below it: name a folder that holds every image", param="root"
            )
        out.last[result.path] = number
        if folder is None:
            continue  # a URL or an object in a bucket: laid out by host or bucket (remote_layout)
        out.base = folder if out.base is None else os.path.commonpath([out.base, folder])
    return out


def images(path: str, found: Scan, root: str | None) -> Iterator[Image]:
    """Each image with an ok record, with all its boxes, at its last row; a row repeated (same key) counts once,
    the last one."""
    base = root if root is not None else found.base
    pending: dict[str, tuple[Image, dict[str, list[Found]]]] = {}
    for number, result in enumerate(reader.read(path), 1):
        if isinstance(result, reader.Bad) or not result.ok:
            continue  # the first pass warned about each line that cannot be used
        image_path, source = result.path, result.source
        if image_path not in pending:
            full, _ = _place(recorded(source))
            member = locations.split_member(source)
            if full is None:  # a URL, an object in a bucket (or a sample of a shard there): as recorded
                layout = _slashes(remote_layout(source, member))
            else:
                layout = _slashes(os.path.relpath(full, base) if base else os.path.basename(full))
            name = layout if root is not None and full is not None else image_path
            layout = fit(layout)  # a name too long for the file system, shortened
            if (
                full is not None and member is not None and root is not None
            ):  # the container below --root, and the sample's key
                name = _slashes(os.path.relpath(os.path.abspath(member[0]), root)) + "#" + member[1]
            image = Image(image_path, source, name, layout, result.width or 0, result.height or 0, result.model)
            pending[image_path] = (image, {})
        pending[image_path][1][result.key()] = list(_found(result))
        if found.last.get(image_path) == number:
            image, by_key = pending.pop(image_path)
            image.found = [f for boxes in by_key.values() for f in boxes]
            yield image


_CONTAINER_ENDINGS = (".tar.gz", ".tgz", ".tar", ".parquet")


def _place(source: str) -> tuple[str | None, str | None]:
    """(the full path of an image that opens at `source`, as per-image files are laid out; its folder). `source` in
    its recorded form (inputs/names.py): per-image files are named in valid UTF-8.

    A sample of a shard or table (`SHARD.tar#KEY`) is laid out as draw names it, `SHARD/KEY`, in the container's
    folder. A URL or an object in a bucket has no local place: (None, None)."""
    member = locations.split_member(source)
    if locations.is_remote(source):  # a URL, or a shard or table at one
        return None, None
    if member is None:
        full = os.path.abspath(source)
        return full, os.path.dirname(full)
    container, key = member
    stem = os.path.abspath(container)
    ending = next((e for e in _CONTAINER_ENDINGS if stem.lower().endswith(e)), "")
    stem = stem[: len(stem) - len(ending)]
    parts = [p for p in key.split("/") if p not in ("", ".", "..")]
    return os.path.join(stem, *parts) + ".png", os.path.dirname(stem)


def _found(result: reader.Result) -> Iterator[Found]:
    for region in result.regions:
        for box, score in zip(region.boxes, region.scores):
            yield Found(region.label, tuple(int(round(float(v))) for v in box), score)  # type: ignore[arg-type]


def _outside(path: str, root: str) -> bool:
    rel = os.path.relpath(path, os.path.abspath(root))
    return rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel)


def _slashes(path: str) -> str:
    return path.replace(os.sep, "/")
