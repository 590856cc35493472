"""Exports: the boxes of a ground or find results file as labels for training a detector.

    source.py       the results' images, each with its boxes (two streaming passes; the first checks everything)
    classes.py      which class a phrase is: one per distinct phrase, or one of the classes the user names
    boxes.py        a class per box, weak boxes (--min-score) and duplicates (--nms) dropped and counted
    base.py         Writer: what a format does with an image and its labels; output checks
    coco.py         one COCO JSON file             yolo.py         an Ultralytics folder
    voc.py          Pascal VOC XML per image       labelstudio.py  Label Studio tasks with predictions, and its config

A new format is one module with a `Writer` subclass (its name, title, default OUT and the options it alone takes),
plus its line in `FORMATS` (or `register(Writer)` from outside the package): the command line's --to and OUT help,
the checks of its options and kosmos view's export line all come from the registry.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from ..errors import Interrupted, UsageError
from ..run.reports import SoloReport
from ..tasks.scores import check_min_score
from .base import Options, Writer
from .boxes import Dropped, check_nms, labels
from .classes import Classes
from .coco import Coco
from .labelstudio import LabelStudio
from .source import images, scan
from .voc import Voc
from .yolo import Yolo

log = logging.getLogger("kosmos_cli")

FORMATS: dict[str, type[Writer]] = {w.name: w for w in (Coco, Yolo, Voc, LabelStudio)}  # the registry, by --to
INTERRUPTED = "the export is not finished; run the same command again to finish it"  # said after Ctrl-C


def register(writer_type: type[Writer]) -> type[Writer]:
    """Add an export format (a `Writer` subclass) to the registry, under its `name`; usable as a decorator."""
    FORMATS[writer_type.name] = writer_type
    return writer_type


def formats_help() -> str:
    """What --to takes, for its help: "coco, yolo, voc or labelstudio"."""
    names = list(FORMATS)
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def out_help() -> str:
    """What OUT is, format by format, for its help: "coco, labelstudio: a .json file; yolo, voc: a new or empty
    folder"."""
    kinds: dict[str, list[str]] = {}
    for name, writer_type in FORMATS.items():
        kinds.setdefault(writer_type.out_kind, []).append(name)
    return "; ".join(f"{', '.join(names)}: {kind}" for kind, names in kinds.items())


@dataclass
class ExportSummary(SoloReport):
    """What an export wrote and what it left out."""

    to: str
    out: str
    images: int = 0
    boxes: int = 0
    classes: int = 0
    errors: int = 0  # error records of the results: skipped
    failed: int = 0  # images that could not be exported (YOLO: the image file is gone)
    unusable: int = 0  # lines or records of the results that cannot be used: warned, skipped
    dropped: Dropped = field(default_factory=Dropped)
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        d = self.dropped
        left = [
            f"{n} {why}"
            for n, why in (
                (d.unnamed, "naming no class"),
                (d.below, "below --min-score"),
                (d.duplicates, "removed by --nms"),
                (d.empty, "empty"),
            )
            if n
        ]
        extra = f"; boxes left out: {', '.join(left)}" if left else ""
        return (
            f"kosmos export finished: {self.images} images, {self.boxes} boxes, {self.classes} classes, "
            f"{self.errors} skipped (error records), {self.failed} failed{self.unusable_part()}{extra}, "
            f"in {self.seconds:.1f}s -> {self.out} ({self.to})"
        )


def run(
    results: str,
    to: str,
    out: str,
    *,
    classes: list[str] | None = None,
    min_score: float | None = None,
    nms: float | None = None,
    root: str | None = None,
    image_root: str | None = None,
    copy_images: bool = False,
) -> ExportSummary:
    """Export `results` (ground or find, JSONL or Parquet) to `out` in format `to`. Everything is checked, the whole
    results file included, before anything is written."""
    started = time.perf_counter()
    writer_type = FORMATS.get(str(to).lower())
    if writer_type is None:
        raise UsageError(f"unknown format {to!r} ({{param}}): use one of {', '.join(FORMATS)}", param="to")
    min_score = check_min_score(min_score)
    nms = check_nms(nms)
    if root is not None and not os.path.isdir(root):
        raise UsageError(f"{{param}} {root}: no such folder", param="root")
    given = {"image_root": image_root is not None, "copy_images": bool(copy_images)}
    for option, used in given.items():
        if used and option not in writer_type.takes:
            takers = [name for name, w in FORMATS.items() if option in w.takes]
            raise UsageError(f"{{param}} is for --to {' or '.join(takers)} only", param=option)
    named = Classes(classes)
    writer_type.check(out)
    checked = scan(results, root)

    summary = ExportSummary(to=writer_type.name, out=out, errors=checked.errors, unusable=checked.unusable)
    writer = writer_type(out, Options(results=results, root=root, image_root=image_root, copy_images=copy_images))
    try:
        for image in images(results, checked, root):
            kept = labels(image, named, min_score, nms, summary.dropped)
            problem = writer.add(image, kept, named.names)
            if problem is not None:
                summary.failed += 1
                summary.failures.append(f"{image.path}: {problem}")
                log.warning("cannot export %s: %s", image.path, problem)
                continue
            summary.images += 1
            summary.boxes += len(kept)
        writer.close(named.names)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: nothing of a run is kept, so the CLI says so
        writer.discard()
        raise Interrupted.during(exc, INTERRUPTED) from None
    except BaseException:
        writer.discard()
        raise
    summary.classes = len(named.names)
    summary.seconds = time.perf_counter() - started
    return summary


__all__ = ["FORMATS", "ExportSummary", "formats_help", "out_help", "register", "run"]
