"""The `kosmos` command: parse and check options, call one library function, show the result.

What it writes, and every error's line and exit code, come from one place: cli/output.py (its exit codes are listed
there).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from .. import __version__, api, exports
from ..errors import UsageError
from ..inputs.images import is_image_path
from ..options import REPORTING, RUN_GROUPS, AsJson, Quiet, Strict
from ..options.declare import command_options
from ..options.readers import (
    ClassOptions,
    DrawOptions,
    Duplicates,
    EvalOptions,
    ExportOptions,
    ScoreFilter,
    ViewOptions,
)
from ..run.plan import Plan
from ..run.progress import for_terminal
from .output import call, finish, planned, run_app, say, show_eval


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


# -- the commands: their own arguments here; every option comes from its declaration (options/, options/readers.py)
def _argument(metavar: str | None, help: str) -> Any:
    """A command's own argument: its name in the usage line and its help, no default beside it."""
    return typer.Argument(metavar=metavar, help=help, show_default=False)


Inputs = Annotated[
    list[str],
    _argument(
        "INPUTS",
        "Folders, image files, globs, manifests (.txt .csv .jsonl .parquet with a 'path' column), or - for paths on "
        "stdin.",
    ),
]
DetectionResults = Annotated[  # what export and eval read: boxes the model found
    str, _argument("RESULTS", "A results file of kosmos ground or find (.jsonl or .parquet), or a dataset folder.")
]
Results = Annotated[
    str,
    _argument("RESULTS", "A results file of kosmos ground, refer or find (.jsonl or .parquet), or a dataset folder."),
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
            _argument(
                "INPUT",
                "A folder, image file, glob, manifest (.csv .jsonl .parquet with 'path' and 'phrase' columns), or - "
                "for stdin.",
            ),
        ],
        listed: Annotated[
            Optional[list[str]],
            _argument(
                "[PHRASES]...",
                "Phrases to find in every image (as -p does). Without any: a manifest's 'phrase' column.",
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

    done = call(run, quiet)
    if isinstance(done, Plan):
        planned(done, quiet, as_json)
    else:
        finish(done, quiet, strict)


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

    finish(call(go, quiet), quiet, strict)


@app.command(epilog='Example: kosmos export results.parquet --to yolo dataset/ --classes "dog,cat" --min-score 0.3')
@command_options(ClassOptions, Duplicates, ExportOptions, ScoreFilter, *REPORTING)
def export(
    results: DetectionResults,
    out: Annotated[str, _argument("OUT", f"{exports.out_help()}.")],
    to: Annotated[str, typer.Option("--to", help=f"{exports.formats_help()}.", show_default=False)],
    **given,
) -> None:
    """Export the boxes of a ground or find results file as labels for training a detector (--to names the format)."""
    quiet, strict = Quiet.take(given).quiet, Strict.take(given).strict
    finish(call(lambda: api.export(results, to, out, **given), quiet), quiet, strict)


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
    call(lambda: show_eval(api.eval_results(results, truth, **given), as_json), quiet)


@app.command(epilog="Example: kosmos view results.parquet --open")
@command_options(ViewOptions, Quiet)
def view(
    results: Annotated[
        str,
        _argument(
            None, "A results file of kosmos ground, refer or find (.jsonl or .parquet), or a folder of Parquet parts."
        ),
    ],
    **given,
) -> None:
    """Browse a results file in a local page: boxes over the images, filters, a detail view, the export line."""
    quiet = Quiet.take(given).quiet
    call(lambda: api.view(results, quiet=quiet, **given), quiet)


@app.command(name="import", epilog="Example: kosmos import results.parquet results/")
@command_options(Quiet)
def import_results(
    results: Annotated[
        str,
        _argument("RESULTS", "A results file of kosmos ground, refer or find (.jsonl or .parquet), on this machine."),
    ],
    out: Annotated[
        str,
        _argument(
            "OUT", "The dataset folder (--out DIR/ of ground, refer, find; here or in a bucket): made if missing."
        ),
    ],
    **given,
) -> None:
    """Add the records of a results file to a dataset folder as parts of their own; the file is left as it was."""
    quiet = Quiet.take(given).quiet
    done = call(lambda: api.import_results(results, out), quiet)
    if not quiet:
        say(done.line())


def main() -> None:
    """`kosmos`: a usage error (unknown option, missing argument, bad value) is one line, exit 2, like any error."""
    run_app(app)


for _registered in app.registered_commands:  # every command, whoever adds it: a plain -h/--help
    if _registered.cls in (None, TyperCommand):
        _registered.cls = _Command

if __name__ == "__main__":
    main()
