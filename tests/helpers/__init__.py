"""What the tests share, imported by name (`from tests.helpers import ...`): paths, images, the CLI in-process.

pytest puts the repository root and tools/ on the import path (pyproject.toml, `pythonpath`), so the tools'
modules (shapes, tiny_checkpoint) import by name too; conftest.py holds only fixtures.
"""

import json
import os
import subprocess
import sys
import time

from tiny_checkpoint import build_processor, build_tiny  # tools/tiny_checkpoint.py
from typer.testing import CliRunner

from kosmos_cli.cli import app

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/
ROOT = os.path.dirname(HERE)
SHAPES_MODEL = os.path.join(HERE, "fixtures", "kosmos2-shapes")
SAMPLES = os.path.join(ROOT, "sample_images")

runner = CliRunner()


def make_images(folder, sizes=((224, 224), (320, 200), (200, 320), (288, 224))):
    """Plain coloured images of several sizes and formats; returns their paths."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, (w, h) in enumerate(sizes):
        ext = ("png", "jpg", "webp", "bmp")[i % 4]
        path = os.path.join(folder, f"img_{i:02d}.{ext}")
        Image.new("RGB", (w, h), (40 * i % 255, 90, 200)).save(path)
        paths.append(path)
    return paths


def kosmos(*args, model=None, input=None):
    """`kosmos ARGS` in-process with typer's CliRunner; with `model`, on that checkpoint and 3 new tokens."""
    extra = ["--model", model, "--max-new-tokens", "3"] if model else []
    return runner.invoke(app, [*args, *extra], input=input)


def rows_of(result):
    return [json.loads(line) for line in result.stdout.splitlines()]


def one_error_line(result, code, text):
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kosmos: error: ") and text in lines[0], result.stderr
    assert result.stdout == ""


def killed_after(args, folder, batches=2, cwd=ROOT, script="pause_after.py"):
    """`kosmos ARGS` in a process of its own, killed (-9) once its `batches`-th batch is written: tests/pause_after.py
    (or `script`) stops it at that point, so the kill never races a clock. `folder` gets its flag file."""
    paused = os.path.join(folder, "paused")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, script), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env={**os.environ, "KOSMOS_TEST_PAUSE_AFTER": str(batches), "KOSMOS_TEST_PAUSED": paused},
    )
    while not os.path.exists(paused) and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    _, err = proc.communicate()
    assert os.path.exists(paused), err.decode(errors="replace")


def kosmos_process(args, cwd=ROOT, timeout=300):
    """`python -m kosmos_cli ARGS` in a process of its own: its CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", "kosmos_cli", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


__all__ = [
    "HERE",
    "ROOT",
    "SAMPLES",
    "SHAPES_MODEL",
    "build_processor",
    "build_tiny",
    "killed_after",
    "kosmos",
    "kosmos_process",
    "make_images",
    "one_error_line",
    "rows_of",
    "runner",
]
