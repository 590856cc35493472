"""What the grid shows: the records a query keeps, in its order, and each as a card. Built once over the card
columns (reading.py); a query then costs a pass over flat arrays, not over records.

A query (`Query`, the page's address keeps it) has

- `text`: in the caption (refer: the description; find: the phrase), the error message and the path, any case;
- `classes`: matched as `kosmos export --classes` matches ("two dogs" is dog): only the boxes of a named class
  are drawn, and only records with one are shown;
- `min_score`: boxes scored under it are hidden (a box without a score too, as `--min-score` does everywhere);
- `status`: ok or error;
- `phrase` (find) or `region` (refer, "x1,y1,x2,y2"): that one;
- `sort`: file (as written), path, best (best box first), worst (worst box first), boxes (most boxes first).
"""

from __future__ import annotations

import html
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .. import tasks
from ..drawing.colors import PALETTE, color, text_color
from ..errors import UsageError
from ..exports.classes import Classes, parse_classes
from ..tasks import Task
from ..tasks.refer import format_box
from ..tasks.scores import check_min_score, passes
from .reading import Results

SORTS = ("file", "path", "best", "worst", "boxes")
STATUSES = ("ok", "error")
FACETS = 200  # distinct phrases, classes or regions offered in the page's lists


@dataclass(frozen=True)
class Query:
    text: str = ""
    classes: tuple[str, ...] = ()
    min_score: float | None = None
    status: str | None = None
    phrase: str | None = None
    region: str | None = None
    sort: str = "file"

    @classmethod
    def from_params(cls, params: Mapping[str, list[str]]) -> Query:
        """From a URL's query (`parse_qs`); UsageError naming the parameter for a value that cannot be used."""

        def one(name: str) -> str | None:
            values = params.get(name) or []
            value = values[-1].strip() if values else ""
            return value or None

        score = one("min_score")
        try:
            min_score = check_min_score(None if score is None else float(score))
        except ValueError:
            raise UsageError(
                f"{{param}} {score!r}: a score is a number from 0 to 1, e.g. 0.3", param="min_score"
            ) from None
        if min_score is not None and not math.isfinite(min_score):
            raise UsageError("{param}: a score is a number from 0 to 1, e.g. 0.3", param="min_score")
        status = one("status")
        if status not in (None, *STATUSES):
            raise UsageError(f"{{param}} {status!r}: ok or error", param="status")
        sort = one("sort") or "file"
        if sort not in SORTS:
            raise UsageError(f"{{param}} {sort!r}: one of {', '.join(SORTS)}", param="sort")

        named = parse_classes(one("classes"), None) or []
        if named:
            Classes(named)  # a class named twice is said now
        return cls(one("text") or "", tuple(named), min_score, status, one("phrase"), one("region"), sort)

    def params(self) -> dict[str, str]:
        """The query as URL parameters, defaults left out."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value in (None, "", ()) or (f.name == "sort" and value == "file"):
                continue
            out[f.name] = ",".join(value) if f.name == "classes" else f"{value:g}" if f.name == "min_score" else value
        return out


class Index:
    """The records of a results file, ready to be filtered, sorted and paged."""

    def __init__(self, results: Results):
        import numpy as np
        import pyarrow.compute as pc

        self.results, self.task = results, results.task
        table = results.table()
        self.table = table
        self.total = table.num_rows
        status = table.column("status")
        self.ok = _numpy(pc.fill_null(pc.equal(status, "ok"), False))
        searched = ("path", self.task.text_field, "error")
        self._searched = [table.column(n) for n in searched if n is not None]
        self._lock = threading.Lock()
        self._orders: OrderedDict[Query, Any] = OrderedDict()  # the last queries' records, in order
        self._path_order = None
        self._classes: dict[tuple[str, ...], Any] = {}

        # one entry per box: its record, its phrase (an index into self.phrases) and its score (NaN: none)
        owner, phrase, boxes, scores = self.task.entity_columns(table)
        self.facet = self.task.facet  # the one value the page filters on (find: phrase; refer: region), or None
        self.facet_values = self.task.facet_values(table)
        encoded = pc.dictionary_encode(phrase)
        self.phrases: list[str | None] = encoded.dictionary.to_pylist()
        phrase_id = _numpy(pc.fill_null(encoded.indices, -1))
        n_boxes = _numpy(pc.fill_null(pc.list_value_length(boxes), 0))
        n_scores = _numpy(pc.fill_null(pc.list_value_length(scores), 0))
        entity_of_box = np.repeat(np.arange(len(n_boxes)), n_boxes)
        self.box_record = owner[entity_of_box]
        self.box_phrase = phrase_id[entity_of_box]
        self.box_score = np.full(len(entity_of_box), np.nan)
        aligned = n_scores == n_boxes  # a score for each box (else: none known)
        if aligned.any():
            values = _numpy(pc.fill_null(pc.list_flatten(scores), math.nan))
            entity_of_score = np.repeat(np.arange(len(n_scores)), n_scores)
            self.box_score[aligned[entity_of_box]] = values[aligned[entity_of_score]]

    # -- queries -------------------------------------------------------------------------------------------
    def order(self, query: Query):
        """The rows (numbers from 0, as written) the query keeps, in its order: a numpy array."""
        with self._lock:
            if query in self._orders:
                self._orders.move_to_end(query)
                return self._orders[query]
        rows = self._order(query)
        with self._lock:
            self._orders[query] = rows
            while len(self._orders) > 16:
                self._orders.popitem(last=False)
        return rows

    def _order(self, query: Query):
        import numpy as np
        import pyarrow.compute as pc

        keep = np.ones(self.total, dtype=bool)
        if query.status is not None:
            keep &= self.ok if query.status == "ok" else ~self.ok
        if query.text:
            found = np.zeros(self.total, dtype=bool)
            for column in self._searched:
                hit = pc.match_substring(column, query.text, ignore_case=True)
                found |= _numpy(pc.fill_null(hit, False))
            keep &= found
        for facet, value in (("phrase", query.phrase), ("region", query.region)):
            if value is None:
                continue
            if self.facet != facet:
                command = next((t.name for t in tasks.REGISTRY.values() if t.facet == facet), "?")
                raise UsageError(f"{{param}} is for the results of kosmos {command}", param=facet)
            wanted = _region(value) if facet == "region" else value
            keep &= _numpy(pc.fill_null(pc.equal(self.facet_values, wanted), False))
        shown = self.shown_boxes(query)
        counts = np.bincount(self.box_record[shown], minlength=self.total)
        if query.classes:
            keep &= counts > 0
        rows = np.flatnonzero(keep)
        if query.sort == "path":
            rows = self._by_path()[keep[self._by_path()]]
        elif query.sort == "boxes":
            rows = rows[np.argsort(-counts[rows], kind="stable")]
        elif query.sort in ("best", "worst"):
            scored = shown & ~np.isnan(self.box_score)
            if query.sort == "best":
                key = np.full(self.total, np.inf)
                np.minimum.at(key, self.box_record[scored], -self.box_score[scored])
            else:
                key = np.full(self.total, np.inf)
                np.minimum.at(key, self.box_record[scored], self.box_score[scored])
            rows = rows[np.argsort(key[rows], kind="stable")]  # records without a scored box last
        return rows

    def _by_path(self):
        import pyarrow.compute as pc

        if self._path_order is None:
            self._path_order = _numpy(pc.sort_indices(self.table.column("path")))
        return self._path_order

    def shown_boxes(self, query: Query):
        """Which boxes a query draws (a numpy mask over every box): of a named class, scored at least min_score."""
        import numpy as np

        shown = np.ones(len(self.box_record), dtype=bool)
        if query.classes:
            shown &= self._of_classes(query.classes)[self.box_phrase]
        if query.min_score is not None:
            with np.errstate(invalid="ignore"):
                shown &= self.box_score >= query.min_score  # NaN (no score) fails a threshold
        return shown

    def _of_classes(self, named: tuple[str, ...]):
        """Per phrase (and a last entry for a box without one): does it name one of `named`?"""
        import numpy as np

        if named not in self._classes:
            classes = Classes(named)
            self._classes[named] = np.array(
                [p is not None and classes.key(p) is not None for p in self.phrases] + [False], dtype=bool
            )
        return self._classes[named]

    def count_shown(self, query: Query) -> tuple[int, int]:
        """(records, boxes) the query shows."""
        import numpy as np

        rows = self.order(query)
        keep = np.zeros(self.total, dtype=bool)
        keep[rows] = True
        return len(rows), int((self.shown_boxes(query) & keep[self.box_record]).sum())

    # -- what the page lists -------------------------------------------------------------------------------
    def facets(self) -> dict[str, Any]:
        """Counts the page offers: records, errors; and the most common phrases (find), regions (refer) or
        classes (ground: phrases named as export names a class by default)."""
        import numpy as np
        import pyarrow.compute as pc

        out: dict[str, Any] = {"records": self.total, "errors": int((~self.ok).sum())}
        out["scored"] = bool((~np.isnan(self.box_score)).any())
        if self.facet is not None:
            out[self.facet + "s"] = _common(pc.value_counts(self.facet_values))

        default = Classes()
        counts: dict[str, int] = {}
        per_phrase = np.bincount(self.box_phrase[self.box_phrase >= 0], minlength=len(self.phrases))
        for phrase, n in zip(self.phrases, per_phrase):
            key = default.key(phrase) if phrase else None
            if key:
                counts[key] = counts.get(key, 0) + int(n)
        out["classes"] = [
            {"value": k, "count": n} for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:FACETS]
        ]
        return out

    def cards(self, rows, query: Query) -> list[dict[str, Any]]:
        """The cards of `rows` (numbers from 0, as written)."""
        return cards(self.task, self.table.take(rows), rows, query)


def cards(task: type[Task], table, numbers, query: Query) -> list[dict[str, Any]]:
    """Cards of the records in `table` (card columns; `numbers`: their rows as written): each record's text
    (escaped, its phrases marked in their boxes' colours) and the boxes the query shows, each with its label,
    colour and score."""
    classes = None
    if query.classes:
        classes = Classes(query.classes)
    return [card(task, int(n), row, query.min_score, classes) for n, row in zip(numbers, table.to_pylist())]


def card(task: type[Task], number: int, row: dict[str, Any], min_score: float | None, classes: Classes | None):

    entities = []
    total = 0
    for i, ((label, boxes), scores) in enumerate(zip(task.shapes(row), task.box_scores(row))):
        if scores is None or len(scores) != len(boxes):
            scores = [None] * len(boxes)
        total += len(boxes)
        named = classes is None or (bool(label) and classes.key(label) is not None)
        kept = [
            [*[float(v) for v in box], score]
            for box, score in zip(boxes, scores)
            if named and passes(score, min_score) and len(box) == 4
        ]
        entities.append({"index": i, "label": label, "color": i % len(PALETTE), "boxes": kept})
    return {
        "row": number,
        "path": row["path"],
        "status": row.get("status"),
        "error": row.get("error"),
        "width": row.get("width"),
        "height": row.get("height"),
        "html": task.caption_html(row, _mark) if row.get("status") == "ok" else "",
        "entities": entities,
        "boxes": total,
    }


def _numpy(values):
    """An Arrow array (or one-chunk column) as numpy, never through pandas (which a column's own to_numpy imports)."""
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.to_numpy(zero_copy_only=False)


def palette() -> list[dict[str, str]]:
    """The colours of `kosmos draw`, for the page: each entity's fill and the text colour on it."""

    return [{"fill": _hex(color(i)), "text": _hex(text_color(color(i)))} for i in range(len(PALETTE))]


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % rgb


def _mark(text: str, index: int) -> str:

    return f'<mark class="c{index % len(PALETTE)}" data-e="{index}">{html.escape(text)}</mark>'


def _common(counts) -> list[dict[str, Any]]:
    pairs = [(v["values"], v["counts"]) for v in counts.to_pylist() if v["values"] is not None]
    pairs.sort(key=lambda p: (-p[1], p[0]))
    return [{"value": v, "count": n} for v, n in pairs[:FACETS]]


def _region(value: str) -> str:
    """A region as the page or a person writes it ("10, 20,30 ,40") in the form the index keeps."""
    try:
        return format_box([float(v) for v in value.replace(",", " ").split()])
    except ValueError:
        raise UsageError(f"{{param}} {value!r}: a region is x1,y1,x2,y2", param="region") from None
