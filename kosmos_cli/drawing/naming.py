"""Where each annotated image comes from and goes to, and writing it there safely.

A folder kosmos draws into is ours: `claim` marks it with a `.kosmos-drawn` file when kosmos makes it or first
writes in it, and refuses a folder that already holds anything without that mark, before anything is written. So
kosmos only ever writes or replaces files in a folder of its own, never over a user's files (an original image
whose path matches a drawn one), and folder walks know to leave such a folder out (sources.walk_folder).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from PIL import Image

from ..errors import UsageError
from ..inputs import locations
from ..inputs.listing import DRAWN_MARKER
from ..inputs.names import recorded
from ..output.atomic import atomic_write
from ..output.placement import fit, remote_layout, write_error

_JPEG = (".jpg", ".jpeg", ".jpe", ".jfif")
_GLOB = re.compile(r"[*?\[]")
_MARKER_TEXT = (
    "kosmos drew the images in this folder: later draws may write over them, and kosmos ground, refer "
    "and find leave this folder out when they walk a folder around it.\n"
)


def input_root(inputs: Iterable[str]) -> str | None:
    """The common folder of a run's inputs (folders, files, globs, manifests, -): where the layout starts."""
    folders = []
    for arg in inputs:
        if locations.is_remote(arg):
            continue  # its drawings are laid out by host or bucket (Targets)
        if arg == "-":
            folders.append(os.getcwd())
        elif os.path.isdir(arg):
            folders.append(os.path.abspath(arg))
        elif os.path.exists(arg):
            folders.append(os.path.dirname(os.path.abspath(arg)))
        else:  # a glob: the folder before its first wildcard
            folders.append(os.path.abspath(os.path.dirname(_GLOB.split(arg, 1)[0]) or "."))
    return os.path.commonpath(folders) if folders else None


def claim(out_dir: str, param: str) -> None:
    """Make `out_dir` a folder of ours (made if missing, marked with DRAWN_MARKER); UsageError, before anything
    is written, when it holds anything but is not marked: a user's folder, whose files a draw could write over.
    `param`: the library parameter that named the folder (the CLI says its flag)."""
    marker = os.path.join(out_dir, DRAWN_MARKER)
    try:
        taken = (
            os.path.isdir(out_dir)
            and not os.path.exists(marker)
            and any(name != DRAWN_MARKER for name in os.listdir(out_dir))
        )
    except OSError as exc:
        raise UsageError(
            f"{{param}} {out_dir}: cannot read that folder ({exc.strerror or exc}): name a folder you can write to",
            param=param,
        ) from None
    if taken:
        raise UsageError(
            f"{{param}} {out_dir} already holds files that kosmos did not draw (it has no "
            f"{DRAWN_MARKER}): name a new or empty folder, so that nothing of yours is written over",
            param=param,
        )
    try:
        os.makedirs(out_dir, exist_ok=True)
        with open(marker, "x", encoding="utf-8") as f:
            f.write(_MARKER_TEXT)
    except FileExistsError:
        pass  # marked already (by an earlier draw, or another process of this run)
    except OSError as exc:
        raise UsageError(
            f"{{param}} {out_dir}: cannot make that folder ({exc.strerror or exc}): name a folder you can write to",
            param=param,
        ) from None


class Targets:
    """The output files of one draw: each source's path below `base` in `out_dir`, no name given twice."""

    def __init__(self, out_dir: str, base: str | None):
        self.out_dir, self.base = out_dir, None if base is None else recorded(base)  # as the sources are named
        self._used: set[str] = set()

    def __call__(self, source: str) -> str:
        """The output file for `source`: its path below `base`, JPEG kept as JPEG, anything else as PNG.

        A remote image goes below its host or bucket (`https://host/a/b.jpg` -> `host/a/b.jpg`); a sample of a
        shard or table below the container's name (`shards/00001.tar#k7` -> `00001/k7.png`, its key kept)."""
        member = locations.split_member(source)
        if not locations.is_local(source):  # a URL, or a sample of a shard or table
            rel = remote_layout(source, member)
        else:
            full = os.path.abspath(source)
            rel = os.path.relpath(full, self.base) if self.base else os.path.basename(full)
            if rel == os.pardir or rel.startswith(os.pardir + os.sep):  # outside base: keep its whole path
                rel = os.path.splitdrive(full)[1].lstrip(os.sep)
        stem, ext = os.path.splitext(fit(rel))  # a name too long for the file system, shortened
        ext = ext if ext.lower() in _JPEG else ".png"
        name, n = stem + ext, 1
        while name.lower() in self._used:  # another record of this image, or a.png beside a.bmp
            n += 1
            name = f"{stem}-{n}{ext}"
        self._used.add(name.lower())
        return os.path.join(self.out_dir, name)


def save(image: Image.Image, target: str, option: str) -> None:
    """Write `image` to a temporary file and rename it, so no half-written image is ever left; JPEG for a
    JPEG name, else PNG. OutputError (naming `option`, the folder given) when it cannot be written."""
    jpeg = target.lower().endswith(_JPEG)
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with atomic_write(target, "wb", sync=False) as f:
            # JPEG without chroma subsampling: thin coloured lines keep their colour
            image.save(f, format="JPEG" if jpeg else "PNG", **({"quality": 92, "subsampling": 0} if jpeg else {}))
    except OSError as exc:
        raise write_error(exc, target, option) from None
