import dataclasses
import json
import os

import pyarrow.parquet as pq
import pytest

from kosmos_cli.errors import InputError, LockedError, OutputError, UsageError
from kosmos_cli.output.formats import JsonlSink, ParquetPartSink, detect_format, dumps, records_table
from kosmos_cli.output.reader import read_records
from kosmos_cli.output.store import Store
from kosmos_cli.tasks import Ground, GroundRecord
from kosmos_cli.tasks.records import Entity


def rec(path, caption="a cat", size=10, mtime=1.5, status="ok", **extra):
    r = GroundRecord(
        path=path,
        width=320,
        height=200,
        caption=caption,
        file_size=size,
        file_mtime=mtime,
        prompt="<grounding> An image of",
        model="m",
        extra=extra,
        entities=[Entity("a cat", 0, 5, [[0.1, 0.2, 0.5, 0.6]], [[32, 40, 160, 120]])],
    )
    if status != "ok":
        return dataclasses.replace(r, status="error", error="boom")
    return r


def key(store, path):
    """The key the store gives a record of `path` (canonical: Task.key)."""
    return Ground.key({"path": path}, store.folder())


@pytest.mark.parametrize(
    "path, fmt, want",
    [
        ("r.jsonl", None, "jsonl"),
        ("r.PARQUET", None, "parquet"),
        ("-", None, "jsonl"),
        ("r.out", "parquet", "parquet"),
    ],
)
def test_detect_format(path, fmt, want):
    assert detect_format(path, fmt) == want


@pytest.mark.parametrize(
    "path, fmt, message",
    [
        ("r.txt", None, "cannot tell the output format"),
        ("r.jsonl", "csv", "unknown format"),
        ("-", "parquet", "JSONL only"),
    ],
)
def test_detect_format_errors(path, fmt, message):
    with pytest.raises(UsageError, match=message):
        detect_format(path, fmt)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_written_records_read_back_with_the_same_keys(tmp_path, fmt):
    out = str(tmp_path / f"r.{fmt}")
    store = Store(out, fmt, "ground")
    sink = store.sink()
    sink.write([rec("a.jpg", label="x"), rec("b.jpg", label="y")])
    sink.write([rec("c.jpg", status="error")])
    sink.close()
    store.compact()
    rows = list(read_records(out))
    assert [r["path"] for r in rows] == ["a.jpg", "b.jpg", "c.jpg"]
    assert rows[0] == rec("a.jpg", label="x").to_dict()
    assert rows[2]["status"] == "error" and rows[2]["error"] == "boom"
    assert not os.path.exists(out + ".parts")


def test_parquet_is_typed_and_nested(tmp_path):
    out = str(tmp_path / "r.parquet")
    store = Store(out, "parquet", "ground")
    store.sink().write([rec("a.jpg", label="x")])
    store.compact()
    schema = pq.read_schema(out)
    assert str(schema.field("width").type) == "int32"
    assert str(schema.field("entities").type).startswith("list<element: struct<phrase: string")
    table = pq.read_table(out)
    assert table.column("entities")[0].as_py()[0]["boxes_px"] == [[32, 40, 160, 120]]


def test_parquet_parts_from_different_manifests_unify(tmp_path):
    out = str(tmp_path / "r.parquet")
    store = Store(out, "parquet", "ground")
    sink = store.sink(direct=False)
    sink.write([rec("a.jpg", label="x")])
    sink.write([rec("b.jpg", score=0.5)])
    sink.write([rec("c.jpg")])
    store.compact()
    rows = {r["path"]: r for r in read_records(out)}
    assert rows["a.jpg"]["label"] == "x" and rows["a.jpg"]["score"] is None and rows["b.jpg"]["score"] == 0.5


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_last_record_of_a_key_wins(tmp_path, fmt):
    out = str(tmp_path / f"r.{fmt}")
    store = Store(out, fmt, "ground")
    store.sink().write([rec("a.jpg", caption="old"), rec("b.jpg")])
    store.compact()
    store.sink().write([rec("a.jpg", caption="new", size=11)])
    assert store.scan().seen[key(store, "a.jpg")].file_size == 11
    assert store.needs_compaction()
    store.compact()
    rows = list(read_records(out))
    assert sorted((r["path"], r["caption"]) for r in rows) == [("a.jpg", "new"), ("b.jpg", "a cat")]


def test_compact_keep_drops_keys(tmp_path):
    out = str(tmp_path / "r.jsonl")
    store = Store(out, "jsonl", "ground")
    store.sink().write([rec("a.jpg"), rec("b.jpg")])
    store.compact(keep=lambda k: k == key(store, "b.jpg"))
    assert [r["path"] for r in read_records(out)] == ["b.jpg"]


def test_torn_last_jsonl_line_is_repaired_not_appended_after(tmp_path):
    out = tmp_path / "r.jsonl"
    good = json.dumps(rec("a.jpg").to_dict())
    out.write_text(good + "\n" + good[: len(good) // 2])
    store = Store(str(out), "jsonl", "ground")
    assert list(store.scan().seen) == [key(store, "a.jpg")]
    sink = store.sink()
    sink.write([rec("b.jpg")])
    sink.close()
    assert [r["path"] for r in read_records(str(out))] == ["a.jpg", "b.jpg"]


def test_half_written_parquet_part_is_removed(tmp_path):
    out = str(tmp_path / "r.parquet")
    store = Store(out, "parquet", "ground")
    store.sink().write([rec("a.jpg")])
    parts = tmp_path / "r.parquet.parts"
    (parts / "part-0000-00000007.parquet.tmp").write_bytes(b"PAR1 half")
    (parts / "part-0000-00000008.parquet").write_bytes(b"garbage")
    assert list(store.scan().seen) == [key(store, "a.jpg")]  # a reader skips them and touches nothing
    assert len(os.listdir(parts)) == 3
    store.repair()  # the lock holder clears them
    assert sorted(os.listdir(parts)) == ["part-0000-00000000.parquet"]


def test_an_unreadable_output_is_not_overwritten_silently(tmp_path):
    out = tmp_path / "r.parquet"
    out.write_bytes(b"not parquet")
    with pytest.raises(OutputError, match="not a readable Parquet file"):
        Store(str(out), "parquet", "ground").scan()
    assert out.read_bytes() == b"not parquet"


def test_read_records_refuses_files_that_are_not_ours(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"a": 1}\n')
    with pytest.raises(InputError, match="no 'path'"):
        list(read_records(str(bad)))
    with pytest.raises(InputError, match="not found"):
        list(read_records(str(tmp_path / "missing.jsonl")))


def test_lock_is_exclusive_and_released_with_the_holder(tmp_path):
    out = str(tmp_path / "r.jsonl")
    first = Store(out, "jsonl", "ground")
    first.lock()
    with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
        Store(out, "jsonl", "ground").lock()
    first.unlock()
    second = Store(out, "jsonl", "ground")
    second.lock()
    second.unlock()


def test_a_jsonl_batch_that_cannot_be_written_whole_is_cut_off_again(tmp_path, monkeypatch):
    import errno

    import kosmos_cli.output.formats as writers

    out = tmp_path / "r.jsonl"
    sink = JsonlSink(str(out))
    sink.write([rec("a.jpg")])
    before = out.read_bytes()
    real = os.write

    def half_then_full(fd, data):  # the disk fills in the middle of the batch
        if len(data) > 100:
            return real(fd, bytes(data[:100]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writers.os, "write", half_then_full)
    with pytest.raises(OutputError, match="no space left writing"):
        sink.write([rec("b.jpg"), rec("c.jpg")])
    monkeypatch.undo()
    sink.close()
    assert out.read_bytes() == before


def test_parquet_parts_continue_the_numbering_of_a_killed_run(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    ParquetPartSink(str(folder), Ground, 3).write([rec("a.jpg")])
    ParquetPartSink(str(folder), Ground, 3).write([rec("b.jpg")])
    ParquetPartSink(str(folder), Ground, 4).write([rec("c.jpg")])
    assert sorted(os.listdir(folder)) == [
        "part-0003-00000000.parquet",
        "part-0003-00000001.parquet",
        "part-0004-00000000.parquet",
    ]


def test_records_table_types_carried_columns_and_keeps_the_task_schema_first(tmp_path):
    table = records_table([rec("a.jpg", label="x", n=1), rec("b.jpg", label=None, n=2)], Ground)
    assert table.schema.names == [*Ground.schema().names, "label", "n"]
    assert (str(table.schema.field("label").type), str(table.schema.field("n").type)) == ("string", "int64")


def test_dumps_writes_one_line_of_plain_json():
    line = dumps({"path": "a\nb.jpg", "x": float("nan"), "y": [float("inf")], "z": "é"})
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {"path": "a\nb.jpg", "x": None, "y": [None], "z": "é"}


def _records_of_every_kind():
    import datetime
    import math

    from kosmos_cli.tasks.find import FindRecord
    from kosmos_cli.tasks.refer import ReferRecord

    box = [[0.1, 0.2, 0.3, 0.4]]
    entity = Entity("a cat", 2, 7, box, [[1, 2, 3, 4]], [0.5])
    yield GroundRecord(path="p.png", width=4, height=4, caption="a cat", entities=[entity], seconds=0.25)
    yield GroundRecord(path="caf\udce9.png", caption="a \ud800 cat")  # not UTF-8: recorded as \xe9 and \ud800
    yield GroundRecord(path="p.png", entities=[Entity("a", 0, 1, box, [[1, 2, 3, 4]], [math.nan])])  # NaN: null
    yield GroundRecord(path="p.png", status="error", error="cannot read the image")
    yield FindRecord(path="p.png", phrase="a cat", boxes=box, boxes_px=[[1, 2, 3, 4]], scores=[0.5])
    yield ReferRecord(path="p.png", box_px=[1.0, 2.0, 3.0, 4.0], description="a cat")
    for carried in (
        {"label": "x", "n": 3, "w": 0.5, "ok": True, "none": None},
        {"w": math.inf},
        {"when": datetime.date(2026, 12, 8)},  # not JSON: its str
        {"tags": ["a", "b"], "nested": {True: 1, None: 2, 3: [math.nan]}},  # keys JSON would spell otherwise
        {"status": "carried", "name": "caf\udce9"},
    ):
        yield GroundRecord(path="p.png", caption="c", extra=carried)


@pytest.mark.parametrize("record", list(_records_of_every_kind()), ids=lambda r: f"{r.task}-{sorted(r.extra)}")
def test_the_quick_json_line_is_dumps_text_exactly(record):
    from kosmos_cli.output.formats import record_line

    assert record_line(record) == dumps(record.to_dict())
    json.loads(record_line(record))
