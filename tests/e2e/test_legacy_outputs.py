"""Outputs written before records named their task (tests/fixtures/legacy-outputs) still resume and draw."""

import os
import shutil

import pytest

from kosmos_cli import draw, find, ground, read_records, refer
from tests.helpers import HERE

LEGACY = os.path.join(HERE, "fixtures", "legacy-outputs")
SHAPES = os.path.join(HERE, "fixtures", "kosmos2-shapes")
RUNS = {
    "ground": lambda out: ground(["images"], out, model="../kosmos2-shapes", max_new_tokens=24),
    "refer": lambda out: refer(["images"], out, boxes=["10,10,100,100"], model="../kosmos2-shapes", max_new_tokens=24),
    "find": lambda out: find(
        ["images"], out, phrases=["a red square", "a blue circle"], model="../kosmos2-shapes", max_new_tokens=24
    ),
}


@pytest.fixture
def legacy(tmp_path, monkeypatch):
    """A copy of the fixture beside the model under the name it was written with, images at their recorded mtime."""
    work = tmp_path / "legacy-outputs"
    shutil.copytree(LEGACY, work)
    os.symlink(SHAPES, tmp_path / "kosmos2-shapes")
    monkeypatch.chdir(work)
    for row in read_records("ground.jsonl"):
        os.utime(row["path"], (row["file_mtime"], row["file_mtime"]))
    return work


@pytest.mark.parametrize("task", ["ground", "refer", "find"])
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_output_written_before_the_task_column_resumes_with_everything_skipped(legacy, task, fmt):
    out = f"{task}.{fmt}"
    before = list(read_records(out))
    summary = RUNS[task](out)
    assert (summary.done, summary.failed, summary.skipped) == (0, 0, len(before))
    after = list(read_records(out))
    assert [{k: v for k, v in row.items() if k != "task"} for row in after] == before


@pytest.mark.parametrize("task", ["ground", "refer", "find"])
def test_an_output_written_before_the_task_column_still_draws(legacy, task, tmp_path):
    summary = draw(f"{task}.parquet", str(tmp_path / "drawn"))
    assert (summary.drawn, summary.failed, summary.skipped) == (len(list(read_records(f"{task}.parquet"))), 0, 0)
