"""A unit carries the facts of one record; `Task.record` builds the record once from them, on every outcome path
(tasks/base.py); resume compares a unit's settings (run/standing.py). No model: generations are made from text."""

import dataclasses
import pickle

import pytest

from kosmos_cli.inputs.listing import Item
from kosmos_cli.output.handle import Recorded
from kosmos_cli.run.batching import Answered
from kosmos_cli.run.standing import CHANGED, DONE, FAILED, NEW, OTHER, TWICE, standing_units
from kosmos_cli.tasks import Find, Ground, Refer, Settings
from kosmos_cli.tasks.markup import snap, to_pixels
from kosmos_cli.tasks.records import COMMON_FIELDS, Record
from kosmos_cli.tasks.scores import Generation

SETTINGS = Settings("m", "greedy")
GROUNDED = "<grounding> An image of<phrase> a red circle</phrase><object><patch_index_0000><patch_index_1023></object>."


def one(task, item=None):
    (unit,) = task.units(item or Item("a.png", {"id": 7}, stat=(10, 1.5)), SETTINGS)
    return unit


def answered(unit, text, size=(320, 200), seconds=0.25):
    return dataclasses.replace(unit, size=size, seconds=seconds, generated=Generation(text))


def test_an_answered_unit_becomes_its_record_with_every_fact_in_the_output_order():
    record = Ground().record(answered(one(Ground()), GROUNDED))
    row = record.to_dict()
    assert list(row) == [*COMMON_FIELDS, "caption", "entities", "id"]
    assert {k: row[k] for k in COMMON_FIELDS} == {
        "path": "a.png",
        "task": "ground",
        "width": 320,
        "height": 200,
        "status": "ok",
        "error": None,
        "prompt": "<grounding> An image of",
        "model": "m",
        "decoding": "greedy",
        "file_size": 10,
        "file_mtime": 1.5,
        "seconds": 0.25,
    }
    assert row["caption"] == "a red circle." and row["id"] == 7
    (entity,) = row["entities"]
    assert entity["boxes_px"] == [to_pixels(entity["boxes"][0], 320, 200)]  # of the displayed size the unit learned
    assert entity["boxes_px"] != [to_pixels(entity["boxes"][0], 200, 320)]


def test_a_unit_that_failed_before_the_model_is_an_error_record_without_a_size():
    record = Ground().record(one(Ground()).failed("cannot read\nthe image"))
    assert (record.status, record.error) == ("error", "cannot read the image")  # one line
    assert (record.width, record.height, record.seconds, record.caption) == (None, None, None, None)
    assert (record.file_size, record.model, record.decoding, record.extra) == (10, "m", "greedy", {"id": 7})


def test_a_unit_the_model_could_not_take_keeps_its_size_but_no_seconds():
    unit = dataclasses.replace(one(Refer(["0,0,32,20"])), size=(320, 200)).failed("out of memory")
    record = Refer(["0,0,32,20"]).record(unit)
    assert (record.status, record.error, record.width, record.seconds) == ("error", "out of memory", 320, None)
    assert record.box_px == [0.0, 0.0, 32.0, 20.0]
    assert record.box_model_px == to_pixels(snap((0, 0, 0.1, 0.1)), 320, 200)  # as the model saw it
    assert record.description is None


def test_a_box_outside_its_image_fails_at_the_prompt_and_its_record_has_no_model_box():
    task = Refer(["0,0,400,20"])
    unit = dataclasses.replace(one(task), size=(320, 200))
    with pytest.raises(ValueError, match="outside the 320x200 image") as refused:
        task.prompt(unit)
    record = task.record(unit.failed(str(refused.value)))
    assert record.status == "error" and record.width == 320
    assert record.box_px == [0.0, 0.0, 400.0, 20.0] and record.box_model_px is None


def test_text_the_task_cannot_use_makes_an_error_record_with_what_the_facts_give(monkeypatch):
    task = Find(["a red circle"])

    def refuses(self, unit, text):
        if text is not None:
            raise ValueError("no markup")
        return {"phrase": unit.data[0]}

    monkeypatch.setattr(Find, "own_fields", refuses)
    record = task.record(answered(one(task), "junk"))
    assert (record.status, record.error) == ("error", "cannot read the model's output: no markup")
    assert (record.phrase, record.boxes, record.scores, record.seconds) == ("a red circle", [], None, 0.25)


def test_records_are_constructed_not_mutated_and_units_are_frozen():
    assert not hasattr(Record, "fail")
    with pytest.raises(dataclasses.FrozenInstanceError):
        one(Ground()).error = "x"  # type: ignore[misc]


def test_a_unit_pickles_small_and_without_the_images_bytes():
    unit = one(Ground(), Item("shard.tar#k1", {"id": 1}, data=b"\xff" * 100_000, stat=(100_000, 2.0)))
    sent = pickle.dumps(unit)
    assert len(sent) < 1000 and pickle.loads(sent) == unit


def test_answered_finishes_records_made_elsewhere_then_its_units_in_order():
    task = Ground()
    made = task.record(one(task).failed("on another rank"))
    units = [one(task, Item("b.png")).failed("unreadable"), answered(one(task, Item("c.png")), GROUNDED)]
    records = Answered(units, [made]).finish(task)
    assert [(r.path, r.status) for r in records] == [("a.png", "error"), ("b.png", "error"), ("c.png", "ok")]


@pytest.mark.parametrize(
    "recorded, kind",
    [
        (None, NEW),
        (Recorded(10, 1.5, "ok", "m", "<grounding> An image of", "greedy"), DONE),
        (Recorded(10, 1.5, "error", "m", "<grounding> An image of", "greedy"), FAILED),
        (Recorded(11, 1.5, "ok", "m", "<grounding> An image of", "greedy"), CHANGED),
        (Recorded(10, 1.5, "ok", "m", "<grounding> An image of", "beam"), OTHER),
        (Recorded(10, 1.5, "ok", "m", "<grounding> An image of", None), DONE),  # written before `decoding`
    ],
)
def test_resume_compares_the_units_settings_and_stat(recorded, kind):
    task = Ground()
    item = Item("a.png", stat=(10, 1.5))
    seen = {} if recorded is None else {one(task, item).key: recorded}
    ((_, standings),) = standing_units([item], task, "m", "greedy", seen)
    ((unit, standing),) = standings
    assert standing.kind == kind and (unit.model, unit.decoding, unit.stat) == ("m", "greedy", (10, 1.5))
    assert standing.settings == (frozenset({"decoding"}) if kind == OTHER else frozenset())


def test_two_rows_naming_one_phrase_are_one_unit():
    task = Find()
    rows = [Item("a.png", {"phrase": "a cup"}, stat=(1, 1.0)), Item("a.png", {"phrase": " <a  cup>"}, stat=(1, 1.0))]
    kinds = [s.kind for _, standings in standing_units(rows, task, "m", "greedy", {}) for _, s in standings]
    assert kinds == [NEW, TWICE]
