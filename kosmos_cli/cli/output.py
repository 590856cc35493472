"""What the `kosmos` command writes, and how it ends: data on stdout, one line per message on stderr, and every
error, signal and exit code, here and only here.

Exit codes: 0 done (failed images are recorded rows), 1 fatal error (or a failed image with --strict), 2 usage error,
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
from collections.abc import Callable
from typing import Any

import typer

from ..errors import Interrupted, KosmosError, UsageError
from ..options.declare import flag_for
from ..run.plan import Plan
from ..tasks.records import one_line, printable


def say(line: str) -> None:
    print(printable(line), file=sys.stderr, flush=True)  # a file name cannot break the line or forge another


# -- what a command shows ---------------------------------------------------------------------------------------------
def planned(plan: Plan, quiet: bool, as_json: bool) -> None:
    """A dry run: what a person reads on stderr, then one line (or a JSON object) for scripts on stdout."""
    if not quiet and not as_json:
        for line in plan.lines():
            say(f"kosmos: {line}")
    print(json.dumps(plan.as_dict()) if as_json else plan.line(), flush=True)


def finish(summary, quiet: bool, strict: bool) -> None:
    """A command's summary on stderr, and with --strict exit 1 where it says something failed."""
    rank = summary.rank
    quiet = quiet or bool(rank)  # a multi-process run: rank 0 speaks for every rank
    if not quiet:
        failures = [] if summary.warned else summary.failures  # draw and export warned of each as it came
        for failure in failures[:5]:
            say(f"kosmos: failed: {failure}")
        more = max(summary.failed, len(failures)) - min(len(failures), 5)
        if more > 0 and not summary.warned:
            say(f"kosmos: ... and {more} more failed (their records have status 'error')")
        if not sys.stderr.isatty():  # no live bar: a line for each rank's share
            for part in summary.ranks:
                say(part.line())
        say(summary.line())
        if summary.drawing is not None:
            say(summary.drawing.line())
    if strict and not rank:  # the reason for exit 1 is said even with --quiet
        reason = summary.strict_failure()
        if reason:
            say(f"kosmos: error: {reason} (--strict)")
            raise typer.Exit(1)


def show_eval(report, as_json: bool) -> None:
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


# -- one place for errors, signals and exit codes ---------------------------------------------------------------------
def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def call(fn: Callable[[], Any], quiet: bool) -> Any:
    """`fn()`, its errors one line on stderr and an exit code; SIGTERM and SIGHUP end it as Ctrl-C does."""
    _setup_logging(quiet)
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return fn()
    except KosmosError as exc:
        if not exc.quiet:  # quiet: another process of the run says it
            say(f"kosmos: error: {_as_flags(exc)}")
        raise typer.Exit(exc.exit_code) from None
    except BrokenPipeError:  # the reader went away (`| head -1`): end quietly
        _silence_stdout()
        raise typer.Exit(0) from None
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        if not quiet and not (isinstance(exc, Interrupted) and exc.quiet):
            advice = exc.advice if isinstance(exc, Interrupted) else Interrupted.advice  # what the command left
            say(f"kosmos: interrupted by {signal.Signals(signum).name}: {advice}")
        raise typer.Exit(128 + signum) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _as_flags(exc: KosmosError) -> str:
    """The library speaks of parameters (batch_size), the command line of flags (--batch-size)."""
    if isinstance(exc, UsageError) and exc.param:
        return exc.render(flag_for(exc.param))
    return str(exc)


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


def run_app(app: typer.Typer) -> None:
    """`app` as the process: a usage error (unknown option, missing argument, bad value) is one line, exit 2, like
    any error; an interrupted command ends at once."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer's own Click, never `import click`

    try:
        code = app(standalone_mode=False)  # returns the exit code of typer.Exit, None when a command returns
    except NoArgsIsHelpError:  # plain `kosmos`: the help was shown
        code = 2
    except ClickException as exc:
        say(f"kosmos: error: {_usage_line(exc)}")
        code = exc.exit_code
    except typer.Abort:
        say("kosmos: error: aborted")
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
