"""The import graph of kosmos_cli, read from the source with ast: no cycles, and imports point down the layers.

An import counts wherever it is written (at the top, in a function, under TYPE_CHECKING): a lazy import is for
start-up time, never a way around a cycle. Importing `a.b.c` runs the packages `a.b` and `a` first, so it counts as
an import of those too, except of the packages the importing module is itself inside (they are running already).
`from pkg import name` imports the module `pkg.name` when there is one, else `pkg` itself (a name defined there).
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "kosmos_cli"

# Lowest first. A module imports modules of its own layer or lower ones, never higher; a name stands for a module or
# a package and all its modules (the longest name that matches wins). Every module is in the table: a new one is
# placed here by whoever adds it. The stage packages (inputs/, model/, tasks/, output/, run/) keep their leaves at the
# bottom, so any stage may use them; the rest of each package sits where the data flow puts it.
LAYERS: list[tuple[str, ...]] = [
    ("kosmos_cli.errors",),  # the errors, and the credentials no message may carry (redact): imports nothing of ours
    (  # shared leaves: they import nothing of ours but errors (the stage packages' own __init__ modules nothing)
        "kosmos_cli.inputs",  # the package alone; its modules are placed below
        "kosmos_cli.inputs.listing",
        "kosmos_cli.inputs.names",
        "kosmos_cli.inputs.images",
        "kosmos_cli.inputs.carried_columns",
        "kosmos_cli.model",
        "kosmos_cli.model.prompts",
        "kosmos_cli.model.device",
        "kosmos_cli.model.capture",
        "kosmos_cli.tasks.records",
        "kosmos_cli.tasks.markup",
        "kosmos_cli.output",
        "kosmos_cli.output.atomic",
        "kosmos_cli.run",
        "kosmos_cli.run.threads",
        "kosmos_cli.run.progress",
        "kosmos_cli.run.reports",
        "kosmos_cli.drawing.fonts",
        "kosmos_cli.options.declare",  # how an option is declared, and the CLI's options and the API's parameters built
    ),
    (  # reading inputs, writing files, what a model is: nothing of tasks, sources or a run
        "kosmos_cli.inputs.locations",
        "kosmos_cli.model.files",
        "kosmos_cli.model.quantize",
        "kosmos_cli.model.pixels",
        "kosmos_cli.model.cache",
        "kosmos_cli.model.decoder",
        "kosmos_cli.tasks.scores",
        "kosmos_cli.output.placement",
        "kosmos_cli.output.locking",
        "kosmos_cli.output.dataset_folder",
    ),
    ("kosmos_cli.inputs.sources", "kosmos_cli.tasks"),  # the reader of inputs; each task (its record, prompt, parsing)
    (  # record files; every option (a run's, the readers' of results); reading a checkpoint
        "kosmos_cli.output.formats",
        "kosmos_cli.options",
        "kosmos_cli.options.readers",
        "kosmos_cli.model.checkpoint",
        "kosmos_cli.model.batch_size",
        "kosmos_cli.model.generate",
    ),
    (  # whose output; folding files; an open output and the life every store shares; a dataset's staging, settling
        "kosmos_cli.output.ownership",
        "kosmos_cli.output.compaction",
        "kosmos_cli.output.handle",
        "kosmos_cli.output.life",
        "kosmos_cli.output.dataset_staging",
        "kosmos_cli.output.dataset_settling",
    ),
    (  # the model on its device; an output's life; the one reader of results
        "kosmos_cli.model.engine",
        "kosmos_cli.output.store",
        "kosmos_cli.output.dataset",
        "kosmos_cli.output.dataset_import",
        "kosmos_cli.output.reader",
    ),
    ("kosmos_cli.run.standing", "kosmos_cli.run.batching"),  # resume's rule; the model's stages (here or on Ray)
    ("kosmos_cli.run.pipeline", "kosmos_cli.exports", "kosmos_cli.drawing"),  # the pass; the readers of results
    ("kosmos_cli.run.plan",),  # --dry-run: the pipeline's own listing and rule, with no model
    ("kosmos_cli.run.ray", "kosmos_cli.run.ranks"),  # the pipeline's model on a Ray cluster, on a launch's ranks
    ("kosmos_cli.run.runner", "kosmos_cli.view"),  # a run set up once; the viewer (it offers export's command line)
    ("kosmos_cli.evaluate",),  # results measured against ground truth: export's classes and reading, pycocotools' AP
    ("kosmos_cli.api",),
    ("kosmos_cli.cli.output",),  # what the CLI writes, its errors' lines and exit codes (it names their flags)
    ("kosmos_cli", "kosmos_cli.cli", "kosmos_cli.__main__"),  # the package's face: the API and the CLI
]


def find_modules(root: Path) -> dict[str, Path]:
    """Every module of the package at `root`, by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ours that importing `name` runs (see the module's docstring for what counts)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
    running = set(ancestors(name))
    out = set()
    for target in targets & modules.keys():
        out.add(target)
        out.update(a for a in ancestors(target) if a not in running)
    out.discard(name)
    return out


def graph_of(root: Path) -> dict[str, set[str]]:
    modules = find_modules(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_of(name: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching entry, layer)
    for number, layer in enumerate(LAYERS):
        for entry in layer:
            if name == entry or (entry != "kosmos_cli" and name.startswith(entry + ".")):
                if best is None or len(entry) > best[0]:
                    best = (len(entry), number)
    return None if best is None else best[1]


@pytest.fixture(scope="module")
def graph():
    found = graph_of(ROOT)
    assert found["kosmos_cli.inputs.sources"] >= {
        "kosmos_cli.inputs.locations.fs",
        "kosmos_cli.inputs.listing",
    }  # the reader reads
    return found


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_every_module_has_a_layer(graph):
    assert [name for name in graph if layer_of(name) is None] == []


def test_imports_point_down_the_layers(graph):
    upward = [
        f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
        for name, targets in sorted(graph.items())
        for target in sorted(targets)
        if (layer_of(target) or 0) > (layer_of(name) or 0)
    ]
    assert upward == []


def test_the_shared_types_import_nothing_of_ours(graph):
    assert {name: graph[name] for name in LAYERS[0] if graph[name]} == {}
    assert {
        name: graph[name] - {"kosmos_cli.errors"} for name in LAYERS[1] if graph[name] - {"kosmos_cli.errors"}
    } == {}


# -- the checker itself, on small packages written for it --------------------------------------------------------
def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "pkg"


def test_a_cycle_through_a_lazy_import_is_found(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "low.py": "def f():\n    from .high import g\n",
            "high.py": "from . import low\n",
        },
    )
    assert cycles(graph_of(package)) == [["pkg.high", "pkg.low"]]


def test_a_cycle_through_a_package_that_imports_its_modules_is_found(tmp_path):
    # reader imports sub.base, which runs sub/__init__.py first, which imports walk, which imports reader
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "reader.py": "from .sub.base import x\n",
            "sub/__init__.py": "from .walk import y\n",
            "sub/base.py": "x = 1\n",
            "sub/walk.py": "from ..reader import z\n",
        },
    )
    assert cycles(graph_of(package)) == [["pkg.reader", "pkg.sub", "pkg.sub.walk"]]


def test_modules_of_one_package_may_import_each_other_and_its_names_may_not(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "from .a import f\n",
            "a.py": "from .b import G\n",
            "b.py": "G = 1\n",
            "c.py": "from . import f\n",  # a name of the package, which does not import c: no cycle
        },
    )
    graph = graph_of(package)
    assert (graph["pkg.a"], graph["pkg.c"]) == ({"pkg.b"}, {"pkg"})
    assert cycles(graph) == []
    (package / "b.py").write_text("from . import f\n")  # the package's own name, while it imports b: a cycle
    assert cycles(graph_of(package)) == [["pkg", "pkg.a", "pkg.b"]]
