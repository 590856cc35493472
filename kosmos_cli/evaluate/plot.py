"""Precision against recall, one curve per class (pycocotools' curve at IoU 0.5), with the point the chosen
--min-score gives marked on each: a picture of what the threshold trades."""

from __future__ import annotations

import os

from ..errors import OutputError, UsageError
from .report import EvalReport
from .scoring import EXTRA

MARK = "kosmos eval"  # in each picture's metadata: a file there already is overwritten only when it says this


def ours(path: str) -> bool:
    """Whether the file at `path` is a picture kosmos eval drew (its metadata names it): only such a one is replaced."""
    if path.lower().endswith(".png"):
        from PIL import Image

        try:
            with Image.open(path) as picture:
                return picture.info.get("Software") == MARK
        except (OSError, ValueError):
            return False
    try:
        with open(path, "rb") as f:
            return MARK.encode() in f.read(1 << 16)  # an SVG's or a PDF's Creator, near its start
    except OSError:
        return False


def check_path(path: str) -> None:
    """Refuse a --plot file that would replace one kosmos did not draw (a photo, a results file, anything else)."""
    if os.path.lexists(path) and not (os.path.isfile(path) and ours(path)):
        raise UsageError(
            f"{{param}} {path} is there and is not a picture kosmos eval drew: kosmos never replaces a file it did "
            "not write; name a new file",
            param="plot",
        )


def draw(report: EvalReport, path: str) -> None:
    """Write the picture to `path` (.png, .svg or .pdf, by its ending)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: a file
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError(f"--plot draws with matplotlib: {EXTRA}") from None
    figure, axes = plt.subplots(figsize=(7, 5.5), dpi=120)
    try:
        for n, c in enumerate(report.classes):
            if c.ap50 is None:
                continue  # no truth box: no curve
            colour = f"C{n % 10}"
            points = [(r, p) for r, p in zip(report.recall_points, c.curve) if p is not None]
            while len(points) > 1 and points[-1][1] == 0:  # COCO fills recall it never reaches with 0: not drawn
                points.pop()
            label = f"{c.name} (AP50 {c.ap50:.2f})"
            axes.plot([r for r, _ in points], [p for _, p in points], color=colour, label=label, linewidth=1.6)
            b = c.at_best
            if b is not None and b.precision is not None and b.recall is not None:
                axes.plot(b.recall, b.precision, "o", color=colour, markersize=7, markeredgecolor="black")
        title = "precision vs recall at IoU 0.5"
        if report.best is not None:
            title += f"; dots: --min-score {report.best.min_score:g} (best F1 {report.best.f1:.2f})"
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("recall")
        axes.set_ylabel("precision")
        axes.set_xlim(0, 1.02)
        axes.set_ylim(0, 1.02)
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(loc="lower left", fontsize=8)
        try:
            key = "Software" if path.lower().endswith(".png") else "Creator"
            figure.savefig(path, bbox_inches="tight", metadata={key: MARK})
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
