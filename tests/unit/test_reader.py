"""output/reader.py: the one reader of results files that draw, export and view share; typed results, no model."""

import json

import pyarrow.parquet as pq
import pytest

from kosmos_cli import InputError
from kosmos_cli.output.formats import records_table
from kosmos_cli.output.reader import Bad, Region, Result, read
from kosmos_cli.tasks import Find, FindRecord, GroundRecord, ReferRecord
from kosmos_cli.tasks.records import Entity

CAT = [150, 20, 190, 95]


def ground_row(path="a.png", **fields):
    record = GroundRecord(
        path=path,
        width=200,
        height=100,
        caption="a dog and a cat",
        entities=[
            Entity("a dog", 0, 5, [[0.05, 0.1, 0.45, 0.9]], [[10, 10, 90, 90]], [0.9]),
            Entity("a cat", 10, 15, [[0.5, 0.2, 0.7, 0.6], [0.75, 0.2, 0.95, 0.95]], [[100, 20, 140, 60], CAT]),
        ],
    ).to_dict()
    record.update(fields)
    return record


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_each_task_reads_into_typed_results(tmp_path):
    rows = [
        ground_row(),
        ReferRecord(path="b.png", width=10, height=10, box_px=[1.0, 2.0, 8.0, 9.0], description="a box").to_dict(),
        FindRecord(path="c.png", width=10, height=10, phrase="a dot", boxes_px=[[1, 1, 4, 4]], scores=[0.5]).to_dict(),
        GroundRecord(path="d.png", status="error", error="file not found").to_dict(),
    ]
    got = list(read(write_jsonl(tmp_path / "r.jsonl", rows)))
    assert all(isinstance(r, Result) for r in got)
    assert [(r.task, r.path, r.status, r.ok) for r in got] == [
        ("ground", "a.png", "ok", True),
        ("refer", "b.png", "ok", True),
        ("find", "c.png", "ok", True),
        ("ground", "d.png", "error", False),
    ]
    assert got[0].regions == (
        Region("a dog", ((10, 10, 90, 90),), (0.9,)),
        Region("a cat", ((100, 20, 140, 60), (150, 20, 190, 95)), (None, None)),  # no scores: None for each box
    )
    assert got[1].regions == (Region("a box", ((1.0, 2.0, 8.0, 9.0),), (None,)),)
    assert got[2].regions == (Region("a dot", ((1, 1, 4, 4),), (0.5,)),)
    assert (got[0].width, got[0].height, got[3].error) == (200, 100, "file not found")


def test_parquet_reads_the_same_results_as_jsonl(tmp_path):
    rows = [FindRecord(path=f"{i}.png", width=8, height=8, phrase="x", boxes_px=[[0, 0, i, i]]) for i in range(1, 4)]
    pq.write_table(records_table(rows, Find), tmp_path / "r.parquet")
    jsonl = write_jsonl(tmp_path / "r.jsonl", [r.to_dict() for r in rows])
    assert list(read(str(tmp_path / "r.parquet"))) == list(read(jsonl))


def test_a_junk_line_after_the_first_record_is_skipped_and_named(tmp_path):
    good = ground_row()
    path = write_jsonl(tmp_path / "r.jsonl", [good, "not json {", '{"path": "x.png"}', "", "[1, 2]", good])
    got = list(read(path))
    assert [type(r) for r in got] == [Result, Bad, Bad, Bad, Result]
    assert [(b.where, b.why) for b in got if isinstance(b, Bad)] == [
        ("line 2", "not JSON"),
        ("line 3", "not a kosmos record: no status, caption, box_px or phrase"),
        ("line 5", "not a kosmos record: no status, caption, box_px or phrase"),
    ]
    assert got[1].message(path) == f"{path} line 2 skipped: not JSON"


@pytest.mark.parametrize(
    "first, message",
    [
        ("not json", "line 1 is not JSON"),
        ('{"path": "a.png", "phrase": "a dog"}', "line 1 is not a kosmos record"),
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "is not a results file of kosmos (line 1 is not UTF-8 text)"),
    ],
)
def test_a_file_whose_first_row_is_not_a_record_is_not_a_results_file(tmp_path, first, message):
    path = tmp_path / "r.jsonl"
    first = first if isinstance(first, bytes) else first.encode()
    path.write_bytes(first + b"\n" + json.dumps(ground_row()).encode())
    with pytest.raises(InputError, match="is not a results file of kosmos") as caught:
        list(read(str(path)))
    assert message in str(caught.value)


def edited(entities=None, **fields):
    """A ground record of a.png as edited by hand or written by another tool: `entities` and fields replaced."""
    row = ground_row()
    if entities is not None:
        row["entities"] = entities
    row.update(fields)
    return row


def dog(boxes, **fields):
    return [{"phrase": "a dog", "start": 0, "end": 5, "boxes_px": boxes, **fields}]


BAD_RECORDS = {
    "nan": (edited(dog([[float("nan"), 4, 30, 30]])), "a box is not 4 finite numbers: [nan, 4, 30, 30]"),
    "inf": (edited(dog([[4, 4, float("inf"), 30]])), "a box is not 4 finite numbers: [4, 4, inf, 30]"),
    "three numbers": (edited(dog([[4, 4, 30]])), "a box is not 4 finite numbers: [4, 4, 30]"),
    "strings": (edited(dog([["4", "4", "30", "30"]])), "a box is not 4 finite numbers: ['4', '4', '30', '30']"),
    "a box not a list": (edited(dog([7])), "its caption, entities are not as kosmos ground writes them"),
    "entities not a list": (edited({"phrase": "a dog"}), "entities is not a list"),
    "entities of text": (edited(["a dog"]), "its caption, entities are not as kosmos ground writes them"),
    "string width": (edited(width="200"), "width is not a whole number above 0: '200'"),
    "zero height": (edited(height=0), "height is not a whole number above 0: 0"),
    "no size": (edited(width=None), "an ok record without its width and height"),
    "string score": (edited(dog([[4, 4, 30, 30]], scores=["high"])), "a score is not a number: 'high'"),
    "nan score": (edited(dog([[4, 4, 30, 30]], scores=[float("nan")])), "a score is not a number: nan"),
    "phrase not text": (edited([{"phrase": 5, "boxes_px": [[4, 4, 30, 30]]}]), "a label is not text: 5"),
    "status not text": (edited(status=1), "its status is not text: 1"),
}


@pytest.mark.parametrize("name", BAD_RECORDS)
def test_a_record_that_cannot_be_used_is_bad_and_says_why(tmp_path, name):
    row, why = BAD_RECORDS[name]
    got = list(read(write_jsonl(tmp_path / "r.jsonl", [row, ground_row(), row])))
    assert [type(r) for r in got] == [Bad, Result, Bad]  # the first row too: it is a record, only not usable
    assert (got[0].where, got[0].why, got[2].where) == ("line 1", why, "line 3")


def test_text_that_is_not_valid_unicode_is_read_in_its_recorded_form(tmp_path):
    row = edited(dog([[4, 4, 30, 30]]), caption="a dog\ud800", model="m\udce9")
    row["entities"][0]["phrase"] = "a \ud800 dog"
    (result,) = read(write_jsonl(tmp_path / "r.jsonl", [row]))
    assert result.regions[0].label == "a \\ud800 dog" and result.model == "m\\xe9"
    assert result.row["caption"] == "a dog\\ud800"  # what the gallery writes is valid UTF-8 too


def test_a_folder_is_not_a_results_file(tmp_path):
    with pytest.raises(InputError, match=f"{tmp_path} is a folder: pass the .jsonl or .parquet file"):
        list(read(str(tmp_path)))
