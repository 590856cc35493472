"""The library API: everything a command does, callable from Python.

    from kosmos_cli import ground
    summary = ground(["photos/"], out="results.parquet", model="microsoft/kosmos-2-patch14-224")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from . import distributed
from .engine import Engine, GenerationOptions, ModelOptions
from .errors import InputError, OutputError, UsageError
from .jobs import FindJob, GroundJob, Job, ReferJob, check_fits, check_phrase, format_box
from .pipeline import Progress, RunOptions, Summary, run
from .sources import MANIFEST_EXTENSIONS, Item, check_inputs
from .writers import detect_format, read_records


def load_engine(
    model: str | None = None,
    *,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    max_new_tokens: int = 128,
    num_beams: int = 1,
    no_repeat_ngram_size: int | None = None,
) -> Engine:
    """Load a Kosmos-2 checkpoint once; pass the engine to several calls with `engine=`."""
    return Engine(
        ModelOptions(model, revision, distributed.device_for(device), dtype),  # several processes: their own
        GenerationOptions(max_new_tokens, num_beams, no_repeat_ngram_size),
    ).load()


def ground(
    inputs: str | os.PathLike | Iterable[str | os.PathLike] | Iterable[Item],
    out: str = "-",
    *,
    prompt: str | None = None,
    engine: Engine | None = None,
    model: str | None = None,
    format: str | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    retry_failed: bool = False,
    prune: bool = False,
    wait: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    on_write=None,
    **model_options,
) -> Summary:
    """Caption and ground every image named by `inputs` (folders, files, globs, manifests; one path or a list of
    them); write to `out`."""
    return _run(GroundJob(prompt), _input_list(inputs), out, engine, model, model_options, format=format,
                batch_size=batch_size, workers=workers, overwrite=overwrite, retry_failed=retry_failed, prune=prune,
                wait=wait, progress=progress, on_write=on_write)


def refer(
    inputs: str | os.PathLike | Iterable[str | os.PathLike] | Iterable[Item],
    out: str = "-",
    *,
    boxes: Iterable | None = None,
    normalized: bool = False,
    engine: Engine | None = None,
    model: str | None = None,
    format: str | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    retry_failed: bool = False,
    prune: bool = False,
    wait: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    on_write=None,
    **model_options,
) -> Summary:
    """Describe regions: one record per (image, box) with `description`, `box_px` and `box_model_px`.

    `boxes` ("x1,y1,x2,y2" strings or 4-number sequences; pixels of the image as displayed, or 0-1 with
    `normalized`) go with every image; without them each manifest row's x1, y1, x2, y2 columns are its box.
    """
    inputs = _input_list(inputs)
    try:
        job = ReferJob(boxes, normalized)
    except ValueError as exc:
        raise UsageError(f"--box: {exc}") from None
    if job.boxes is None:
        _need_rows(inputs, "kosmos refer needs boxes: pass --box X1,Y1,X2,Y2, or a manifest with "
                           "path,x1,y1,x2,y2 columns")
    else:
        _check_boxes_fit(inputs, job.boxes, normalized)
    return _run(job, inputs, out, engine, model, model_options, format=format, batch_size=batch_size,
                workers=workers, overwrite=overwrite, retry_failed=retry_failed, prune=prune, wait=wait,
                progress=progress, on_write=on_write)


def find(
    inputs: str | os.PathLike | Iterable[str | os.PathLike] | Iterable[Item],
    out: str = "-",
    *,
    phrases: Iterable[str] | None = None,
    engine: Engine | None = None,
    model: str | None = None,
    format: str | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    retry_failed: bool = False,
    prune: bool = False,
    wait: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    on_write=None,
    **model_options,
) -> Summary:
    """Boxes for phrases: one record per (image, phrase) with `boxes` (0-1) and `boxes_px` (empty: not found).

    `phrases` go with every image; without them each manifest row's `phrase` column is used.
    """
    inputs = _input_list(inputs)
    phrases = list(phrases or [])
    for number, phrase in enumerate(phrases, 1):
        try:
            check_phrase(phrase)
        except ValueError as exc:
            raise UsageError(f"phrase {number} ({phrase!r}) cannot be used: {exc}") from None
    job = FindJob(phrases)
    if job.phrases is None:
        _need_rows(inputs, "kosmos find needs phrases: name them after the input, or give a manifest with "
                           "path,phrase columns")
    return _run(job, inputs, out, engine, model, model_options, format=format, batch_size=batch_size,
                workers=workers, overwrite=overwrite, retry_failed=retry_failed, prune=prune, wait=wait,
                progress=progress, on_write=on_write)


def draw(
    results: str,
    out_dir: str,
    *,
    html: bool = False,
    progress: Progress | None = None,
    on_drawn: Callable[[str], None] | None = None,
    threads: int | None = None,
):
    """Draw the boxes of every ok record of a results file (JSONL or Parquet from ground, refer or find).

    The images keep their layout below the common folder of the recorded paths; error records are skipped
    and counted. `html`: also write index.html, a gallery that opens from the folder. Images are drawn on
    `threads` threads (default: up to 4), reported to `on_drawn` in the order of the rows. Returns a DrawSummary.
    """
    from .drawing import Background, Drawer, check_results_row, locate

    root = os.path.dirname(os.path.abspath(results))
    total, base = 0, None
    for number, row in enumerate(_results_rows(results), 1):  # check it all before writing anything
        check_results_row(row, number, results)
        total += 1
        if row.get("status") == "ok":
            folder = os.path.dirname(os.path.abspath(locate(row["path"], root)))
            base = folder if base is None else os.path.commonpath([base, folder])
    progress = progress or Progress()
    progress.start(total)
    drawer = Drawer(out_dir, base, html=html, root=root, title=f"kosmos draw: {os.path.basename(results)}")
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


def _results_rows(results: str):
    """read_records, with a file that is not ours (binary, not Parquet) said in one line."""
    try:
        yield from read_records(results)
    except UnicodeDecodeError:
        raise InputError(f"{results} is not a results file of kosmos (neither JSONL nor Parquet): pass the "
                         ".jsonl or .parquet file written by kosmos ground, refer or find") from None
    except OutputError:  # a damaged or foreign Parquet file
        raise InputError(f"{results} is not a readable Parquet file: pass the .jsonl or .parquet file written "
                         "by kosmos ground, refer or find") from None


def _input_list(inputs) -> list:
    """`inputs` as a list: one path (str or os.PathLike) is one input, not a string of characters."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    return [os.fspath(i) if isinstance(i, os.PathLike) else i for i in inputs]


def _run(job: Job, inputs, out, engine, model, model_options, progress=None, on_write=None, **run_options):
    """Check everything cheap, then load the model (unless given) and run `job`."""
    if inputs and all(isinstance(i, str) for i in inputs):
        check_inputs(inputs)
    detect_format(out, run_options.get("format"))
    options = RunOptions(out=out, **run_options)
    if engine is None:
        distributed.join(out, model_options.get("device", "auto"))  # several processes: report before the load
        engine = load_engine(model, **model_options)
    return run(job, inputs, engine, options, progress=progress, on_write=on_write)


def _need_rows(inputs, message: str) -> None:
    """Without boxes or phrases of its own, a run reads them from manifest rows (or JSON lines on stdin)."""
    if not any(isinstance(i, Item) or i == "-" or str(i).lower().endswith(MANIFEST_EXTENSIONS) for i in inputs):
        raise UsageError(message)


def _check_boxes_fit(inputs, boxes, normalized: bool) -> None:
    """Boxes given for images named directly are checked against their size before anything is written."""
    from .images import display_size

    for arg in inputs:
        if not isinstance(arg, str) or not os.path.isfile(arg) or arg.lower().endswith(MANIFEST_EXTENSIONS):
            continue
        size = display_size(arg)
        if size is None:
            continue  # not readable: its records will say why
        for box in boxes:
            try:
                check_fits(box, *size, normalized)
            except ValueError:
                raise UsageError(f"--box {format_box(box)} is outside {arg}, which is {size[0]}x{size[1]} pixels "
                                 "as displayed (EXIF orientation applied)") from None
