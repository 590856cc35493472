"""The README is the manual: every command and every option must be in it."""

import os
import re
import subprocess

import typer

from kosmos_cli.cli import app
from tests.helpers import ROOT

README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def _commands():
    group = typer.main.get_command(app)
    return {name: cmd for name, cmd in group.commands.items()}


def test_every_command_has_a_section():
    for name in _commands():
        assert f"## kosmos {name}" in README, f"README has no '## kosmos {name}' section"


def test_every_option_is_documented():
    missing = []
    for name, cmd in _commands().items():
        for param in cmd.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt != "--help" and not re.search(re.escape(opt) + r"\b", README):
                    missing.append(f"kosmos {name} {opt}")
    assert not missing, f"missing from README: {missing}"


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    test_command = next(b.strip() for b in blocks if "pytest" in b)
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert test_command in ci.splitlines()
    assert "torch==2.13.0" in ci


def test_setup_command_installs_torch_first_and_runs_the_main_job():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    setup = next(b for b in blocks if "pip install" in b)
    assert "torch==2.13.0" in setup and "kosmos ground" in setup


def test_changelog_exists_and_has_an_unreleased_entry():
    text = open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8").read()
    assert "## Unreleased" in text


def test_sample_images_have_their_sources_written_down():
    folder = os.path.join(ROOT, "sample_images")
    sources = open(os.path.join(folder, "SOURCES.md"), encoding="utf-8").read()
    for name in os.listdir(folder):
        if name.endswith(".jpg"):
            assert name in sources


def test_git_tracks_no_stray_outputs():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert not [f for f in files if f.startswith("results") or f.endswith(".lock")]
