"""What kosmos eval found: the figures overall and per class, the --min-score sweep, the images left unpaired, and
the `kosmos export` line that uses the best threshold. One object; `as_dict` is the JSON the CLI prints with --json,
`class_rows` and `sweep_rows` what its tables show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .scoring import Count

SHOWN_THRESHOLDS = 0.05  # the terminal's sweep table shows every this-many (and the best); --json has them all


@dataclass
class ClassReport:
    """One class (or "all"): pycocotools' AP figures, how many truth boxes and predictions, and at the best
    threshold its precision, recall and F1 (IoU 0.5). A figure is None where the class has no truth box."""

    name: str
    truth_boxes: int
    predictions: int
    ap: float | None
    ap50: float | None
    ap75: float | None
    at_best: Count | None = None
    sweep: list[Count] = field(default_factory=list, repr=False)
    curve: list[float | None] = field(default_factory=list, repr=False)  # precision at each of COCO's recall points

    def as_dict(self, recall_points: list[float]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "truth_boxes": self.truth_boxes,
            "predictions": self.predictions,
            "ap": self.ap,
            "ap50": self.ap50,
            "ap75": self.ap75,
            "at_best": _count(self.at_best),
        }
        if self.curve:
            out["curve"] = [{"recall": r, "precision": p} for r, p in zip(recall_points, self.curve) if p is not None]
        return out


@dataclass
class EvalReport:
    """Everything one kosmos eval measured (see `kosmos_cli.evaluate.run`)."""

    results: str
    truth: str
    format: str  # the truth's: coco, yolo or voc
    overall: ClassReport
    classes: list[ClassReport]
    sweep: list[Count]  # every class together
    best: Count | None  # the threshold with the best F1; None when no threshold finds a right box
    command: str  # the kosmos export line that uses it
    images: int  # paired: in both
    truth_images: int
    result_images: int
    missing: list[str]  # images of the truth without an ok record in the results
    unlabelled: list[str]  # images of the results that the truth does not have
    recall_points: list[float] = field(default_factory=list, repr=False)
    truth_left_out: dict[str, int] = field(default_factory=dict)  # truth classes of no evaluated class: their boxes
    unnamed: int = 0  # predictions whose phrase names no class: left out, as export leaves them
    duplicates: int = 0  # predictions removed by --nms, as export removes them
    other_size: int = 0  # paired images whose size in the truth is not the results': compared as they are
    errors: int = 0  # error records of the results
    unusable: int = 0  # lines or records of the results that cannot be used
    plot: str | None = None  # the picture written, if asked for

    def as_dict(self) -> dict[str, Any]:
        """The whole report as JSON-ready values (what --json prints)."""
        return {
            "results": self.results,
            "truth": self.truth,
            "format": self.format,
            "images": {
                "paired": self.images,
                "truth": self.truth_images,
                "results": self.result_images,
                "missing_from_results": self.missing,
                "not_in_truth": self.unlabelled,
                "other_size": self.other_size,
            },
            "overall": self.overall.as_dict(self.recall_points) | {"curve": None},
            "classes": [c.as_dict(self.recall_points) for c in self.classes],
            "sweep": [_count(c) for c in self.sweep],
            "best": _count(self.best),
            "command": self.command,
            "left_out": {
                "truth_classes": self.truth_left_out,
                "predictions_naming_no_class": self.unnamed,
                "predictions_removed_by_nms": self.duplicates,
            },
            "records": {"errors": self.errors, "unusable": self.unusable},
            "plot": self.plot,
        }

    def class_rows(self) -> tuple[list[str], list[list[str]]]:
        """The per-class table: headers and rows of text, the overall row last."""
        headers = ["class", "AP", "AP50", "AP75", "truth", "pred", "P", "R", "F1"]
        rows = []
        for c in [*self.classes, self.overall]:
            b = c.at_best
            rows.append(
                [
                    c.name,
                    _fig(c.ap),
                    _fig(c.ap50),
                    _fig(c.ap75),
                    str(c.truth_boxes),
                    str(c.predictions),
                    _fig(b.precision if b else None),
                    _fig(b.recall if b else None),
                    _fig(b.f1 if b and c.truth_boxes else None),
                ]
            )
        return headers, rows

    def sweep_rows(self) -> tuple[list[str], list[list[str]]]:
        """The sweep table (every SHOWN_THRESHOLDS, and the best): --min-score, right, wrong, missed, P, R, F1."""
        step = round(SHOWN_THRESHOLDS * 100)
        shown = [c for c in self.sweep if round(c.min_score * 100) % step == 0 or c is self.best]
        while len(shown) > 1 and shown[-1].tp + shown[-1].fp == 0 and shown[-2].tp + shown[-2].fp == 0:
            shown.pop()  # thresholds above every score: one such row says it
        headers = ["--min-score", "right", "wrong", "missed", "precision", "recall", "F1"]
        rows = [
            [
                f"{c.min_score:.2f}" + (" (best)" if c is self.best else ""),
                str(c.tp),
                str(c.fp),
                str(c.fn),
                _fig(c.precision),
                _fig(c.recall),
                _fig(c.f1),
            ]
            for c in shown
        ]
        return headers, rows

    def notes(self) -> list[str]:
        """What the tables do not say: unpaired images, left-out classes and boxes, the best threshold."""
        out = [f"{self.images} images paired of {self.truth_images} in the truth and {self.result_images} results"]
        if self.missing:
            out.append(f"{len(self.missing)} truth images lack an ok record in the results: {_some(self.missing)}")
        if self.unlabelled:
            out.append(f"{len(self.unlabelled)} images of the results are not in the truth: {_some(self.unlabelled)}")
        if self.other_size:
            out.append(f"{self.other_size} paired images have another size in the truth than in the results")
        if self.truth_left_out:
            left = ", ".join(f"{name} ({n} boxes)" for name, n in self.truth_left_out.items())
            out.append(f"truth classes naming none of the classes evaluated, left out: {left}")
        if self.unnamed:
            out.append(f"{self.unnamed} predicted boxes name none of the classes, left out (as export leaves them)")
        if self.duplicates:
            out.append(f"{self.duplicates} predicted boxes removed by --nms, as export removes them")
        if self.best is None:
            out.append("no --min-score finds a right box at IoU 0.5")
        else:
            b = self.best
            out.append(
                f"best F1 {b.f1:.3f} at --min-score {b.min_score:g} (precision {_fig(b.precision)}, "
                f"recall {_fig(b.recall)}, IoU 0.5)"
            )
        if self.plot:
            out.append(f"precision-recall per class drawn -> {self.plot}")
        return out


def _count(c: Count | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "min_score": c.min_score,
        "right": c.tp,
        "wrong": c.fp,
        "missed": c.fn,
        "precision": c.precision,
        "recall": c.recall,
        "f1": c.f1,
    }


def _fig(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _some(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")
