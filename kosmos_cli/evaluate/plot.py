"""Precision against recall, one curve per class (pycocotools' curve at IoU 0.5), with the point the chosen
--min-score gives marked on each: a picture of what the threshold trades."""

from __future__ import annotations

from ..errors import OutputError, UsageError
from .report import EvalReport
from .scoring import EXTRA


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
            figure.savefig(path, bbox_inches="tight")
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
