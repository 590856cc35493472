"""The library API: everything a command does, callable from Python.

    from kosmos_cli import ground
    summary = ground("photos/", out="results.parquet", model="microsoft/kosmos-2-patch14-224")

Each call checks everything cheap (inputs, boxes, phrases, options, a drawing folder), then joins the other processes
of a launch, then checks the output (ours, this task's, not an input, not locked, writable), then loads the model
(unless an `engine` is given), then runs: a bad argument or a busy output never costs a model load.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from typing import Any

from . import distributed, locations
from .engine import Engine, GenerationOptions, ModelOptions
from .errors import InputError, OutputError, UsageError
from .pipeline import Progress, RunOptions, Summary, run
from .sources import Columns, Item, check_inputs
from .store import Store
from .tasks import Find, Ground, Refer, Task
from .writers import detect_format, read_records

Inputs = str | os.PathLike | Iterable[str] | Iterable[Item]


def load_engine(
    model: str | None = None,
    *,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    max_new_tokens: int = 128,
    num_beams: int = 1,
    no_repeat_ngram_size: int | None = None,
    decoder: str = "auto",
    quantize: str | None = None,
) -> Engine:
    """Load a Kosmos-2 checkpoint once; pass the engine to several calls with `engine=`.

    `decoder`: "fast" decodes with our own greedy loop (token for token what generate gives, batches of mixed prompt
    lengths), "hf" with model.generate, "auto" with fast wherever it applies (greedy, no n-gram blocking).
    `quantize`: "int8" gives the vision encoder's and the text decoder's linear layers int8 weights, on the CPU
    (about twice as fast, approximate; "int8-or-float32" goes on in float32 where int8 cannot be had).
    """
    generation = GenerationOptions(max_new_tokens, num_beams, no_repeat_ngram_size, decoder)
    return Engine(*_engine_options(model, revision, device, dtype, generation, quantize=quantize)).load()


def _engine_options(
    model: str | None = None,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    generation: GenerationOptions | None = None,
    quantize: str | None = None,
    **decoding: Any,
) -> tuple[ModelOptions, GenerationOptions]:
    """The model's and the decoding's option objects, checked: the one place they are built from parameters
    (`decoding`: GenerationOptions' fields by name, when `generation` is not given; an unknown one is a TypeError).

    Under a launcher, `device` "auto" (or a bare "cuda") becomes this process's own device.
    """
    generation = generation or GenerationOptions(**decoding)
    checked = ModelOptions(model, revision, device, dtype, quantize)  # checked as asked; then this rank's device
    return dataclasses.replace(checked, device=distributed.team(device).device_for(device)), generation


def ground(
    inputs: Inputs,
    out: str = "-",
    *,
    prompt: str | None = None,
    engine: Engine | None = None,
    model: str | None = None,
    format: str | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    retry_failed: bool = False,
    prune: bool = False,
    wait: bool = False,
    workers: int | None = None,
    null: bool = False,
    path_column: str = "path",
    image_column: str | None = None,
    key_column: str | None = None,
    fetch_timeout: float = locations.DEFAULT_TIMEOUT,
    fetch_retries: int = locations.DEFAULT_RETRIES,
    max_image_mb: float = locations.DEFAULT_MAX_BYTES / 2**20,
    progress: Progress | None = None,
    on_write: Callable | None = None,
    draw: str | None = None,
    **model_options: Any,
) -> Summary:
    """Caption and ground every image named by `inputs` (folders, files, globs, manifests); write to `out`.

    `null`: "-" among `inputs` reads NUL-separated paths from stdin (find -print0), as refer and find do.
    `draw`: also draw each finished image's boxes into this folder (as `draw` does), on threads of its own; its
    DrawSummary is `summary.drawing`.
    """
    options = RunOptions(
        out=out,
        format=format,
        batch_size=batch_size,
        workers=workers,
        overwrite=overwrite,
        retry_failed=retry_failed,
        prune=prune,
        wait=wait,
        null=null,
        columns=_columns(path_column, image_column, key_column),
        fetch=locations.FetchOptions(fetch_timeout, fetch_retries, int(max_image_mb * 2**20)),
    )
    return _run(Ground(prompt), inputs, options, engine, model, model_options, progress, on_write, draw)


def refer(
    inputs: Inputs,
    out: str = "-",
    *,
    boxes: Iterable | None = None,
    normalized: bool = False,
    engine: Engine | None = None,
    model: str | None = None,
    format: str | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    retry_failed: bool = False,
    prune: bool = False,
    wait: bool = False,
    workers: int | None = None,
    null: bool = False,
    path_column: str = "path",
    image_column: str | None = None,
    key_column: str | None = None,
    fetch_timeout: float = locations.DEFAULT_TIMEOUT,
    fetch_retries: int = locations.DEFAULT_RETRIES,
    max_image_mb: float = locations.DEFAULT_MAX_BYTES / 2**20,
    progress: Progress | None = None,
    on_write: Callable | None = None,
    **model_options: Any,
) -> Summary:
    """Describe regions: one record per (image, box) with `description`, `box_px` and `box_model_px`.

    `boxes` ("x1,y1,x2,y2" strings or 4-number sequences; pixels of the image as displayed, or 0-1 with
    `normalized`) go with every image; without them each manifest row's x1, y1, x2, y2 columns are its box.
    """
    options = RunOptions(
        out=out,
        format=format,
        batch_size=batch_size,
        workers=workers,
        overwrite=overwrite,
        retry_failed=retry_failed,
        prune=prune,
        wait=wait,
        null=null,
        columns=_columns(path_column, image_column, key_column),
        fetch=locations.FetchOptions(fetch_timeout, fetch_retries, int(max_image_mb * 2**20)),
    )
    return _run(Refer(boxes, normalized), inputs, options, engine, model, model_options, progress, on_write)


def find(
    inputs: Inputs,
    out: str = "-",
    *,
    phrases: Iterable[str] | None = None,
    engine: Engine | None = None,
    model: str | None = None,
    format: str | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    retry_failed: bool = False,
    prune: bool = False,
    wait: bool = False,
    workers: int | None = None,
    null: bool = False,
    path_column: str = "path",
    image_column: str | None = None,
    key_column: str | None = None,
    fetch_timeout: float = locations.DEFAULT_TIMEOUT,
    fetch_retries: int = locations.DEFAULT_RETRIES,
    max_image_mb: float = locations.DEFAULT_MAX_BYTES / 2**20,
    progress: Progress | None = None,
    on_write: Callable | None = None,
    **model_options: Any,
) -> Summary:
    """Boxes for phrases: one record per (image, phrase) with `boxes` (0-1) and `boxes_px` (empty: not found).

    `phrases` go with every image; without them each manifest row's `phrase` column is used.
    """
    options = RunOptions(
        out=out,
        format=format,
        batch_size=batch_size,
        workers=workers,
        overwrite=overwrite,
        retry_failed=retry_failed,
        prune=prune,
        wait=wait,
        null=null,
        columns=_columns(path_column, image_column, key_column),
        fetch=locations.FetchOptions(fetch_timeout, fetch_retries, int(max_image_mb * 2**20)),
    )
    return _run(Find(phrases), inputs, options, engine, model, model_options, progress, on_write)


def draw(
    results: str,
    out_dir: str,
    *,
    html: bool = False,
    min_score: float | None = None,
    progress: Progress | None = None,
    on_drawn: Callable[[str], None] | None = None,
    threads: int | None = None,
):
    """Draw the boxes of every ok record of a results file (JSONL or Parquet from ground, refer or find).

    The images keep their layout below the common folder of the recorded paths; error records are skipped
    and counted. `out_dir` is new, empty, or one kosmos drew into before (naming.claim; UsageError otherwise, before
    anything is written). `html`: also write index.html, a gallery that opens from the folder. Images are drawn on
    `threads` threads (default: up to 4), reported to `on_drawn` in the order of the rows. Labels end with each
    box's score; `min_score` (0-1) draws only the boxes scored at least that. Returns a DrawSummary.
    """
    from .drawing import Background, Drawer, check_results_row, locate
    from .scores import check_min_score

    min_score = check_min_score(min_score)
    locations.check_local_output(out_dir, "out_dir")

    root = os.path.dirname(os.path.abspath(results))
    total, base = 0, None
    for number, row in enumerate(_results_rows(results), 1):  # check it all before writing anything
        check_results_row(row, number, results)
        total += 1
        if row.get("status") == "ok" and locations.is_local(row["path"]):
            folder = os.path.dirname(os.path.abspath(locate(row["path"], root)))
            base = folder if base is None else os.path.commonpath([base, folder])
    progress = progress or Progress()
    progress.start(total)
    drawer = Drawer(
        out_dir, base, html=html, root=root, title=f"kosmos draw: {os.path.basename(results)}", min_score=min_score
    )
    summary = drawer.summary

    def on_row(target: str | None) -> None:  # in the order of the rows, from the drawing side
        if target is not None and on_drawn is not None:
            on_drawn(target)
        progress.advance(summary.drawn, summary.failed, summary.skipped)

    try:
        with Background(drawer, threads=threads, on_row=on_row) as background:
            rows: list[dict] = []
            for row in _results_rows(results):
                rows.append(row)
                if len(rows) == 16:
                    background.add_rows(rows)
                    rows = []
            background.add_rows(rows)
    finally:
        progress.close()
    return summary


def export(
    results: str,
    to: str,
    out: str,
    *,
    classes: str | Iterable[str] | None = None,
    classes_file: str | None = None,
    min_score: float | None = None,
    nms: float | None = None,
    root: str | None = None,
    image_root: str | None = None,
    copy_images: bool = False,
):
    """Write the boxes of a ground or find results file (JSONL or Parquet) as labels: `to` is coco (one JSON file),
    yolo (an Ultralytics folder), voc (a folder of Pascal VOC XML) or labelstudio (tasks JSON with predictions, and
    its labelling config beside it).

    Classes: one per distinct phrase (normalised: lowercase, no leading article), or `classes` ("dog,cat" or a
    list; or `classes_file`, one a line), in that order, keeping only the boxes whose phrase names one of them
    ("a small brown dog", "two dogs" -> dog). `min_score` drops boxes scored below it; `nms` (an IoU) keeps the
    best-scored of overlapping boxes of one class in one image. Image paths are written relative to `root` when
    given; `image_root` prefixes Label Studio's image locations; `copy_images` copies images into a YOLO folder
    instead of linking them. Error records are skipped and counted. Returns an ExportSummary.
    """
    from .exports import run
    from .exports.classes import parse_classes

    locations.check_local_output(out, "out")
    if not os.path.exists(results):
        raise InputError(f"results file not found: {results}")
    return run(
        results,
        to,
        out,
        classes=parse_classes(classes, classes_file),
        min_score=min_score,
        nms=nms,
        root=root,
        image_root=image_root,
        copy_images=copy_images,
    )


def _results_rows(results: str):
    """read_records, with a file that is not ours (binary, not Parquet) said in one line."""
    try:
        yield from read_records(results)
    except UnicodeDecodeError:
        raise InputError(
            f"{results} is not a results file of kosmos (neither JSONL nor Parquet): pass the "
            ".jsonl or .parquet file written by kosmos ground, refer or find"
        ) from None
    except OutputError:  # a damaged or foreign Parquet file
        raise InputError(
            f"{results} is not a readable Parquet file: pass the .jsonl or .parquet file written "
            "by kosmos ground, refer or find"
        ) from None


def _run(
    task: Task,
    inputs: Inputs,
    options: RunOptions,
    engine: Engine | None,
    model: str | None,
    model_options: dict[str, Any],
    progress: Progress | None,
    on_write: Callable | None,
    draw: str | None = None,
) -> Summary:
    """Check everything cheap, join the other processes, load the model (unless given), then run `task`."""
    if engine is not None and (model is not None or model_options):
        given = ", ".join(["model"] * (model is not None) + sorted(model_options))
        raise TypeError(
            f"{given}: model options cannot be given with engine= (the engine was loaded with its "
            "own); pass them to load_engine instead"
        )
    named = _listed(inputs)
    if named and all(isinstance(i, str) for i in named):
        check_inputs(named)
        if options.columns.image is not None and not any(_parquet(i) for i in named):
            raise UsageError(
                "{param} reads each image from a column of a Parquet file: name a .parquet input (folders, images "
                "and other manifests name images by path; --path-column says which column holds them)",
                param="image_column",
            )
    task.check(named)
    fmt = detect_format(options.out, options.format)
    if draw is not None:
        locations.check_local_output(draw, "draw")
    drawer = _drawer(draw, named) if draw is not None else None
    checked = _engine_options(model, **model_options) if engine is None else (engine.options, engine.generation)
    crew = distributed.team(model_options.get("device", "auto"))
    store = Store.for_run(options.out, fmt, type(task), crew)
    if engine is None:
        crew.start(store.path)  # several processes: report first
    if crew.main:  # the process that prepares the output: refuse it now, not after the model loads
        store.check(named, overwrite=options.overwrite)
        if not options.wait:
            store.probe()
    if engine is None:
        engine = Engine(*checked).load()
    if drawer is None:
        return run(task, named, engine, options, progress=progress, on_write=on_write)
    from .drawing import Background

    with Background(drawer) as drawing:  # on threads of its own: the model does not wait for the pictures

        def written(records):
            drawing.add_records(records)
            if on_write is not None:
                on_write(records)

        summary = run(task, named, engine, options, progress=progress, on_write=written)
    summary.drawing = drawer.summary
    return summary


def _columns(path: str, image: str | None, key: str | None) -> Columns:
    """Which manifest columns name the image; a key column is only for image bytes."""
    if key is not None and image is None:
        raise UsageError("{param} is for rows that hold image bytes: give --image-column too", param="key_column")
    for name, value in (("path_column", path), ("image_column", image), ("key_column", key)):
        if value is not None and not value.strip():
            raise UsageError("{param} cannot be empty: name a column", param=name)
    return Columns(path, image, key)


def _parquet(arg: str) -> bool:
    """Whether an input names Parquet files (a brace pattern or a glob of them too)."""
    return locations.named_suffix(arg).endswith(".parquet")


def _listed(inputs: Inputs) -> list:
    """`inputs` as a list: one path (str or os.PathLike) is one input, not a string of characters."""
    if isinstance(inputs, (str, os.PathLike)):
        return [os.fspath(inputs)]
    return [os.fspath(i) if isinstance(i, os.PathLike) else i for i in inputs]


def _drawer(folder: str, inputs: list):
    """A Drawer for ground's `draw` folder, keeping the layout below the inputs' common folder; checked (and the
    folder made and marked as ours) now, before the model loads."""
    from .drawing import Drawer, input_root

    return Drawer(folder, input_root([i for i in inputs if isinstance(i, str)]), option="--draw")
