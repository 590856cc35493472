"""The library API: everything a command does, callable from Python.

    from kosmos_cli import ground
    summary = ground("photos/", out="results.parquet", model="microsoft/kosmos-2-patch14-224")

Each call checks everything cheap (inputs, boxes, phrases, options, a drawing folder), then joins the other processes
of a launch, then checks the output (ours, this task's, not an input, not locked, writable), then loads the model
(unless an `engine` is given), then runs: a bad argument or a busy output never costs a model load.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import drawing, evaluate, exports, tasks
from .exports.classes import parse_classes
from .inputs import locations
from .model.engine import Engine
from .options import OUT, RUN_GROUPS, FindOptions, GenerationOptions, GroundOptions, ModelOptions, ReferOptions
from .options.declare import Group, keyword_options
from .options.readers import ClassOptions, DrawOptions, Duplicates, EvalOptions, ExportOptions, ScoreFilter, ViewOptions
from .output.dataset_import import Imported, import_file
from .output.reader import results_path
from .run import runner
from .run.pipeline import Progress, Summary
from .run.plan import Plan
from .run.runner import Inputs
from .tasks import Find, Ground, Refer, Task
from .view import serve


@keyword_options(ModelOptions, GenerationOptions, positional=("model",))
def load_engine(**given: Any) -> Engine:
    """Load a Kosmos-2 checkpoint once; pass the engine to several calls with `engine=`.

    `decoder`: "fast" decodes with our own greedy loop (token for token what generate gives, batches of mixed prompt
    lengths), "hf" with model.generate, "auto" with fast wherever it applies (greedy, no n-gram blocking).
    `quantize`: "int8" gives the vision encoder's and the text decoder's linear layers int8 weights, on the CPU
    (about twice as fast, approximate; "int8-or-float32" goes on in float32 where int8 cannot be had).
    """
    model, generation = ModelOptions.take(given), GenerationOptions.take(given)
    return Engine(*runner.on_this_rank(model, generation)).load()


@dataclass(frozen=True)
class TaskCommand:
    """A task as the library and the command line offer it: `kosmos NAME INPUTS...` and `kosmos_cli.NAME(inputs)`.

    A new task is its module (a `Task` subclass and its record type) and one `register_task(TaskCommand(...))`.
    """

    task: type[Task]
    options: type[Group]  # the task's own options, declared once (options/, or beside the task)
    build: Callable[[Any], Task]  # its options, taken from a call -> the task for one run
    help: str  # the command's help, one line
    example: str  # the command's example: "kosmos ground ./photos --out results.parquet"
    doc: str = ""  # the rest of the API function's docstring
    draws: Callable[[Any], str | None] = lambda options: None  # its options -> a folder to draw into as it goes

    @property
    def name(self) -> str:
        return self.task.name


TASK_COMMANDS: dict[str, TaskCommand] = {}
FUNCTIONS: dict[str, Callable[..., Summary | Plan]] = {}  # name -> the API function of each registered task
_hooks: list[Callable[[TaskCommand], None]] = []  # who else offers each task: the command line, once loaded


def register_task(command: TaskCommand) -> Callable[..., Summary | Plan]:
    """Offer a task: it joins the tasks' registry (its records are read, resumed, drawn and viewed as any task's),
    gets an API function (returned, and `FUNCTIONS[name]`) and, with the command line loaded, a command."""
    tasks.REGISTRY[command.name] = command.task
    TASK_COMMANDS[command.name] = command
    FUNCTIONS[command.name] = function = _task_function(command)
    for hook in _hooks:
        hook(command)
    return function


def on_register(hook: Callable[[TaskCommand], None]) -> None:
    """Call `hook` with every task registered, those so far first."""
    _hooks.append(hook)
    for command in list(TASK_COMMANDS.values()):
        hook(command)


def _task_function(command: TaskCommand) -> Callable[..., Summary | Plan]:
    def run(
        inputs: Inputs,
        *,
        engine: Engine | None = None,
        progress: Progress | None = None,
        on_write: Callable | None = None,
        **given: Any,
    ) -> Summary | Plan:
        own = command.options.take(given)
        return runner.start(
            command.build(own),
            inputs,
            given,
            engine=engine,
            progress=progress,
            on_write=on_write,
            draw=command.draws(own),
        )

    run.__name__ = run.__qualname__ = command.name
    run.__doc__ = inspect.cleandoc(f"{command.help}\n\n{command.doc}")
    return keyword_options(command.options, *RUN_GROUPS, positional=OUT)(run)


ground = register_task(
    TaskCommand(
        Ground,
        GroundOptions,
        lambda own: Ground(own.prompt),
        "Caption every image and ground its phrases: one record per image, resumable.",
        "kosmos ground ./photos --out results.parquet",
        doc="""Every image named by `inputs` (folders, files, globs, manifests) is written to `out`.

    `null`: "-" among `inputs` reads NUL-separated paths from stdin (find -print0), as refer and find do.
    `draw`: also draw each finished image's boxes into this folder (as `draw` does), on threads of its own; its
    DrawSummary is `summary.drawing`. `engine`: one loaded with load_engine, instead of the model options.
    `dry_run`: load no model, write nothing, and return the Plan of what the run would do.""",
        draws=lambda own: own.draw,
    )
)
refer = register_task(
    TaskCommand(
        Refer,
        ReferOptions,
        lambda own: Refer(own.boxes, own.normalized),
        "Describe regions of images: one record per (image, box) with the model's description of it.",
        "kosmos refer photo.jpg --box 10,20,200,300 --box 0,0,64,64",
        doc="""Each record has `description`, `box_px` and `box_model_px`.

    `boxes` ("x1,y1,x2,y2" strings or 4-number sequences; pixels of the image as displayed, or 0-1 with
    `normalized`) go with every image; without them each manifest row's x1, y1, x2, y2 columns are its box.""",
    )
)
find = register_task(
    TaskCommand(
        Find,
        FindOptions,
        lambda own: Find(own.phrases),
        "Find phrases in images: one record per (image, phrase) with its boxes (empty lists: not found).",
        'kosmos find photo.jpg "a red car" "a dog" --out found.jsonl',
        doc="""Each record has `boxes` (0-1) and `boxes_px`.

    `phrases` go with every image; without them each manifest row's `phrase` column is used.""",
    )
)


@keyword_options(DrawOptions, ScoreFilter)
def draw(
    results: str,
    out_dir: str,
    *,
    progress: Progress | None = None,
    on_drawn: Callable[[str], None] | None = None,
    threads: int | None = None,
    **given: Any,
):
    """Draw the boxes of every ok record of a results file (JSONL or Parquet from ground, refer or find).

    The images keep their layout below the common folder of the recorded paths; error records are skipped
    and counted. `out_dir` is new, empty, or one kosmos drew into before (naming.claim; UsageError otherwise, before
    anything is written). `html`: also write index.html, a gallery that opens from the folder. Images are drawn on
    `threads` threads (default: up to 4), reported to `on_drawn` in the order of the rows. Labels end with each
    box's score; `min_score` (0-1) draws only the boxes scored at least that. Returns a DrawSummary.
    """
    html, min_score = DrawOptions.take(given).html, ScoreFilter.take(given).min_score
    return drawing.run(
        results, out_dir, html=html, min_score=min_score, progress=progress, on_drawn=on_drawn, threads=threads
    )


@keyword_options(ClassOptions, Duplicates, ExportOptions, ScoreFilter)
def export(results: str, to: str, out: str, **given: Any):
    """Write the boxes of a ground or find results file (JSONL or Parquet) as labels in the format `to`, one of
    `kosmos_cli.exports.FORMATS`: coco (one JSON file), yolo (an Ultralytics folder), voc (a folder of Pascal VOC
    XML), labelstudio (tasks JSON with predictions, and its labelling config beside it), or one registered since.

    Classes: one per distinct phrase (normalised: lowercase, no leading article), or `classes` ("dog,cat" or a
    list; or `classes_file`, one a line), in that order, keeping only the boxes whose phrase names one of them
    ("a small brown dog", "two dogs" -> dog). `min_score` drops boxes scored below it; `nms` (an IoU) keeps the
    best-scored of overlapping boxes of one class in one image. Image paths are written relative to `root` when
    given; `image_root` prefixes Label Studio's image locations; `copy_images` copies images into a YOLO folder
    instead of linking them. Error records are skipped and counted. Returns an ExportSummary.
    """
    locations.check_local_output(out, "out")
    results_path(results)  # one line now, before anything is written, when it names no results
    named, chosen, min_score = ClassOptions.take(given), ExportOptions.take(given), ScoreFilter.take(given).min_score
    return exports.run(
        results,
        to,
        out,
        classes=parse_classes(named.classes, named.classes_file),
        min_score=min_score,
        nms=Duplicates.take(given).nms,
        root=chosen.root,
        image_root=chosen.image_root,
        copy_images=chosen.copy_images,
    )


@keyword_options(ClassOptions, Duplicates, EvalOptions)
def eval_results(results: str, truth: str, **given: Any) -> evaluate.EvalReport:
    """Measure a ground or find results file (JSONL, Parquet or a dataset folder) against ground truth: `truth` is a
    COCO instances .json, a YOLO dataset (its data.yaml or folder) or a Pascal VOC folder, as `export` writes them.

    Images are paired by path (relative to `root` when given; a truth name also pairs with a results path it ends).
    Classes are the truth's, or `classes`/`classes_file`; a phrase's boxes get their class as `export` gives them
    (and `nms` drops the duplicates export's `nms` drops).
    Returns an EvalReport: pycocotools' AP (0.50:0.95), AP50 and AP75 overall and per class, truth boxes and
    predictions, the images of either side the other lacks, precision, recall and F1 at IoU 0.5 for each
    --min-score from 0 to 1 (`sweep`), the best-F1 threshold (`best`) and the `kosmos export` line that uses it
    (`command`); `report.as_dict()` is all of it as JSON. `plot`: also draw precision against recall per class,
    the chosen threshold marked, into this .png file. Bad truth raises InputError.
    """
    named, chosen = ClassOptions.take(given), EvalOptions.take(given)
    results_path(results)
    return evaluate.run(
        results,
        truth,
        classes=parse_classes(named.classes, named.classes_file),
        nms=Duplicates.take(given).nms,
        root=chosen.root,
        plot=chosen.plot,
    )


@keyword_options(ViewOptions)
def view(results: str, *, quiet: bool = False, **given: Any) -> None:
    """Serve a local page over a results file (JSONL, Parquet or a folder of Parquet parts) until Ctrl-C: the images
    with their boxes drawn by the browser, filters, a detail view, and the `kosmos export` line for what is shown.
    The address goes to stdout; `quiet`: nothing on stderr. `kosmos_cli.view.start` runs one in the background."""
    chosen = ViewOptions.take(given)
    serve(results, chosen.host, chosen.port, open_browser=chosen.open_browser, cache_mb=chosen.cache_mb, quiet=quiet)


def import_results(results: str, out: str) -> Imported:
    """Add the records of a results file of kosmos (.jsonl or .parquet, of any task) to the dataset folder `out`
    (here or in a bucket; made if missing) as parts kosmos names, older than the dataset's own records: where the
    dataset records an image already, its record is kept. The file is left as it was. `Imported.line()` says what
    was done."""
    return import_file(results, out)
