"""The figures, computed by pycocotools: COCO AP (0.50:0.95), AP50 and AP75 overall and per class, the
precision-recall curve at IoU 0.5, and the matches the --min-score sweep counts.

pycocotools does all of the geometry and the AP: we hand it the truth and the predictions as COCO dicts and read
its results. Overall AP is its `summarize()`'s `stats`; a class's AP is the mean of its `precision` array over that
class's slice (area "all", 100 detections), as `summarize()` does for all classes at once. The sweep reuses its
per-image matching at IoU 0.5 (each truth box matched once, predictions taken best-scored first): a prediction is
right when COCO matched it. Dropping the predictions below a threshold leaves the matches of those above it as they
were (a prediction's match depends only on better-scored ones), so counting matched predictions at or above each
threshold gives what an export with that --min-score would score.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

from ..errors import UsageError
from ..exports.boxes import Label

EXTRA = "pip install 'kosmos-ground[eval]'"
THRESHOLDS = tuple(round(i / 100, 2) for i in range(101))  # the --min-score values swept


@dataclass(frozen=True)
class TrueBox:
    cls: int
    box: tuple[float, float, float, float]
    ignored: bool = False  # crowd (COCO) or difficult (VOC): a prediction on it is neither right nor wrong


@dataclass
class Pair:
    """One image both the truth and the results have: its size, its true boxes and the predictions in it."""

    name: str
    width: int
    height: int
    truth: list[TrueBox] = field(default_factory=list)
    predictions: list[Label] = field(default_factory=list)  # as export labels them; a box without a score is 0 to COCO


@dataclass(frozen=True)
class Count:
    """What a --min-score keeps, at IoU 0.5: right and wrong predictions, truth boxes missed."""

    min_score: float
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0


@dataclass
class Scores:
    """pycocotools' figures. Per class lists are indexed like the classes; None where a class has no truth box."""

    ap: float | None
    ap50: float | None
    ap75: float | None
    class_ap: list[float | None]
    class_ap50: list[float | None]
    class_ap75: list[float | None]
    recall_points: list[float]  # COCO's 101 recall thresholds
    class_curve: list[list[float | None]]  # precision at each recall point, IoU 0.5 (None: not reached)
    matches: list[list[tuple[float | None, bool]]]  # per class: (score, right at IoU 0.5) of each counted prediction
    truth_counted: list[int]  # per class: truth boxes that count (not crowd or difficult)


def score(pairs: list[Pair], names: list[str]) -> Scores:
    """Run COCOeval (bbox) over the paired images."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise UsageError(f"kosmos eval computes AP with pycocotools: {EXTRA}") from None
    import numpy as np

    images: list[dict] = []
    annotations: list[dict] = []
    detections: list[dict] = []
    for image_id, pair in enumerate(pairs, 1):
        images.append({"id": image_id, "file_name": pair.name, "width": pair.width, "height": pair.height})
        for box in pair.truth:
            x1, y1, x2, y2 = box.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": box.cls + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(box.ignored),
                }
            )
        for p in pair.predictions:
            x1, y1, x2, y2 = p.box
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": p.cls + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": 0.0 if p.score is None else float(p.score),
                }
            )
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(names)]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress: stdout is ours, for data
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations, "categories": categories}
        truth.createIndex()
        if detections:
            found = truth.loadRes(detections)
        else:  # loadRes refuses an empty list: the same, by hand
            found = COCO()
            found.dataset = {"images": list(images), "annotations": [], "categories": categories}
            found.createIndex()
        run = COCOeval(truth, found, "bbox")
        run.params.imgIds = [image["id"] for image in images]
        run.params.catIds = [c["id"] for c in categories]
        run.evaluate()
        run.accumulate()
        run.summarize()
    precision = run.eval["precision"]  # [IoU thresholds, recall points, classes, areas, max detections]
    at75 = int(np.argmin(np.abs(run.params.iouThrs - 0.75)))

    def mean(values) -> float | None:
        kept = values[values > -1]
        return float(kept.mean()) if kept.size else None

    k_range = range(len(names))
    matches: list[list[tuple[float | None, bool]]] = [[] for _ in k_range]
    counted = [0 for _ in k_range]
    everything = run.params.areaRng[0]
    for image_eval in run.evalImgs:
        if image_eval is None or list(image_eval["aRng"]) != list(everything):
            continue
        k = image_eval["category_id"] - 1
        counted[k] += int(sum(1 for ignored in image_eval["gtIgnore"] if not ignored))
        for d, s in enumerate(image_eval["dtScores"]):
            if image_eval["dtIgnore"][0][d]:
                continue
            matches[k].append((float(s), bool(image_eval["dtMatches"][0][d])))
    stat = [None if v < 0 else float(v) for v in run.stats[:3]]
    return Scores(
        ap=stat[0],
        ap50=stat[1],
        ap75=stat[2],
        class_ap=[mean(precision[:, :, k, 0, -1]) for k in k_range],
        class_ap50=[mean(precision[0, :, k, 0, -1]) for k in k_range],
        class_ap75=[mean(precision[at75, :, k, 0, -1]) for k in k_range],
        recall_points=[float(r) for r in run.params.recThrs],
        class_curve=[[None if v < 0 else float(v) for v in precision[0, :, k, 0, -1]] for k in k_range],
        matches=matches,
        truth_counted=counted,
    )


def sweep(matches: list[tuple[float | None, bool]], truth: int, thresholds=THRESHOLDS) -> list[Count]:
    """What each --min-score keeps of `matches` ((score, right) pairs) against `truth` boxes."""
    out = []
    for t in thresholds:
        tp = sum(1 for s, right in matches if right and s is not None and s >= t)
        fp = sum(1 for s, right in matches if not right and s is not None and s >= t)
        out.append(Count(t, tp, fp, truth - tp))
    return out


def best(counts: list[Count]) -> Count | None:
    """The threshold with the best F1 (the highest of equals: the same boxes kept, with the most margin against
    weak ones); None when none finds a right box."""
    top = max((c.f1 for c in counts), default=0.0)
    return next((c for c in reversed(counts) if c.f1 == top), None) if top > 0 else None


__all__ = ["THRESHOLDS", "Count", "Pair", "Scores", "TrueBox", "best", "score", "sweep"]
