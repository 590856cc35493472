"""The `kosmos` command: parse and check options, call one library function, show the result.

Errors become one line on stderr and an exit code here, and only here. Exit codes:
0 done (failed images are recorded rows), 1 fatal error (or a failed image with --strict), 2 usage error,
75 the output is locked by another run, 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP.
"""

from __future__ import annotations

import atexit
import io
import json
import logging
import os
import re
import signal
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from . import __version__, api, exports
from .declare import command_options, flag_for
from .errors import Interrupted, KosmosError, UsageError
from .inputs.images import is_image_path
from .options import REPORTING, RUN_GROUPS, AsJson, Quiet, Strict
from .reader_options import ClassOptions, DrawOptions, Duplicates, EvalOptions, ExportOptions, ScoreFilter, ViewOptions
from .run.plan import Plan
from .run.progress import for_terminal
from .tasks.records import one_line, printable


class _PlainHelp:
    """-h/--help is a plain flag: its help line shows no `<bool>` (typer makes that option itself)."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class _Command(_PlainHelp, TyperCommand):
    """A command whose usage line names its arguments as its help does: `kosmos ground [OPTIONS] INPUTS...`."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue
            name = param.metavar or (param.name or "").upper()
            if param.nargs != 1 and not name.endswith("..."):
                name += "..."
            pieces.append(name if param.required or name.startswith("[") else f"[{name}]")
        return pieces


class _Group(_PlainHelp, TyperGroup):
    pass


app = typer.Typer(
    name="kosmos",
    cls=_Group,
    help="Ground image collections with Kosmos-2: captions, phrases and their boxes, to JSONL or Parquet.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"kosmos {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.", metavar="")
    ] = False,
) -> None:
    """Ground image collections with Kosmos-2."""


# -- the commands: their own arguments here; every option comes from its declaration in options.py ------------------
Inputs = Annotated[
    list[str],
    typer.Argument(
        metavar="INPUTS",
        help="Folders, image files, globs, manifests (.txt .csv .jsonl .parquet with a 'path' column), or - for "
        "paths on stdin.",
        show_default=False,
    ),
]
DetectionResults = Annotated[  # what export and eval read: boxes the model found
    str,
    typer.Argument(
        metavar="RESULTS",
        help="A results file of kosmos ground or find (.jsonl or .parquet), or a dataset folder.",
        show_default=False,
    ),
]
Results = Annotated[
    str,
    typer.Argument(
        metavar="RESULTS",
        help="A results file of kosmos ground, refer or find (.jsonl or .parquet), or a dataset folder.",
        show_default=False,
    ),
]


def _task_command(command: api.TaskCommand) -> None:
    """`kosmos NAME INPUTS... [OPTIONS]` for a registered task: its own options, then every run option."""
    run = _ARGUMENTS.get(command.name, _inputs_command)(command)
    run.__name__, run.__doc__ = command.name, command.help
    decorated = command_options(command.options, *RUN_GROUPS, *REPORTING, AsJson)(run)
    app.command(command.name, cls=_Command, epilog=f"Example: {command.example}")(decorated)


def _inputs_command(command: api.TaskCommand):
    def run(inputs: Inputs, **given) -> None:
        function = api.FUNCTIONS[command.name]
        _model_command(command.name, lambda progress: function(inputs, progress=progress, **given), given)

    return run


def _find_command(command: api.TaskCommand):
    """find's arguments: one INPUT, then the phrases to find in it (as -p gives them)."""

    def run(
        input_: Annotated[
            str,
            typer.Argument(
                metavar="INPUT",
                show_default=False,
                help="A folder, image file, glob, manifest (.csv .jsonl .parquet with 'path' and 'phrase' columns), "
                "or - for stdin.",
            ),
        ],
        listed: Annotated[
            Optional[list[str]],
            typer.Argument(
                metavar="[PHRASES]...",
                help="Phrases to find in every image (as -p does). Without any: a manifest's 'phrase' column.",
                show_default=False,
            ),
        ] = None,
        **given,
    ) -> None:
        given["phrases"] = [*(listed or []), *(given.get("phrases") or [])]

        def go(progress):
            _not_images(listed or [])
            return api.find([input_], progress=progress, **given)

        _model_command("find", go, given)

    return run


_ARGUMENTS = {"find": _find_command}  # tasks whose command line takes other arguments than INPUTS...


def _model_command(name: str, go, given: dict) -> None:
    """ground, refer and find: the run with its progress on stderr, then the summary and the exit code."""
    quiet, strict, as_json = Quiet.take(given).quiet, Strict.take(given).strict, AsJson.take(given).json

    def run():
        if as_json and not given.get("dry_run"):
            raise UsageError("--json is for --dry-run's plan: add --dry-run, or drop --json")
        return go(for_terminal(name, quiet))

    done = _call(run, quiet)
    if isinstance(done, Plan):
        _planned(done, quiet, as_json)
    else:
        _finish(done, quiet, strict)


def _planned(plan: Plan, quiet: bool, as_json: bool) -> None:
    """A dry run: what a person reads on stderr, then one line (or a JSON object) for scripts on stdout."""
    if not quiet and not as_json:
        for line in plan.lines():
            _say(f"kosmos: {line}")
    print(json.dumps(plan.as_dict()) if as_json else plan.line(), flush=True)


def _not_images(phrases: list[str]) -> None:
    """`kosmos find a.png b.png "a dog"` would look for the phrase "b.png": refused, before the model loads."""
    for text in phrases:
        if is_image_path(text) and os.path.isfile(text):
            raise UsageError(
                f"{text} is an image file, not a phrase: kosmos find takes one input (for several "
                "images name their folder, a glob or a manifest); give phrases with -p/--phrase"
            )


api.on_register(_task_command)  # ground, refer and find first, in that order; any task registered later too


@app.command(epilog="Example: kosmos draw results.parquet --out-dir annotated/ --html")
@command_options(DrawOptions, ScoreFilter, *REPORTING)
def draw(
    results: Results,
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
    **given,
) -> None:
    """Draw the boxes and phrases of a results file onto the images; prints each file written."""
    quiet, strict = Quiet.take(given).quiet, Strict.take(given).strict

    def go():
        drawn = lambda path: print(path, flush=True)  # noqa: E731 - stdout carries the files written, one a line
        return api.draw(results, out_dir, progress=for_terminal("draw", quiet), on_drawn=drawn, **given)

    _finish(_call(go, quiet), quiet, strict)


@app.command(epilog='Example: kosmos export results.parquet --to yolo dataset/ --classes "dog,cat" --min-score 0.3')
@command_options(ClassOptions, Duplicates, ExportOptions, ScoreFilter, *REPORTING)
def export(
    results: DetectionResults,
    out: Annotated[
        str,
        typer.Argument(metavar="OUT", help=f"{exports.out_help()}.", show_default=False),
    ],
    to: Annotated[str, typer.Option("--to", help=f"{exports.formats_help()}.", show_default=False)],
    **given,
) -> None:
    """Export the boxes of a ground or find results file as labels for training a detector (--to names the format)."""
    quiet, strict = Quiet.take(given).quiet, Strict.take(given).strict
    _finish(_call(lambda: api.export(results, to, out, **given), quiet), quiet, strict)


@app.command(name="eval", epilog="Example: kosmos eval results.parquet --truth corrected.json --plot pr.png")
@command_options(ClassOptions, Duplicates, EvalOptions, Quiet, AsJson)
def eval_(
    results: DetectionResults,
    truth: Annotated[
        str,
        typer.Option(
            "--truth",
            help="The right boxes: a COCO instances .json, a YOLO dataset (data.yaml or its folder, with labels/) or "
            "a Pascal VOC folder (Annotations/).",
            show_default=False,
        ),
    ],
    **given,
) -> None:
    """Measure a results file against ground truth: COCO AP per class, and the --min-score with the best F1."""
    quiet, as_json = Quiet.take(given).quiet, AsJson.take(given).json  # the API returns the report instead
    _call(lambda: _show_eval(api.eval_results(results, truth, **given), as_json), quiet)


def _show_eval(report, as_json: bool) -> None:
    """The report on stdout (it is the command's data): one JSON object, or tables and the export line last."""
    if as_json:
        print(json.dumps(report.as_dict(), ensure_ascii=False), flush=True)
        return
    from rich.console import Console
    from rich.table import Table

    shown = io.StringIO()  # rendered here, printed below: a closed pipe (`| head`) ends quietly, as elsewhere
    console = Console(file=shown, width=Console().width, force_terminal=sys.stdout.isatty(), highlight=False)
    at = f"; P, R, F1 at --min-score {report.best.min_score:g}, IoU 0.5" if report.best is not None else ""
    for title, (headers, rows) in (
        (f"per class (AP: pycocotools{at})", report.class_rows()),
        ("precision, recall and F1 at IoU 0.5 per --min-score", report.sweep_rows()),
    ):
        table = Table(title=f"kosmos eval: {title}", title_justify="left")
        for n, header in enumerate(headers):
            table.add_column(header, justify="left" if n == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    print(shown.getvalue(), end="")
    for line in [*report.notes(), report.command]:
        print(printable(line), flush=True)


@app.command(epilog="Example: kosmos view results.parquet --open")
@command_options(ViewOptions, Quiet)
def view(
    results: Annotated[
        str,
        typer.Argument(
            help="A results file of kosmos ground, refer or find (.jsonl or .parquet), or a folder of Parquet parts.",
            show_default=False,
        ),
    ],
    **given,
) -> None:
    """Browse a results file in a local page: boxes over the images, filters, a detail view, the export line."""
    quiet = Quiet.take(given).quiet
    _call(lambda: api.view(results, quiet=quiet, **given), quiet)


@app.command(name="import", epilog="Example: kosmos import results.parquet results/")
@command_options(Quiet)
def import_results(
    results: Annotated[
        str,
        typer.Argument(
            metavar="RESULTS",
            help="A results file of kosmos ground, refer or find (.jsonl or .parquet), on this machine.",
            show_default=False,
        ),
    ],
    out: Annotated[
        str,
        typer.Argument(
            metavar="OUT",
            help="The dataset folder (--out DIR/ of ground, refer, find; here or in a bucket): made if missing.",
            show_default=False,
        ),
    ],
    **given,
) -> None:
    """Add the records of a results file to a dataset folder as parts of their own; the file is left as it was."""
    quiet = Quiet.take(given).quiet
    done = _call(lambda: api.import_results(results, out), quiet)
    if not quiet:
        _say(done.line())


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


def _as_flags(exc: KosmosError) -> str:
    """The library speaks of parameters (batch_size), the command line of flags (--batch-size)."""
    if isinstance(exc, UsageError) and exc.param:
        return exc.render(flag_for(exc.param))
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
    if code in _INTERRUPTED:
        _end_now(code)
    sys.exit(code if isinstance(code, int) else 0)


_INTERRUPTED = frozenset(128 + s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))


def _end_now(code: int) -> None:
    """End an interrupted command now: what it wrote is flushed and unlocked already, and the interpreter's own
    teardown can take seconds (torch's, on a busy machine) or wait on a read stuck in a worker thread."""
    atexit._run_exitfuncs()  # what the process registered (a rank's last word to the others) still runs
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _usage_line(exc) -> str:
    """Click's message, lower-cased like ours, and where the help is.

    "no such option: --bogus; see 'kosmos ground --help'"
    """
    text = one_line(exc.format_message()).rstrip(".")
    text = re.sub(r"\.? ?Did you mean (.+?)\?$", r" (did you mean \1?)", text)  # Click's suggestion, in brackets
    text = text[:1].lower() + text[1:]
    ctx = getattr(exc, "ctx", None)  # usage errors know their command; other Click errors do not
    return f"{text}; see '{ctx.command_path} --help'" if ctx is not None else text


for _registered in app.registered_commands:  # every command, whoever adds it: a plain -h/--help
    if _registered.cls in (None, TyperCommand):
        _registered.cls = _Command

if __name__ == "__main__":
    main()
