"""Boxes and labels onto images, and an HTML gallery of them. Pillow only: `kosmos draw` never imports torch.

Works on result rows of every task (what `writers.read_records` yields, or `Record.to_dict()`):

- ground: each entity's boxes, labelled with its phrase;
- refer: the region (`box_px`), labelled with the model's description;
- find: the phrase's boxes, labelled with the phrase.

Each entity gets its own colour (a band edged in black or white); a label is a filled box in that colour with
black or white text, whichever contrasts more, so it reads on light and dark pictures alike; it stays inside the
picture.
"""

from __future__ import annotations

import collections
import html
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from PIL import Image, ImageDraw

from .errors import InputError, OutputError, UsageError
from .fonts import label_font
from .images import load_image

log = logging.getLogger("kosmos_cli")

# Saturated mid-tone colours, told apart easily (after Sasha Trubetskoy's list of distinct colours).
PALETTE = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (240, 50, 230), (0, 128, 128), (170, 110, 40), (70, 240, 240), (210, 245, 60),
)
_JPEG = (".jpg", ".jpeg", ".jpe", ".jfif")
_GLOB = re.compile(r"[*?\[]")


@dataclass
class Shape:
    """What to draw for one entity: its label, its pixel boxes [x1, y1, x2, y2] and its colour."""

    label: str
    boxes: list[list[float]]
    color: tuple[int, int, int]


def task_of(row: dict[str, Any]) -> str | None:
    """Which command wrote `row`: ground, refer or find; None when it is not a record of ours."""
    if isinstance(row.get("entities"), list) or "caption" in row:
        return "ground"
    if "box_px" in row or "description" in row:
        return "refer"
    if "phrase" in row and "boxes_px" in row:
        return "find"
    return None


def shapes_of(row: dict[str, Any]) -> list[Shape]:
    """The entities of a result row, each with its colour."""
    task = task_of(row)
    if task == "ground":
        found = [(e.get("phrase") or "", e.get("boxes_px") or []) for e in row.get("entities") or []]
    elif task == "refer":
        found = [(row.get("description") or "", [row["box_px"]] if row.get("box_px") else [])]
    elif task == "find":
        found = [(row.get("phrase") or "", row.get("boxes_px") or [])]
    else:
        found = []
    return [Shape(label, [list(b) for b in boxes], color(i)) for i, (label, boxes) in enumerate(found)]


def color(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def text_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with `rgb` (WCAG contrast ratio)."""
    lum = luminance(rgb)
    return (0, 0, 0) if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else (255, 255, 255)


def luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG relative luminance, 0 (black) to 1 (white)."""
    def linear(v: int) -> float:
        v = v / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = rgb
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)


def line_width(width: int, height: int) -> int:
    return max(2, round(max(width, height) / 250))


def font_size(width: int, height: int) -> int:
    return max(12, round(max(width, height) / 36))


def _font(size: int):
    return label_font(size)  # a Unicode font when the system has one (fonts.py)


def annotate(image: Image.Image, shapes: Iterable[Shape], scale: tuple[float, float] = (1.0, 1.0)) -> Image.Image:
    """Draw `shapes` onto `image` (in place) and return it. `scale`: pixel boxes -> this image's pixels."""
    draw = ImageDraw.Draw(image)
    width, height = image.size
    lw = line_width(width, height)
    font = _font(font_size(width, height))
    labels = []
    for shape in shapes:
        for box in shape.boxes:
            x1, y1, x2, y2 = _clip(box, scale, width, height)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            # Pillow draws outlines inwards from these corners, so the line lies inside the box (x2, y2 exclusive):
            # a band of the entity's colour between two 1-pixel edges of black or white, seen on any background
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=text_color(shape.color), width=lw + 2)
            draw.rectangle((x1 + 1, y1 + 1, x2 - 2, y2 - 2), outline=shape.color, width=lw)
            if shape.label:
                labels.append((shape, x1, y1))
    for shape, x1, y1 in labels:  # after every box, so no line crosses a label
        _label(draw, shape.label, shape.color, x1, y1, width, height, font)
    return image


def _clip(box, scale, width: int, height: int) -> tuple[int, int, int, int]:
    sx, sy = scale
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = sorted((x1 * sx, x2 * sx))
    y1, y2 = sorted((y1 * sy, y2 * sy))
    clip = lambda v, hi: max(0, min(hi, int(round(v))))  # noqa: E731
    return clip(x1, width), clip(y1, height), clip(x2, width), clip(y2, height)


def _label(draw, text: str, fill, x: int, y: int, width: int, height: int, font) -> None:
    (left, top, right, bottom), text, (dx, dy) = label_box(draw, text, font, x, y, width, height)
    draw.rectangle((left, top, right - 1, bottom - 1), fill=fill)
    draw.text((left + dx, top + dy), text, font=font, fill=text_color(fill))


def label_box(draw, text: str, font, x: int, y: int, width: int, height: int):
    """Where a label for a box with top-left corner (x, y) goes: above the box when there is room, else just
    inside it; always inside the width x height picture, its text cut short to fit.

    Returns ((left, top, right, bottom) of the filled box, right and bottom exclusive), the text, and the
    text's offset in the box.
    """
    pad = max(1, getattr(font, "size", 12) // 6)
    text = _fit(draw, text, font, width - 2 * pad)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = min(width, right - left + 2 * pad), min(height, bottom - top + 2 * pad)
    x = max(0, min(x, width - w))
    y = y - h if y - h >= 0 else max(0, min(y, height - h))
    return (x, y, x + w, y + h), text, (pad - left, pad - top)


def _fit(draw, text: str, font, room: int) -> str:
    """`text` cut short with an ellipsis so it fits `room` pixels."""
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= room:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits with "…"
        mid = (lo + hi + 1) // 2
        if draw.textlength(text[:mid].rstrip() + "…", font=font) <= room:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…"


# -- files --------------------------------------------------------------------------------------------------
def locate(path: str, root: str | None) -> str:
    """A recorded path as it can be opened: as written (relative to here), else relative to `root`."""
    if root is None or os.path.isabs(path) or os.path.exists(path):
        return path
    beside = os.path.join(root, path)
    return beside if os.path.exists(beside) else path


def input_root(inputs: Iterable[str]) -> str | None:
    """The common folder of a run's inputs (folders, files, globs, manifests, -): where the layout starts."""
    folders = []
    for arg in inputs:
        if arg == "-":
            folders.append(os.getcwd())
        elif os.path.isdir(arg):
            folders.append(os.path.abspath(arg))
        elif os.path.exists(arg):
            folders.append(os.path.dirname(os.path.abspath(arg)))
        else:  # a glob: the folder before its first wildcard
            folders.append(os.path.abspath(os.path.dirname(_GLOB.split(arg, 1)[0]) or "."))
    return os.path.commonpath(folders) if folders else None


@dataclass
class DrawSummary:
    """What a draw did: images written, error records skipped, images that could not be opened, time spent."""

    out_dir: str
    drawn: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    index: str | None = None
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        index = f" (gallery {self.index})" if self.index else ""
        return (f"kosmos draw finished: {self.drawn} drawn, {self.skipped} skipped (error records), "
                f"{self.failed} failed in {self.seconds:.1f}s -> {self.out_dir}{index}")


@dataclass
class _Job:
    row: dict[str, Any]
    source: str
    target: str
    seconds: float = 0.0


class Drawer:
    """Draws result rows into `out_dir`, keeping their layout relative to `base`; optionally an index.html.

    Use as a context manager: on a clean exit the gallery is put in place, otherwise it is dropped. Each image
    is written to a temporary file and renamed, so no half-written image is ever left.
    """

    def __init__(self, out_dir: str, base: str | None, html: bool = False, root: str | None = None,
                 title: str = "kosmos draw", option: str = "--out-dir"):
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise UsageError(f"{option} {out_dir} is a file: name a folder for the annotated images")
        if base is not None and os.path.isdir(out_dir) and os.path.samefile(out_dir, base):
            raise UsageError(f"{option} {out_dir} is the folder of the images: drawing there would overwrite "
                             "them; choose another folder")
        self.out_dir, self.base, self.root, self.title, self.option = out_dir, base, root, title, option
        self.summary = DrawSummary(out_dir, index=os.path.join(out_dir, "index.html") if html else None)
        self._html = None
        self._used: set[str] = set()

    def __enter__(self) -> Drawer:
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close(complete=kind is None)

    def add_records(self, records) -> None:
        """`pipeline.run`'s on_write hook: draw each finished record."""
        for record in records:
            self.add(record.to_dict())

    def add(self, row: dict[str, Any]) -> str | None:
        """Draw one row; returns the file written, or None (an error record, or an image that cannot be read)."""
        job = self.prepare(row)
        return None if job is None else self.complete(job, self.render(job))

    # add() in three steps, so that Background can render on several threads and still name files and write the
    # gallery in the order of the rows: prepare and complete run in order, render anywhere.
    def prepare(self, row: dict[str, Any]) -> _Job | None:
        """Where the row's image comes from and goes to (None: an error record, counted as skipped)."""
        if row.get("status") != "ok":
            self.summary.skipped += 1
            return None
        source = locate(row["path"], self.root)
        return _Job(row, source, self._target(source))

    def render(self, job: _Job) -> list[Shape] | str:
        """Load, annotate and write the image: its shapes, or why it could not be drawn. Thread-safe."""
        started = time.perf_counter()
        try:
            loaded = load_image(job.source)
            if loaded.error:
                return loaded.error
            if os.path.exists(job.target) and os.path.samefile(job.target, job.source):
                return f"the annotated image would overwrite it: choose another {self.option}"
            image, row = loaded.image, job.row
            scale = (image.width / row["width"] if row.get("width") else 1.0,
                     image.height / row["height"] if row.get("height") else 1.0)
            shapes = shapes_of(row)
            annotate(image, shapes, scale)
            self._save(image, job.target)
            return shapes
        finally:
            job.seconds = time.perf_counter() - started

    def complete(self, job: _Job, outcome: list[Shape] | str) -> str | None:
        """Count the rendered row and add it to the gallery; the file written, or None."""
        self.summary.seconds += job.seconds
        if isinstance(outcome, str):
            self._failed(job.row["path"], outcome)
            return None
        if self.summary.index:
            self._gallery(job.row, outcome, job.target)
        self.summary.drawn += 1
        return job.target

    def close(self, complete: bool = True) -> DrawSummary:
        if self.summary.index is None:
            return self.summary
        tmp = self.summary.index + ".tmp"
        if complete:
            self._gallery_file().write("</main>\n</body>\n</html>\n")
            self._html.close()
            os.replace(tmp, self.summary.index)
        elif self._html is not None:
            self._html.close()
            _unlink(tmp)
        self._html = None
        return self.summary

    # -- where and how files are written ---------------------------------------------------------------
    def _target(self, source: str) -> str:
        """The output file for `source`: its path below `base`, JPEG kept as JPEG, anything else as PNG."""
        full = os.path.abspath(source)
        rel = os.path.relpath(full, self.base) if self.base else os.path.basename(full)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):  # outside base: keep its whole path
            rel = os.path.splitdrive(full)[1].lstrip(os.sep)
        stem, ext = os.path.splitext(rel)
        ext = ext if ext.lower() in _JPEG else ".png"
        name, n = stem + ext, 1
        while name.lower() in self._used:  # another record of this image, or a.png beside a.bmp
            n += 1
            name = f"{stem}-{n}{ext}"
        self._used.add(name.lower())
        return os.path.join(self.out_dir, name)

    def _save(self, image: Image.Image, target: str) -> None:
        tmp = f"{target}.{os.getpid()}.tmp"
        jpeg = target.lower().endswith(_JPEG)
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            # JPEG without chroma subsampling: thin coloured lines keep their colour
            image.save(tmp, format="JPEG" if jpeg else "PNG", **({"quality": 92, "subsampling": 0} if jpeg else {}))
            os.replace(tmp, target)
        except OSError as exc:
            _unlink(tmp)
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}: "
                              f"choose another {self.option} or free some space") from None

    def _failed(self, path: str, why: str) -> None:
        self.summary.failed += 1
        self.summary.failures.append(f"{path}: {why}")
        log.warning("cannot draw %s: %s", path, why)

    # -- index.html --------------------------------------------------------------------------------------
    def _gallery_file(self):
        if self._html is None:
            try:
                os.makedirs(self.out_dir, exist_ok=True)
                self._html = open(self.summary.index + ".tmp", "w", encoding="utf-8")
            except OSError as exc:
                raise OutputError(f"cannot write {self.summary.index}: {exc.strerror or exc}") from None
            self._html.write(_HTML_HEAD.format(title=html.escape(self.title)))
        return self._html

    def _gallery(self, row: dict[str, Any], shapes: list[Shape], target: str) -> None:
        href = quote(os.path.relpath(target, self.out_dir).replace(os.sep, "/"))
        name = html.escape(row["path"])
        self._gallery_file().write(
            f'<figure><a href="{href}"><img src="{href}" loading="lazy" alt="{name}"></a>'
            f'<figcaption><div class="path">{name}</div>{caption_html(row, shapes)}</figcaption></figure>\n'
        )


class Background:
    """A Drawer fed from the main thread and drawing on threads of its own.

    `ground --draw` hands it each batch as it is written, so the model does not wait for the pictures; `kosmos
    draw` hands it the rows of a results file. Images are decoded, annotated and encoded on `threads` threads
    (Pillow lets go of the GIL for most of that); files are named, counted, put in the gallery and reported to
    `on_row` in the order of the rows. At most `depth` handfuls of rows wait, then add_rows blocks: memory stays
    bounded when drawing is slower than what feeds it. An error while drawing (a full disk) comes back on the
    next add_rows or at the end. Use as a context manager: a clean exit waits for the drawing to finish; after an
    error or an interrupt what is left is skipped.
    """

    def __init__(self, drawer: Drawer, threads: int | None = None, depth: int = 4,
                 on_row: Callable[[str | None], None] | None = None):
        self.drawer, self.summary, self.on_row = drawer, drawer.summary, on_row
        self.threads = threads or min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="kosmos-draw")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kosmos-draw-order", daemon=True)
        self._started = time.perf_counter()
        self._thread.start()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None:
            self._stop.set()
        self._queue.put(None)
        self._thread.join()
        self._pool.shutdown(wait=True)
        self.summary.seconds = time.perf_counter() - self._started  # wall time: the threads overlap
        failed = self._error
        self.drawer.close(complete=kind is None and failed is None)
        if kind is None and failed is not None:
            raise failed

    def add_records(self, records) -> None:
        """`pipeline.run`'s on_write hook: the batch's rows, taken now, go to the drawing threads."""
        self.add_rows([record.to_dict() for record in records])

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(rows)

    def _loop(self) -> None:
        waiting: collections.deque = collections.deque()  # (job or None, future), in the order of the rows
        while (rows := self._queue.get()) is not None:
            for row in rows:
                if self._stop.is_set():
                    break
                self._guard(self._start, row, waiting)
                while len(waiting) > 2 * self.threads and not self._stop.is_set():
                    self._guard(self._finish, *waiting.popleft())
        while waiting:  # what was started is finished (or, after a stop, waited for and dropped)
            job, future = waiting.popleft()
            if self._stop.is_set():
                future and future.exception()
            else:
                self._guard(self._finish, job, future)

    def _start(self, row, waiting) -> None:
        job = self.drawer.prepare(row)
        waiting.append((job, job and self._pool.submit(self.drawer.render, job)))

    def _finish(self, job, future) -> None:
        target = None if job is None else self.drawer.complete(job, future.result())
        if self.on_row is not None:
            self.on_row(target)

    def _guard(self, step, *args) -> None:
        try:
            step(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            if self._error is None:
                self._error = exc
            self._stop.set()


def caption_html(row: dict[str, Any], shapes: list[Shape]) -> str:
    """The row's text as HTML, each phrase highlighted in its box colour; everything escaped."""
    task = task_of(row)
    if task == "ground":
        caption = row.get("caption") or ""
        spans = sorted(
            (e.get("start"), e.get("end"), i) for i, e in enumerate(row.get("entities") or [])
            if isinstance(e.get("start"), int) and isinstance(e.get("end"), int)
            and 0 <= e["start"] < e["end"] <= len(caption)
        )
        out, pos = [], 0
        for start, end, i in spans:
            if start < pos:  # overlapping spans: the first one wins
                continue
            out += [html.escape(caption[pos:start]), _mark(caption[start:end], shapes[i].color)]
            pos = end
        return "".join(out) + html.escape(caption[pos:])
    if task == "refer":
        return _mark(row.get("description") or "(no description)", shapes[0].color)
    n = len(row.get("boxes_px") or [])
    found = f"{n} box{'es' if n != 1 else ''}" if n else "not found"
    return f"{_mark(row.get('phrase') or '', shapes[0].color)} <span class=\"n\">{found}</span>"


def _mark(text: str, fill) -> str:
    bg = "#%02x%02x%02x" % fill
    fg = "#%02x%02x%02x" % text_color(fill)
    return f'<mark style="background:{bg};color:{fg}">{html.escape(text)}</mark>'


def check_results_row(row: dict[str, Any], number: int, path: str) -> str:
    """The task of one row of a results file; InputError when the row is not a record of ours."""
    task = task_of(row)
    if task is None or not isinstance(row.get("path"), str) or "status" not in row:
        raise InputError(f"{path} row {number} is not a kosmos record (no status, caption, box_px or phrase): "
                         "pass a results file written by kosmos ground, refer or find")
    return task


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):  # never written: the error that stopped it is the one to tell
        pass


_HTML_HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; background: #f3f3f3; color: #222; }}
main {{ display: flex; flex-wrap: wrap; gap: 14px; }}
figure {{ margin: 0; width: 260px; background: #fff; padding: 8px; box-shadow: 0 1px 3px #0003; }}
figure img {{ display: block; max-width: 100%; max-height: 220px; margin: 0 auto 6px; }}
.path {{ color: #666; font-size: 12px; word-break: break-all; }}
mark {{ padding: 0 3px; border-radius: 3px; }}
.n {{ color: #666; font-size: 12px; }}
</style>
</head>
<body>
<h1>{title}</h1>
<main>
"""
