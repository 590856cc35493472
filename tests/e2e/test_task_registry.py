"""The task registry is the only extension point: a toy task (captions without grounding), declared here and
registered here alone, runs end to end through the command line and the Python API: its options, its records, its
resume, its dry run, its summary's noun, and kosmos draw over its results."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import ClassVar

import pytest

from kosmos_cli import api, tasks
from kosmos_cli.cli import app
from kosmos_cli.model.prompts import caption_prompt
from kosmos_cli.options import Group, option
from kosmos_cli.output.reader import read_records
from kosmos_cli.tasks import Task
from kosmos_cli.tasks.markup import parse
from kosmos_cli.tasks.records import Record
from kosmos_cli.view import start
from tests.helpers import kosmos, make_images


@dataclass
class CaptionRecord(Record):
    task: ClassVar[str] = "caption"
    fields: ClassVar[tuple[str, ...]] = ("text", "words")

    text: str | None = None
    words: int | None = None

    def own_dict(self):
        return {"text": self.text, "words": self.words}


class Caption(Task):
    """A caption and nothing else: the markup of grounded phrases taken out."""

    name = "caption"
    noun = "picture"
    record_type = CaptionRecord
    text_field = "text"  # what kosmos view searches and shows

    def __init__(self, longest: int):
        self._prompt, self._longest = caption_prompt("brief"), longest

    @classmethod
    def arrow_fields(cls):
        import pyarrow as pa

        return [pa.field("text", pa.string()), pa.field("words", pa.int32())]

    @classmethod
    def shapes(cls, row):
        return []

    @classmethod
    def caption_html(cls, row, mark):
        return row.get("text") or ""

    def units(self, item, settings):
        return [self.unit(item, settings, prompt=self._prompt.text)]

    def prompt(self, unit):
        return self._prompt

    def own_fields(self, unit, text):
        if text is None:
            return {}
        caption, _ = parse(text, strip_prompt=self._prompt.text)
        kept = " ".join(caption.split()[: self._longest])
        return {"text": kept, "words": len(kept.split())}


@dataclass(frozen=True)
class CaptionOptions(Group):
    """How long a caption may be."""

    longest: int = option(50, "Keep at most this many words of each caption.")


@pytest.fixture
def caption():
    api.register_task(
        api.TaskCommand(
            Caption, CaptionOptions, lambda own: Caption(own.longest), "Caption images, no boxes.", "kosmos caption ."
        )
    )
    yield api.FUNCTIONS["caption"]
    for registry in (tasks.REGISTRY, api.TASK_COMMANDS, api.FUNCTIONS):
        del registry["caption"]
    app.registered_commands[:] = [c for c in app.registered_commands if c.name != "caption"]


def test_a_toy_task_runs_through_the_command_line(caption, tmp_path, tiny_model):
    photos = tmp_path / "photos"
    make_images(str(photos))
    out = str(tmp_path / "captions.parquet")
    helped = kosmos("caption", "--help")
    assert helped.exit_code == 0 and "--longest" in helped.stdout and "Example: kosmos caption ." in helped.stdout
    done = kosmos("caption", str(photos), "--out", out, "--longest", "2", model=tiny_model)
    assert done.exit_code == 0, done.output
    assert "kosmos caption finished: 4 done, 0 failed, 0 skipped" in done.stderr
    rows = list(read_records(out))
    assert len(rows) == 4 and {r["task"] for r in rows} == {"caption"}
    assert all(r["status"] == "ok" and r["words"] == len(r["text"].split()) <= 2 for r in rows)
    again = kosmos("caption", str(photos), "--out", out, "--dry-run", "--json", model=tiny_model)
    assert json.loads(again.stdout)["recorded"] == 4, again.output
    (photos / "broken.png").write_bytes(b"not an image")
    failed = kosmos("caption", str(photos), "--out", out, "--strict", model=tiny_model)
    assert failed.exit_code == 1 and "1 picture failed (--strict)" in failed.stderr, failed.output
    drawn = kosmos("draw", out, "--out-dir", str(tmp_path / "drawn"))
    assert drawn.exit_code == 0, drawn.output
    with start(out) as viewer:
        with urllib.request.urlopen(viewer.url.rstrip("/") + "/api/records?text=img_01", timeout=30) as answer:
            (card,) = json.loads(answer.read())["cards"]
        assert card["html"] == next(r["text"] for r in rows if r["path"] == card["path"]) and card["entities"] == []


def test_a_toy_task_runs_through_the_api(caption, tmp_path, tiny_engine):
    photos = tmp_path / "photos"
    make_images(str(photos))
    out = str(tmp_path / "captions.jsonl")
    assert caption.__name__ == "caption" and "longest" in caption.__signature__.parameters
    summary = caption(str(photos), out, engine=tiny_engine, longest=3)
    assert (summary.task, summary.done) == ("caption", 4)
    assert caption(str(photos), out, engine=tiny_engine).skipped == 4
    with pytest.raises(TypeError, match="unexpected"):
        caption(str(photos), out, engine=tiny_engine, boxes=["1,2,3,4"])  # refer's option, not this task's
