"""The `kosmos` command: parse and check options, call one library function, show the result.

Errors become one line on stderr and an exit code here, and only here. Exit codes:
0 done (failed images are recorded rows), 1 fatal error (or a failed image with --strict), 2 usage error,
75 the output is locked by another run, 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Annotated, Optional

import typer

from . import locations
from .errors import Interrupted, KosmosError, UsageError
from .records import printable

app = typer.Typer(
    name="kosmos",
    help="Ground image collections with Kosmos-2: captions, phrases and their boxes, to JSONL or Parquet.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"kosmos {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Ground image collections with Kosmos-2."""


# -- shared options: defined once, the same meaning in every command ---------------------------------------
Inputs = Annotated[
    list[str],
    typer.Argument(
        help="Folders, image files, globs, manifests (.txt .csv .jsonl .parquet with a 'path' column), or - for "
        "paths on stdin.",
        show_default=False,
    ),
]
Out = Annotated[str, typer.Option("--out", "-o", help="Output file (.jsonl or .parquet), or - for JSONL on stdout.")]
Format = Annotated[Optional[str], typer.Option("--format", help="jsonl or parquet (default: from --out's extension).")]
Model = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Hub id or local folder \\[default: $KOSMOS_MODEL, else microsoft/kosmos-2-patch14-224].",
        show_default=False,
    ),
]
Revision = Annotated[Optional[str], typer.Option("--revision", help="Hub revision (branch, tag or commit).")]
Device = Annotated[str, typer.Option("--device", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N.")]
Dtype = Annotated[
    str, typer.Option("--dtype", help="auto (bf16/fp16 on GPU, fp32 on CPU), float32, bfloat16, float16.")
]
BatchSize = Annotated[
    Optional[int],
    typer.Option(
        "--batch-size",
        "-b",
        help="Images per forward pass (default: 8 on the CPU; on CUDA 64 to 256, chosen from free memory).",
        show_default=False,
    ),
]
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", help="Most tokens generated per image.")]
NumBeams = Annotated[int, typer.Option("--num-beams", help="Beam search width (1: greedy).")]
NoRepeat = Annotated[
    int,
    typer.Option(
        "--no-repeat-ngram-size",
        help="Block repeated n-grams (0: off; the paper's demo used 3, which can block a "
        "second entity whose phrase ends like the first).",
    ),
]
Decoder = Annotated[
    str,
    typer.Option(
        "--decoder",
        help="fast: our own batched greedy loop (the same tokens as hf, prompts of any length in one batch); hf: "
        "transformers' generate; auto: fast unless --num-beams or --no-repeat-ngram-size ask for hf.",
    ),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Start afresh instead of resuming.")]
RetryFailed = Annotated[bool, typer.Option("--retry-failed", help="Also redo images recorded as failed.")]
Prune = Annotated[bool, typer.Option("--prune", help="Drop records of images no longer in the inputs.")]
Wait = Annotated[bool, typer.Option("--wait", help="Wait for another run on the same output instead of exiting.")]
Strict = Annotated[bool, typer.Option("--strict", help="Exit 1 if any image failed.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress, warnings or summary on stderr.")]
Workers = Annotated[
    Optional[int],
    typer.Option("--workers", help="Background image loaders \\[default: one per CPU, up to 16].", show_default=False),
]
MinScore = Annotated[
    Optional[float],
    typer.Option(
        "--min-score",
        help="Only boxes whose score (0-1) is at least this; boxes without a score are left out.",
        show_default=False,
    ),
]
Null = Annotated[
    bool,
    typer.Option(
        "--null", "-0", help="Paths on stdin (-) are separated by NUL bytes, as find -print0 writes them, not by lines."
    ),
]

PathColumn = Annotated[
    str,
    typer.Option(
        "--path-column",
        help="The manifest column with each image's path or URL (img2dataset link lists: url).",
        rich_help_panel="Where images live",
    ),
]
ImageColumn = Annotated[
    Optional[str],
    typer.Option(
        "--image-column",
        help="Read each image from this Parquet column of bytes (img2dataset: jpg) instead of a path.",
        show_default=False,
        rich_help_panel="Where images live",
    ),
]
KeyColumn = Annotated[
    Optional[str],
    typer.Option(
        "--key-column",
        help="With --image-column: the column that names each row \\[default: key].",
        show_default=False,
        rich_help_panel="Where images live",
    ),
]
FetchTimeout = Annotated[
    float,
    typer.Option(
        "--fetch-timeout",
        help="Seconds to wait on a remote image before it fails.",
        rich_help_panel="Where images live",
    ),
]
FetchRetries = Annotated[
    int,
    typer.Option(
        "--fetch-retries",
        help="Tries again after a 429, 5xx, timeout or dropped connection, with backoff.",
        rich_help_panel="Where images live",
    ),
]
MaxImageMb = Annotated[
    float,
    typer.Option(
        "--max-image-mb", help="A remote image larger than this fails unread.", rich_help_panel="Where images live"
    ),
]


@app.command(epilog="Example: kosmos ground ./photos --out results.parquet")
def ground(
    inputs: Inputs,
    out: Out = "-",
    prompt: Annotated[
        str,
        typer.Option(
            "--prompt",
            help="brief ('<grounding> An image of'), detailed ('<grounding> Describe this image in "
            "detail:'), or any text.",
        ),
    ] = "brief",
    model: Model = None,
    revision: Revision = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    batch_size: BatchSize = None,
    max_new_tokens: MaxNewTokens = 128,
    num_beams: NumBeams = 1,
    no_repeat_ngram_size: NoRepeat = 0,
    decoder: Decoder = "auto",
    format: Format = None,
    overwrite: Overwrite = False,
    retry_failed: RetryFailed = False,
    prune: Prune = False,
    wait: Wait = False,
    strict: Strict = False,
    quiet: Quiet = False,
    workers: Workers = None,
    null: Null = False,
    path_column: PathColumn = "path",
    image_column: ImageColumn = None,
    key_column: KeyColumn = None,
    fetch_timeout: FetchTimeout = locations.DEFAULT_TIMEOUT,
    fetch_retries: FetchRetries = locations.DEFAULT_RETRIES,
    max_image_mb: MaxImageMb = locations.DEFAULT_MAX_BYTES / 2**20,
    draw: Annotated[
        Optional[str],
        typer.Option(
            "--draw", help="Also draw each image's boxes into this folder, as kosmos draw does.", show_default=False
        ),
    ] = None,
) -> None:
    """Caption every image and ground its phrases: one record per image, resumable."""
    from . import api
    from .progress import for_terminal

    def go():
        return api.ground(
            inputs,
            out,
            prompt=prompt,
            format=format,
            batch_size=batch_size,
            overwrite=overwrite,
            retry_failed=retry_failed,
            prune=prune,
            wait=wait,
            workers=workers,
            null=null,
            path_column=path_column,
            image_column=image_column,
            key_column=key_column,
            fetch_timeout=fetch_timeout,
            fetch_retries=fetch_retries,
            max_image_mb=max_image_mb,
            draw=draw,
            progress=for_terminal("ground", quiet),
            model=model,
            revision=revision,
            device=device,
            dtype=dtype,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            no_repeat_ngram_size=no_repeat_ngram_size,
            decoder=decoder,
        )

    _finish(_call(go, quiet), quiet, strict)


Box = Annotated[
    Optional[list[str]],
    typer.Option(
        "--box",
        help="A region x1,y1,x2,y2 in pixels of the image as displayed (EXIF applied); repeat for more. "
        "Without it: a manifest's x1, y1, x2, y2 columns.",
        show_default=False,
    ),
]
Normalized = Annotated[bool, typer.Option("--normalized", help="Boxes are 0-1 fractions of width and height.")]


@app.command(epilog="Example: kosmos refer photo.jpg --box 10,20,200,300 --box 0,0,64,64")
def refer(
    inputs: Inputs,
    box: Box = None,
    normalized: Normalized = False,
    out: Out = "-",
    model: Model = None,
    revision: Revision = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    batch_size: BatchSize = None,
    max_new_tokens: MaxNewTokens = 128,
    num_beams: NumBeams = 1,
    no_repeat_ngram_size: NoRepeat = 0,
    decoder: Decoder = "auto",
    format: Format = None,
    overwrite: Overwrite = False,
    retry_failed: RetryFailed = False,
    prune: Prune = False,
    wait: Wait = False,
    strict: Strict = False,
    quiet: Quiet = False,
    workers: Workers = None,
    null: Null = False,
    path_column: PathColumn = "path",
    image_column: ImageColumn = None,
    key_column: KeyColumn = None,
    fetch_timeout: FetchTimeout = locations.DEFAULT_TIMEOUT,
    fetch_retries: FetchRetries = locations.DEFAULT_RETRIES,
    max_image_mb: MaxImageMb = locations.DEFAULT_MAX_BYTES / 2**20,
) -> None:
    """Describe regions of images: one record per (image, box) with the model's description of it."""
    from . import api
    from .progress import for_terminal

    def go():
        return api.refer(
            inputs,
            out,
            boxes=box,
            normalized=normalized,
            format=format,
            batch_size=batch_size,
            overwrite=overwrite,
            retry_failed=retry_failed,
            prune=prune,
            wait=wait,
            workers=workers,
            null=null,
            path_column=path_column,
            image_column=image_column,
            key_column=key_column,
            fetch_timeout=fetch_timeout,
            fetch_retries=fetch_retries,
            max_image_mb=max_image_mb,
            progress=for_terminal("refer", quiet),
            model=model,
            revision=revision,
            device=device,
            dtype=dtype,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            no_repeat_ngram_size=no_repeat_ngram_size,
            decoder=decoder,
        )

    _finish(_call(go, quiet), quiet, strict)


@app.command(epilog='Example: kosmos find photo.jpg "a red car" "a dog" --out found.jsonl')
def find(
    input_: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            show_default=False,
            help="A folder, image file, glob, manifest (.csv .jsonl .parquet with 'path' and 'phrase' columns), "
            "or - for stdin.",
        ),
    ],
    phrases: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="Phrases to find in every image (as -p does). Without any: a manifest's 'phrase' column.",
            show_default=False,
        ),
    ] = None,
    phrase: Annotated[
        Optional[list[str]],
        typer.Option(
            "--phrase",
            "-p",
            help="A phrase to find in every image; repeat for more. Never mistaken for an input.",
            show_default=False,
        ),
    ] = None,
    out: Out = "-",
    model: Model = None,
    revision: Revision = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    batch_size: BatchSize = None,
    max_new_tokens: MaxNewTokens = 128,
    num_beams: NumBeams = 1,
    no_repeat_ngram_size: NoRepeat = 0,
    decoder: Decoder = "auto",
    format: Format = None,
    overwrite: Overwrite = False,
    retry_failed: RetryFailed = False,
    prune: Prune = False,
    wait: Wait = False,
    strict: Strict = False,
    quiet: Quiet = False,
    workers: Workers = None,
    null: Null = False,
    path_column: PathColumn = "path",
    image_column: ImageColumn = None,
    key_column: KeyColumn = None,
    fetch_timeout: FetchTimeout = locations.DEFAULT_TIMEOUT,
    fetch_retries: FetchRetries = locations.DEFAULT_RETRIES,
    max_image_mb: MaxImageMb = locations.DEFAULT_MAX_BYTES / 2**20,
) -> None:
    """Find phrases in images: one record per (image, phrase) with its boxes (empty lists: not found)."""
    from . import api
    from .progress import for_terminal

    def go():
        _not_images(phrases or [])
        return api.find(
            [input_],
            out,
            phrases=[*(phrases or []), *(phrase or [])],
            format=format,
            batch_size=batch_size,
            overwrite=overwrite,
            retry_failed=retry_failed,
            prune=prune,
            wait=wait,
            workers=workers,
            null=null,
            path_column=path_column,
            image_column=image_column,
            key_column=key_column,
            fetch_timeout=fetch_timeout,
            fetch_retries=fetch_retries,
            max_image_mb=max_image_mb,
            progress=for_terminal("find", quiet),
            model=model,
            revision=revision,
            device=device,
            dtype=dtype,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            no_repeat_ngram_size=no_repeat_ngram_size,
            decoder=decoder,
        )

    _finish(_call(go, quiet), quiet, strict)


def _not_images(phrases: list[str]) -> None:
    """`kosmos find a.png b.png "a dog"` would look for the phrase "b.png": refused, before the model loads."""
    from .images import is_image_path

    for text in phrases:
        if is_image_path(text) and os.path.isfile(text):
            raise UsageError(
                f"{text} is an image file, not a phrase: kosmos find takes one input (for several "
                "images name their folder, a glob or a manifest); give phrases with -p/--phrase"
            )


@app.command(epilog="Example: kosmos draw results.parquet --out-dir annotated/ --html")
def draw(
    results: Annotated[
        str,
        typer.Argument(help="A results file of kosmos ground, refer or find (.jsonl or .parquet).", show_default=False),
    ],
    out_dir: Annotated[
        str,
        typer.Option(
            "--out-dir",
            "-o",
            help="Folder for the annotated images: new, empty, or drawn by kosmos before (made if "
            "missing); the images keep their layout below their common folder.",
            show_default=False,
        ),
    ],
    html: Annotated[
        bool, typer.Option("--html", help="Also write index.html, a gallery that opens from the folder in a browser.")
    ] = False,
    min_score: MinScore = None,
    strict: Strict = False,
    quiet: Quiet = False,
) -> None:
    """Draw the boxes and phrases of a results file onto the images; prints each file written."""
    from . import api
    from .progress import for_terminal

    def go():
        return api.draw(
            results,
            out_dir,
            html=html,
            min_score=min_score,
            progress=for_terminal("draw", quiet),
            on_drawn=lambda path: print(path, flush=True),
        )

    _finish(_call(go, quiet), quiet, strict)


@app.command(epilog='Example: kosmos export results.parquet --to yolo dataset/ --classes "dog,cat" --min-score 0.3')
def export(
    results: Annotated[
        str, typer.Argument(help="A results file of kosmos ground or find (.jsonl or .parquet).", show_default=False)
    ],
    out: Annotated[
        str,
        typer.Argument(
            metavar="OUT", help="coco, labelstudio: a .json file; yolo, voc: a new or empty folder.", show_default=False
        ),
    ],
    to: Annotated[str, typer.Option("--to", help="coco, yolo, voc or labelstudio.", show_default=False)],
    classes: Annotated[
        Optional[str],
        typer.Option(
            "--classes",
            help='Classes, in order, comma-separated ("dog,cat,traffic light"): only boxes whose phrase '
            'names one ("two dogs" is dog) \\[default: one class per distinct phrase].',
            show_default=False,
        ),
    ] = None,
    classes_file: Annotated[
        Optional[str], typer.Option("--classes-file", help="Classes, one a line, as --classes.", show_default=False)
    ] = None,
    min_score: MinScore = None,
    nms: Annotated[
        Optional[float],
        typer.Option(
            "--nms",
            help="Of boxes of one class in one image overlapping by more than this IoU, keep the best-scored.",
            show_default=False,
        ),
    ] = None,
    root: Annotated[
        Optional[str], typer.Option("--root", help="Write image paths relative to this folder.", show_default=False)
    ] = None,
    image_root: Annotated[
        Optional[str],
        typer.Option(
            "--image-root",
            help="labelstudio: a URL prefix or local-files path put before each image's path "
            "(e.g. /data/local-files/?d=photos/).",
            show_default=False,
        ),
    ] = None,
    copy_images: Annotated[
        bool, typer.Option("--copy-images", help="yolo: copy the images into OUT/images instead of linking them.")
    ] = False,
    strict: Strict = False,
    quiet: Quiet = False,
) -> None:
    """Export the boxes of a ground or find results file as labels: COCO, YOLO, Pascal VOC or Label Studio."""
    from . import api

    def go():
        return api.export(
            results,
            to,
            out,
            classes=classes,
            classes_file=classes_file,
            min_score=min_score,
            nms=nms,
            root=root,
            image_root=image_root,
            copy_images=copy_images,
        )

    _finish(_call(go, quiet), quiet, strict)


# -- one place for errors, signals and exit codes --------------------------------------------------------
def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def _call(fn, quiet: bool):
    _setup_logging(quiet)
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return fn()
    except KosmosError as exc:
        if not exc.quiet:  # quiet: another process of the run says it
            _say(f"kosmos: error: {_as_flags(exc)}")
        raise typer.Exit(exc.exit_code) from None
    except BrokenPipeError:  # the reader went away (`| head -1`): end quietly
        _silence_stdout()
        raise typer.Exit(0) from None
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        if not quiet and not (isinstance(exc, Interrupted) and exc.quiet):
            advice = exc.advice if isinstance(exc, Interrupted) else Interrupted.advice  # what the command left
            _say(f"kosmos: interrupted by {signal.Signals(signum).name}: {advice}")
        raise typer.Exit(128 + signum) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


FLAGS = {"boxes": "--box"}  # library parameters whose flag is not their name in kebab case


def _as_flags(exc: KosmosError) -> str:
    """The library speaks of parameters (batch_size), the command line of flags (--batch-size)."""
    if isinstance(exc, UsageError) and exc.param:
        return exc.render(FLAGS.get(exc.param) or "--" + exc.param.replace("_", "-"))
    return str(exc)


def _finish(summary, quiet: bool, strict: bool) -> None:
    rank = summary.rank
    quiet = quiet or bool(rank)  # a multi-process run: rank 0 speaks for every rank
    if not quiet:
        failures = [] if summary.warned else summary.failures  # draw and export warned of each as it came
        for failure in failures[:5]:
            _say(f"kosmos: failed: {failure}")
        more = max(summary.failed, len(failures)) - min(len(failures), 5)
        if more > 0 and not summary.warned:
            _say(f"kosmos: ... and {more} more failed (their records have status 'error')")
        if not sys.stderr.isatty():  # no live bar: a line for each rank's share
            for part in summary.ranks:
                _say(part.line())
        _say(summary.line())
        if summary.drawing is not None:
            _say(summary.drawing.line())
    if strict and not rank:  # the reason for exit 1 is said even with --quiet
        reason = summary.strict_failure()
        if reason:
            _say(f"kosmos: error: {reason} (--strict)")
            raise typer.Exit(1)


def _say(line: str) -> None:
    print(printable(line), file=sys.stderr, flush=True)  # a file name cannot break the line or forge another


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a message comes (a test runner swaps it), not the one at setup."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass

    def format(self, record):
        return printable(super().format(record))


def _setup_logging(quiet: bool) -> None:
    logger = logging.getLogger("kosmos_cli")
    logger.setLevel(logging.ERROR if quiet else logging.WARNING)
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("kosmos: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
    logger.propagate = False


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main() -> None:
    """`kosmos`: a usage error (unknown option, missing argument, bad value) is one line, exit 2, like any error."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer's own Click, never `import click`

    try:
        code = app(standalone_mode=False)  # returns the exit code of typer.Exit, None when a command returns
    except NoArgsIsHelpError:  # plain `kosmos`: the help was shown
        code = 2
    except ClickException as exc:
        _say(f"kosmos: error: {_usage_line(exc)}")
        code = exc.exit_code
    except typer.Abort:
        _say("kosmos: error: aborted")
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


def _usage_line(exc) -> str:
    """Click's message, lower-cased like ours, and where the help is.

    "no such option: --bogus; see 'kosmos ground --help'"
    """
    from .records import one_line

    text = one_line(exc.format_message()).rstrip(".")
    text = text[:1].lower() + text[1:]
    ctx = getattr(exc, "ctx", None)  # usage errors know their command; other Click errors do not
    return f"{text}; see '{ctx.command_path} --help'" if ctx is not None else text


if __name__ == "__main__":
    main()
