"""What the test_cli_<command>.py files share: run `kosmos` in-process with typer's CliRunner, read its output."""

import json

from typer.testing import CliRunner

from kosmos_cli.cli import app

runner = CliRunner()


def kosmos(*args, model=None, input=None):
    """`kosmos ARGS`; with `model`, on that checkpoint and 3 new tokens."""
    extra = ["--model", model, "--max-new-tokens", "3"] if model else []
    return runner.invoke(app, [*args, *extra], input=input)


def rows_of(result):
    return [json.loads(line) for line in result.stdout.splitlines()]


def one_error_line(result, code, text):
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kosmos: error: ") and text in lines[0], result.stderr
    assert result.stdout == ""
