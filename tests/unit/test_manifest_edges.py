"""Manifests as users have them: byte-order marks, huge or unclosed CSV fields, deep JSON, colliding and extra
columns. Each row is processed or named in one line; no carried column is lost."""

import io
import json
import logging
import os

import pyarrow.parquet as pq
import pytest

from kosmos_cli.errors import InputError
from kosmos_cli.inputs.listing import Unlisted
from kosmos_cli.inputs.sources import iter_items
from kosmos_cli.output.reader import read_records
from kosmos_cli.output.store import Store
from kosmos_cli.tasks import GroundRecord
from kosmos_cli.tasks.records import carried_name


def items_of(path, **kw):
    return list(iter_items([str(path)], **kw))


@pytest.mark.parametrize(
    "name, text",
    [
        ("m.txt", "a.png\nb.png\n"),
        ("m.jsonl", '{"path": "a.png", "k": 1}\n{"path": "b.png"}\n'),
        ("m.csv", "path,k\na.png,1\nb.png,\n"),
    ],
)
def test_a_byte_order_mark_does_not_break_the_first_row(tmp_path, name, text):
    manifest = tmp_path / name
    manifest.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert [os.path.basename(i.path) for i in items_of(manifest)] == ["a.png", "b.png"]


def test_a_byte_order_mark_on_stdin():
    assert [i.path for i in iter_items(["-"], stdin=io.StringIO("\ufeffa.png\nb.png\n"))] == ["a.png", "b.png"]


def test_a_csv_field_over_the_limit_names_its_line(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,note\na.png,short\nb.png," + "x" * 140_000 + "\nc.png,short\n")
    with pytest.raises(InputError, match=r"m\.csv line 3: field larger than field limit"):
        items_of(manifest)


def test_an_unclosed_quote_names_the_line_where_its_row_starts(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text('path,note\na.png,ok\nb.png,"never closed\n' + "c.png,x\n" * 20_000)
    with pytest.raises(InputError, match=r"line 3: .*quotes"):
        items_of(manifest)


@pytest.mark.parametrize("end", ["\n", ""])
def test_a_quote_the_file_ends_inside_is_a_broken_manifest_naming_its_line(tmp_path, end):
    """`"b.png` never closed: the csv module would read the rest of the file as one odd path."""
    manifest = tmp_path / "m.csv"
    manifest.write_text('path,note\na.png,ok\n"b.png,x\nc.png,y' + end)
    with pytest.raises(InputError, match=r"m\.csv line 3: .*quote"):
        items_of(manifest)


def test_a_quoted_field_over_several_lines_is_read(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text('path,note\na.png,"two\nlines"\nb.png,x\n')
    assert [i.extra["note"] for i in items_of(manifest)] == ["two\nlines", "x"]


def test_rows_skipped_are_counted_for_the_caller_and_warned(tmp_path, caplog):
    """What a pass did not read (a line that is not JSON, a row with no path) is counted in `unseen`: the caller
    then knows it did not see every input."""
    jsonl, csv = tmp_path / "m.jsonl", tmp_path / "m.csv"
    jsonl.write_text('{"path": "a.png"}\nnot json\n{"nopath": 1}\n{"path": "b.png"}\n')
    csv.write_text("path,label\nc.png,x\n,orphan label\n,\nd.png,y\n")
    unseen = Unlisted()
    found = list(iter_items([str(jsonl), str(csv)], unseen=unseen))
    assert [os.path.basename(i.path) for i in found] == ["a.png", "b.png", "c.png", "d.png"]
    assert (unseen.skipped, unseen.first_skipped) == (3, f"{jsonl} line 2")
    assert 'm.csv line 3 has no "path": skipped' in caplog.text  # a row of empty fields is a blank line
    assert "m.csv line 4" not in caplog.text
    assert bool(unseen) and not Unlisted()


def test_deeply_nested_json_is_a_warning_naming_the_line_not_a_traceback(tmp_path, caplog):
    manifest = tmp_path / "m.jsonl"
    deep, deeper = "[" * 150 + "]" * 150, "[" * 100_000 + "]" * 100_000
    manifest.write_text(
        f'{{"path": "a.png", "x": {deep}}}\n{{"path": "b.png", "x": {deeper}}}\n{{"path": "c.png", "x": [[1]]}}\n'
    )
    with caplog.at_level(logging.WARNING, logger="kosmos_cli"):
        got = items_of(manifest)
    assert [os.path.basename(i.path) for i in got] == ["c.png"]
    assert "line 1 nests more than 100 levels" in caplog.text and "line 2 nests" in caplog.text


@pytest.mark.parametrize(
    "column, want",
    [
        ("label", "label"),
        ("width", "input_width"),
        ("status", "input_status"),
        ("task", "input_task"),
        ("input_status", "input_input_status"),
        ("input_input_status", "input_input_input_status"),
        ("input_label", "input_label"),
        ("input_", "input_"),
    ],
)
def test_carried_names(column, want):
    assert carried_name(column) == want


def test_status_and_input_status_are_both_kept(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,status,input_status\na.png,new,old\n")
    (item,) = items_of(manifest)
    row = GroundRecord(path=item.path, extra=item.extra).to_dict()
    assert (row["status"], row["input_status"], row["input_input_status"]) == ("ok", "new", "old")
    out = str(tmp_path / "r.parquet")
    store = Store(out, "parquet", "ground")
    store.sink().write([GroundRecord(path=item.path, extra=item.extra)])
    store.compact()
    (back,) = read_records(out)
    assert (back["input_status"], back["input_input_status"]) == ("new", "old")


def test_ragged_csv_rows_keep_their_extra_fields_and_repeated_headers_their_values(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,a,a,_extra\nx.png,1,2,e\ny.png,3,4,e,more,and more\nz.png,5\n")
    got = {os.path.basename(i.path): i.extra for i in items_of(manifest)}
    assert got["x.png"] == {"a": "1", "a_2": "2", "_extra": "e"}
    assert got["y.png"] == {"a": "3", "a_2": "4", "_extra": "e", "_extra_2": ["more", "and more"]}
    assert got["z.png"] == {"a": "5", "a_2": None, "_extra": None}
    out = str(tmp_path / "r.parquet")
    store = Store(out, "parquet", "ground")
    store.sink().write([GroundRecord(path=p, extra=e) for p, e in got.items()])
    store.compact()
    assert {r["path"]: r["_extra_2"] for r in read_records(out)} == {
        "x.png": None,
        "y.png": ["more", "and more"],
        "z.png": None,
    }
    assert "_extra_2" in pq.read_schema(out).names


def test_unique_names():
    from kosmos_cli.inputs.sources import unique_names

    assert unique_names(["a", "a", "a_2", "b", "a"]) == ["a", "a_3", "a_2", "b", "a_4"]


def test_a_jsonl_manifest_with_colliding_keys_in_different_rows_keeps_each_in_its_own_column(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"path": "a.png", "status": 1, "input_status": 2})
        + "\n"
        + json.dumps({"path": "b.png", "status": 3})
        + "\n"
    )
    rows = [GroundRecord(path=i.path, extra=i.extra).to_dict() for i in items_of(manifest)]
    assert [(r["input_status"], r.get("input_input_status")) for r in rows] == [(1, 2), (3, None)]
