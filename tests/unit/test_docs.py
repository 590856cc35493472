"""docs/cli-reference.md is the commands' own --help, written there by cog; a stale copy fails here, saying how to
regenerate it (sqlite-utils keeps its docs/cli-reference.rst the same way)."""

import os
import subprocess
import sys

import typer

from kosmos_cli.cli import app
from tests.helpers import ROOT

REFERENCE = os.path.join("docs", "cli-reference.md")
REGENERATE = "cog -r docs/cli-reference.md"


def _cog_check(path, cwd=ROOT):
    """`cog --check` in a process of its own: typer reads the terminal width and colour settings at import."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    args = [sys.executable, "-m", "cogapp", "--check", "--diff", "--verbosity=0", path]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


def test_the_cli_reference_is_the_commands_help():
    result = _cog_check(REFERENCE)
    assert result.returncode == 0, f"{REFERENCE} is stale: run `{REGENERATE}`\n{result.stdout}{result.stderr}"


def test_the_cli_reference_has_every_command():
    with open(os.path.join(ROOT, REFERENCE), encoding="utf-8") as f:
        text = f.read()
    for name in typer.main.get_command(app).commands:
        assert f"## kosmos {name}\n" in text and f"Usage: kosmos {name} [OPTIONS]" in text, name


def test_a_stale_reference_fails_the_check(tmp_path):
    with open(os.path.join(ROOT, REFERENCE), encoding="utf-8") as f:
        text = f.read()
    stale = text.replace("Show the version and exit.", "Show the version.", 1)
    assert stale != text
    (tmp_path / "cli-reference.md").write_text(stale, encoding="utf-8")
    result = _cog_check(str(tmp_path / "cli-reference.md"))
    assert result.returncode != 0 and "Show the version and exit." in result.stdout + result.stderr
