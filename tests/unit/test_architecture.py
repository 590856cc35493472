"""ARCHITECTURE.md's module map names every module of kosmos_cli, under its package, and nothing that is gone."""

from __future__ import annotations

import re
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]


def mapped(text: str) -> set[str]:
    """The paths the map's tree names: `name/` opens a package one indent deeper, `name.py` is a module in it."""
    block = text.split("## The module map", 1)[1].split("```", 2)[1]
    paths: set[str] = set()
    stack: list[tuple[int, str]] = []  # (indent, folder)
    for line in block.splitlines():
        found = re.match(r"^( *)([\w.]+/|[\w]+\.py)(?:\s|$)", line)
        if not found:
            continue
        indent, name = len(found.group(1)), found.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        folder = "/".join(f for _, f in stack)
        if name.endswith("/"):
            stack.append((indent, name.rstrip("/")))
        elif folder.startswith("kosmos_cli"):
            paths.add(f"{folder}/{name}")
    return paths


def test_the_module_map_names_every_module_and_no_other():
    actual = {p.relative_to(TOP).as_posix() for p in (TOP / "kosmos_cli").rglob("*.py")}
    listed = mapped((TOP / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    assert (sorted(actual - listed), sorted(listed - actual)) == ([], [])


def test_the_map_reader_reads_nesting():
    text = "## The module map\n```\nkosmos_cli/\n  a.py   x\n  sub/\n    b.py  y\n  c.py  z\ntests/  no\n```\n"
    assert mapped(text) == {"kosmos_cli/a.py", "kosmos_cli/sub/b.py", "kosmos_cli/c.py"}
