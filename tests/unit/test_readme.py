"""The README is the front door and docs/ the manual: every command has its page, every option is on its command's
page, every relative link leads to a file (and heading) that exists, and the README's set-up and test commands are
the ones CI runs."""

import glob
import os
import re
import subprocess

import typer

from kosmos_cli.cli import app
from tests.helpers import ROOT

MAX_README_LINES = 250


def _read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


README = _read("README.md")


def _commands():
    group = typer.main.get_command(app)
    return {name: cmd for name, cmd in group.commands.items()}


def _manual():
    """Every page a reader can follow links through: the README, ARCHITECTURE.md and docs/*.md."""
    pages = ["README.md", "ARCHITECTURE.md"]
    pages += sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
    return pages


def _prose(text):
    """The text outside fenced code blocks and HTML comments (cog's code lives in one), as lines."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _anchors(text):
    """The anchors GitHub gives the headings of a page: lower case, punctuation but - and _ dropped, spaces to -,
    a repeated one numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(text):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(text):
    """The targets of the markdown links in the prose of a page (links may wrap onto the next line)."""
    return re.findall(r"\]\(([^)\s]+)\)", "\n".join(_prose(text)))


def test_every_command_has_a_page():
    for name in _commands():
        page = os.path.join("docs", f"{name}.md")
        assert os.path.isfile(os.path.join(ROOT, page)), f"{page} is missing: every command has its page in docs/"
        assert _read(page).startswith(f"# kosmos {name}\n"), f"{page} does not start with '# kosmos {name}'"
        assert f"]({page})" in README, f"README's table of commands does not link {page}"


def test_every_option_is_documented_on_its_commands_page():
    missing = []
    for name, cmd in _commands().items():
        page = _read(os.path.join("docs", f"{name}.md"))
        for param in cmd.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt != "--help" and not re.search(re.escape(opt) + r"(?![\w-])", page):
                    missing.append(f"kosmos {name} {opt} (docs/{name}.md)")
    assert not missing, f"options missing from their command's page: {missing}"


def test_every_relative_link_leads_to_a_file_and_heading_that_exist():
    broken = []
    for page in _manual():
        folder = os.path.dirname(page)
        for target in _links(_read(page)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check
                continue
            path, _, anchor = target.partition("#")
            linked = os.path.normpath(os.path.join(folder, path)) if path else page
            if not os.path.exists(os.path.join(ROOT, linked)):
                broken.append(f"{page}: {target} (no {linked})")
            elif anchor and linked.endswith(".md") and anchor not in _anchors(_read(linked)):
                broken.append(f"{page}: {target} (no heading #{anchor} in {linked})")
    assert not broken, f"broken links: {broken}"


def test_the_manual_has_a_table_of_contents_that_reaches_every_page():
    index = _read(os.path.join("docs", "index.md"))
    for page in _manual():
        if page.startswith("docs" + os.sep) and page != os.path.join("docs", "index.md"):
            assert f"]({os.path.basename(page)}" in index, f"docs/index.md does not link {page}"
    assert "](docs/index.md)" in README


def test_readme_is_a_front_door():
    lines = len(README.splitlines())
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines: move the detail to docs/ (at most {MAX_README_LINES})"
    )
    assert "](docs/guarantees.md" in README, "README does not link what kosmos guarantees"
    assert "](ARCHITECTURE.md)" in README


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    test_command = next(b.strip() for b in blocks if "pytest" in b)
    ci = _read(os.path.join(".ci", "run"))
    assert test_command in ci.splitlines()
    assert "torch==2.13.0" in ci


def test_setup_command_installs_torch_first_and_runs_the_main_job():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    setup = next(b for b in blocks if "pip install" in b)
    assert "torch==2.13.0" in setup and "kosmos ground" in setup


def test_changelog_exists_and_has_an_unreleased_entry():
    assert "## Unreleased" in _read("CHANGELOG.md")


def test_sample_images_have_their_sources_written_down():
    folder = os.path.join(ROOT, "sample_images")
    sources = _read(os.path.join("sample_images", "SOURCES.md"))
    for name in os.listdir(folder):
        if name.endswith(".jpg"):
            assert name in sources


def test_git_tracks_no_stray_outputs():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert not [f for f in files if f.startswith("results") or f.endswith(".lock")]
