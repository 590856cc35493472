"""kosmos eval: a ground or find results file measured against ground truth, and the --min-score to export with.

    truth.py     COCO, YOLO or Pascal VOC truth, read into one form (Truth); bad truth is one line
    pairing.py   which results image is which truth image: by path, relative to --root
    scoring.py   pycocotools' AP (0.50:0.95, 50, 75) overall and per class, and its matches for the sweep
    report.py    the report: the figures, the sweep, the unpaired images, the export line; as JSON or table rows
    plot.py      precision against recall per class, the chosen threshold marked (matplotlib)

The results are read as `kosmos export` reads them (`exports.source`: the same names, the same two passes) and their
phrases get their classes as `kosmos export --classes` gives them (`exports.classes`, `exports.boxes.labels`: the
same boxes, clipped the same way): by default the classes are the truth's, in its order; `classes` names them
instead (truth classes are then matched to them the same way, "dogs" -> dog). A find record's phrase is matched
like a ground phrase. Only images both have are scored; the others are counted and named.
"""

from __future__ import annotations

import importlib.util
import os
import shlex

from ..errors import InputError, UsageError
from ..exports import FORMATS
from ..exports.boxes import Dropped, Label, check_nms, labels
from ..exports.classes import Classes
from ..exports.source import images, scan
from . import plot as plotting
from . import truth as truth_files
from .pairing import Names
from .report import ClassReport, EvalReport
from .scoring import EXTRA, Pair, TrueBox, best, score, sweep

PLOT_ENDINGS = (".png", ".svg", ".pdf")


def run(
    results: str,
    truth: str,
    *,
    classes: list[str] | None = None,
    nms: float | None = None,
    root: str | None = None,
    plot: str | None = None,
) -> EvalReport:
    """Measure `results` (ground or find, JSONL, Parquet or a dataset folder) against `truth` (a COCO .json, a YOLO
    data.yaml or its folder, a Pascal VOC folder)."""
    if root is not None and not os.path.isdir(root):
        raise UsageError(f"{{param}} {root}: no such folder", param="root")
    if plot is not None:
        _check_plot(plot)
    nms = check_nms(nms)
    known = truth_files.read(truth)
    named = Classes(classes if classes is not None else _truth_classes(known))
    class_of: dict[str, int | None] = {}  # truth class name -> evaluated class (None: left out)
    for name in known.names:
        if classes is None:  # the truth's own classes: each is itself
            class_of[name] = named.index(" ".join(name.lower().split()))
        else:  # named ones: a truth class is the one it names, as a phrase would be ("dogs" -> dog)
            key = named.key(name)
            class_of[name] = None if key is None else named.index(key)
    if all(k is None for k in class_of.values()):
        raise InputError(
            f"truth {truth} has no class in common with --classes ({', '.join(named.names)}): its classes are "
            f"{', '.join(known.names[:8]) or 'none'}"
        )

    checked = scan(results, root)
    ends = {_base(image.name) for image in known.images}  # what a results image must end with to pair
    recorded: list[str] = []  # every results image's name; labels only for those that may pair
    by_name: dict[str, tuple[int, int, list[Label]]] = {}
    dropped = Dropped()
    for image in images(results, checked, root):
        recorded.append(image.name)
        if _base(image.name) in ends:
            kept = labels(image, named, None, nms, dropped)  # classed, clipped and deduplicated as export does
            by_name[image.name] = (image.width, image.height, kept)
    names = Names(recorded)

    pairs: list[Pair] = []
    missing: list[str] = []
    left_out: dict[str, int] = {}  # truth classes of no evaluated class: their boxes
    other_size = 0
    for image_truth in known.images:
        paired = names.pair(image_truth.name, root)
        if paired is None:
            missing.append(image_truth.name)
            continue
        width, height, predictions = by_name[paired]
        pair = Pair(image_truth.name, image_truth.width, image_truth.height, predictions=predictions)
        if (width, height) != (image_truth.width, image_truth.height):
            other_size += 1
        for box in image_truth.boxes:
            k = class_of.get(box.name)
            if k is None:
                left_out[box.name] = left_out.get(box.name, 0) + 1
                continue
            pair.truth.append(TrueBox(k, box.box, box.ignored))
        pairs.append(pair)
    if not pairs:
        raise InputError(
            f"no image of truth {truth} is in {results} ({len(known.images)} in the truth, {len(recorded)} in the "
            "results): pass --root FOLDER, the folder the truth's image paths are relative to"
        )
    unlabelled = sorted(set(recorded) - names.paired())

    figures = score(pairs, named.names)
    overall_sweep = sweep([m for per in figures.matches for m in per], sum(figures.truth_counted))
    chosen = best(overall_sweep)
    reports = []
    for k, name in enumerate(named.names):
        class_sweep = sweep(figures.matches[k], figures.truth_counted[k])
        at = next(c for c in class_sweep if c.min_score == chosen.min_score) if chosen else None
        reports.append(
            ClassReport(
                name,
                truth_boxes=sum(1 for p in pairs for b in p.truth if b.cls == k),
                predictions=sum(1 for p in pairs for q in p.predictions if q.cls == k),
                ap=figures.class_ap[k],
                ap50=figures.class_ap50[k],
                ap75=figures.class_ap75[k],
                at_best=at,
                sweep=class_sweep,
                curve=figures.class_curve[k],
            )
        )
    overall = ClassReport(
        "all",
        truth_boxes=sum(r.truth_boxes for r in reports),
        predictions=sum(r.predictions for r in reports),
        ap=figures.ap,
        ap50=figures.ap50,
        ap75=figures.ap75,
        at_best=chosen,
        sweep=overall_sweep,
    )
    report = EvalReport(
        results=results,
        truth=truth,
        format=known.format,
        overall=overall,
        classes=reports,
        sweep=overall_sweep,
        best=chosen,
        command=export_line(results, known.format, named.names, root, chosen.min_score if chosen else None, nms),
        images=len(pairs),
        truth_images=len(known.images),
        result_images=len(set(recorded)),
        missing=missing,
        unlabelled=unlabelled,
        recall_points=figures.recall_points,
        truth_left_out=left_out,
        unnamed=dropped.unnamed,
        duplicates=dropped.duplicates,
        other_size=other_size,
        errors=checked.errors,
        unusable=checked.unusable,
    )
    if plot is not None:
        from .plot import draw

        draw(report, plot)
        report.plot = plot
    return report


def export_line(
    results: str, to: str, classes: list[str], root: str | None, min_score: float | None, nms: float | None = None
) -> str:
    """The kosmos export command that writes these results as the truth's format, with the classes evaluated, the
    threshold chosen and the same --nms."""
    line = ["kosmos", "export", shlex.quote(results), "--to", to, shlex.quote(FORMATS[to].default_out)]
    line += ["--classes", shlex.quote(",".join(classes))]
    if min_score is not None:
        line += ["--min-score", f"{min_score:g}"]
    if nms is not None:
        line += ["--nms", f"{nms:g}"]
    if root is not None:
        line += ["--root", shlex.quote(root)]
    return " ".join(line)


def _truth_classes(known: truth_files.Truth) -> list[str]:
    """The truth's classes as named classes: each once (case and spacing aside), in the truth's order."""
    seen: dict[str, str] = {}
    for name in known.names:
        seen.setdefault(" ".join(name.lower().split()), name)
    if not seen:
        raise InputError(f"truth {known.path} names no class: give one with classes and boxes")
    return list(seen.values())


def _base(name: str) -> str:
    return name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def _check_plot(plot: str) -> None:
    if not plot.lower().endswith(PLOT_ENDINGS):
        raise UsageError(f"{{param}} {plot}: name a .png (or .svg, .pdf) file", param="plot")
    parent = os.path.dirname(os.path.abspath(plot))
    if not os.path.isdir(parent):
        raise UsageError(f"{{param}} {plot}: its folder {parent} does not exist", param="plot")
    plotting.check_path(plot)
    if importlib.util.find_spec("matplotlib") is None:  # said before anything is measured
        raise UsageError(f"{{param}} draws with matplotlib: {EXTRA}", param="plot")


__all__ = ["ClassReport", "EvalReport", "export_line", "run"]
