"""From the boxes found in an image to its labels: a class each, weak ones and duplicates dropped, each counted."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..tasks.scores import passes
from .classes import Classes
from .source import Image


@dataclass(frozen=True)
class Label:
    """One labelled box: class index (from 0), pixel box [x1, y1, x2, y2] of the displayed image, score."""

    cls: int
    box: tuple[int, int, int, int]
    score: float | None

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


@dataclass
class Dropped:
    """Boxes left out, by reason."""

    unnamed: int = 0  # the phrase names no class (an empty phrase, or none of --classes)
    below: int = 0  # scored below --min-score, or without a score when one is asked for
    duplicates: int = 0  # removed by --nms
    empty: int = 0  # no area once clipped to the image


def labels(image: Image, classes: Classes, min_score: float | None, nms: float | None, dropped: Dropped) -> list[Label]:
    """The image's labels, in the order found; `dropped` counts what was left out. By default a class is numbered
    when its first box is kept, so no class of the export is without a box."""
    out = []
    for found in image.found:
        key = classes.key(found.phrase)
        if key is None:
            dropped.unnamed += 1
            continue
        if not passes(found.score, min_score):
            dropped.below += 1
            continue
        x1, y1, x2, y2 = found.box
        box = (
            max(0, min(x1, image.width)),
            max(0, min(y1, image.height)),
            max(0, min(x2, image.width)),
            max(0, min(y2, image.height)),
        )
        if box[2] <= box[0] or box[3] <= box[1]:
            dropped.empty += 1
            continue
        out.append(Label(classes.index(key), box, found.score))  # numbered once a box of it is kept
    if nms is not None:
        kept = suppress(out, nms)
        dropped.duplicates += len(out) - len(kept)
        out = kept
    return out


def check_nms(nms: float | None) -> float | None:
    """An --nms, checked: an IoU from 0 to 1 (UsageError naming the parameter otherwise)."""
    if nms is not None and (isinstance(nms, bool) or not isinstance(nms, (int, float)) or not 0.0 <= nms <= 1.0):
        raise UsageError(
            f"{{param}} {nms!r}: an IoU from 0 to 1 (boxes of one class overlapping more than it are "
            "duplicates), e.g. 0.5",
            param="nms",
        )
    return nms


def _score(label: Label) -> float:
    """A box's score for ranking; a box without one ranks below every scored box."""
    return label.score if label.score is not None else -1.0


def suppress(labels: list[Label], threshold: float) -> list[Label]:
    """Non-maximum suppression per class: of boxes overlapping by IoU above `threshold`, the highest score stays
    (a box without a score counts as the lowest; equal scores: the first found). Keeps the order found."""
    order = sorted(range(len(labels)), key=lambda i: (-_score(labels[i]), i))
    kept: list[int] = []
    for i in order:
        if all(labels[j].cls != labels[i].cls or iou(labels[i].box, labels[j].box) <= threshold for j in kept):
            kept.append(i)
    return [labels[i] for i in sorted(kept)]


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
