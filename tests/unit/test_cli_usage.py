"""Usage errors from the command-line parser are one line, `kosmos: error: ...`, exit 2, as the README promises."""

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def kosmos(*args):
    return subprocess.run(
        [sys.executable, "-m", "kosmos_cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


@pytest.mark.parametrize(
    "args, text",
    [
        (["ground", "--bogus"], "no such option: --bogus"),
        (["ground"], "missing argument"),
        (["find"], "missing argument"),
        (["ground", "x.png", "--batch-size", "many"], "invalid value for '--batch-size'"),
        (["ground", "x.png", "--out"], "option '--out' requires an argument"),
        (["nosuch"], "no such command 'nosuch'"),
        (["draw", "r.jsonl"], "missing option '--out-dir'"),
    ],
)
def test_a_usage_error_is_one_line(args, text):
    proc = kosmos(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kosmos: error: ") and text in lines[0], lines[0]
    assert "╭" not in proc.stderr and proc.stdout == ""


def test_the_line_says_where_the_help_is():
    line = kosmos("refer", "--bogus").stderr.strip()
    assert line.endswith("see 'python -m kosmos_cli refer --help'"), line


def test_help_and_version_still_work():
    for args in (["--help"], ["ground", "--help"], ["find", "-h"]):
        proc = kosmos(*args)
        assert proc.returncode == 0 and "Usage" in proc.stdout and proc.stderr == "", (args, proc.stderr)
    proc = kosmos("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("kosmos ")


def test_no_arguments_shows_the_help():
    proc = kosmos()
    assert proc.returncode == 2 and "Usage" in proc.stdout


def test_a_suggested_command_is_in_brackets_with_its_own_question_mark():
    line = kosmos("grund").stderr.strip()
    assert line == "kosmos: error: no such command 'grund' (did you mean 'ground'?); see 'python -m kosmos_cli --help'"


@pytest.mark.parametrize(
    "command, usage",
    [
        ("ground", "ground [OPTIONS] INPUTS..."),
        ("refer", "refer [OPTIONS] INPUTS..."),
        ("find", "find [OPTIONS] INPUT [PHRASES]..."),
        ("draw", "draw [OPTIONS] RESULTS"),
        ("export", "export [OPTIONS] RESULTS OUT"),
        ("eval", "eval [OPTIONS] RESULTS"),
        ("view", "view [OPTIONS] RESULTS"),
    ],
)
def test_usage_lines_name_the_arguments_and_help_is_a_plain_flag(command, usage):
    proc = subprocess.run(
        [sys.executable, "-m", "kosmos_cli", command, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    assert usage in proc.stdout and "{" not in proc.stdout.split("\n\n")[0], proc.stdout[:300]
    help_line = next(line for line in proc.stdout.splitlines() if "--help" in line)
    assert "<bool>" not in help_line, help_line


def test_out_help_names_datasets():
    text = kosmos("ground", "--help").stdout
    assert "Parquet dataset" in " ".join(text.split()), text
