"""output/reader/files.py: what a results path is, its rows as each caller reads them, and the task of a file."""

from __future__ import annotations

import logging
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kosmos_cli import InputError, read_records
from kosmos_cli.output import reader
from kosmos_cli.output.formats import records_table
from kosmos_cli.output.store import Store
from kosmos_cli.tasks import Find, FindRecord, Ground
from tests.unit.test_reader import ground_row, write_jsonl


def damaged_parquet(path, rows=20000):
    """A Parquet file that opens (its footer is whole) but cannot be read past its middle."""
    table = pa.table({"path": [f"{i}.png" for i in range(rows)], "task": ["find"] * rows, "status": ["error"] * rows})
    pq.write_table(table, path, row_group_size=rows // 4)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 200] = b"\xff" * 200
    path.write_bytes(bytes(data))
    return str(path)


def test_a_results_path_is_a_jsonl_file_a_parquet_file_or_a_folder_of_parts(tmp_path):
    jsonl = write_jsonl(tmp_path / "r.jsonl", [ground_row()])
    pq.write_table(records_table([FindRecord(path="a.png")], Find), tmp_path / "r.data")  # told by its bytes
    parts = tmp_path / "r.jsonl.parts"
    parts.mkdir()
    for name in ("part-0000-00000001.parquet", "part-0000-00000000.parquet", "_hidden.parquet", "notes.txt"):
        pq.write_table(records_table([FindRecord(path=name)], Find), parts / name)
    assert reader.results_path(jsonl).kind == reader.JSONL
    assert reader.results_path(str(tmp_path / "r.data")).kind == reader.PARQUET
    folder = reader.results_path(str(parts))
    assert (folder.kind, folder.parts) == (reader.FOLDER, ("part-0000-00000000.parquet", "part-0000-00000001.parquet"))
    assert [row["path"] for _, row in reader.rows(folder)] == [
        "part-0000-00000000.parquet",
        "part-0000-00000001.parquet",
    ]


@pytest.mark.parametrize(
    ("say", "special", "no_parts"),
    [
        (reader.DRAW, "r.jsonl is not a regular file: results are read", "is a folder: pass the .jsonl or .parquet"),
        (reader.VIEW, "r.jsonl: not a regular file (a named pipe): pass", "is a folder without Parquet parts"),
    ],
)
def test_what_names_no_results_is_refused_in_one_line_in_its_callers_words(tmp_path, say, special, no_parts):
    os.mkfifo(tmp_path / "r.jsonl")  # nobody writes to it: reading it would wait forever
    with pytest.raises(InputError) as caught:
        reader.results_path(str(tmp_path / "r.jsonl"), say)
    assert special in str(caught.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as caught:
        reader.results_path(str(tmp_path / "empty"), say)
    assert no_parts in str(caught.value)
    with pytest.raises(InputError, match="results file not found"):
        reader.results_path(str(tmp_path / "gone.jsonl"), say)


def test_a_fifo_among_a_folders_parts_is_refused_not_waited_on(tmp_path):
    parts = tmp_path / "out"
    parts.mkdir()
    pq.write_table(records_table([FindRecord(path="a.png")], Find), parts / "a.parquet")
    os.mkfifo(parts / "b.parquet")
    with pytest.raises(InputError, match="b.parquet is not a regular file"):
        list(read_records(f"{parts}/"))


def test_read_records_refuses_a_fifo_and_text_that_is_not_utf8_in_one_line(tmp_path):
    os.mkfifo(tmp_path / "r.jsonl")
    with pytest.raises(InputError, match="is not a regular file"):
        list(read_records(str(tmp_path / "r.jsonl")))
    (tmp_path / "latin.jsonl").write_bytes(b'{"path": "caf\xe9.png"}\n')
    with pytest.raises(InputError, match="line 1 is not UTF-8 text: is it a results file of kosmos"):
        list(read_records(str(tmp_path / "latin.jsonl")))


def test_a_damaged_parquet_page_is_one_error_naming_the_file_and_the_row(tmp_path):
    path = damaged_parquet(tmp_path / "damaged.parquet")
    with pytest.raises(InputError, match=r"damaged.parquet cannot be read past row \d+ \(") as caught:
        list(read_records(path))
    assert "\n" not in str(caught.value)
    store = Store(path, "parquet", "find")
    with pytest.raises(InputError, match=r"damaged.parquet cannot .*: it is damaged; move it away or pass"):
        store.scan()


def test_a_resume_scan_reads_only_the_columns_it_asks_for_and_skips_damaged_lines(tmp_path, caplog):
    table = records_table([FindRecord(path="a.png", phrase="a dog", model="long text")], Find)
    pq.write_table(table, tmp_path / "r.parquet")
    (row,) = reader.resume_rows(str(tmp_path / "r.parquet"), ["path", "phrase", "nope"], jsonl=False)
    assert row == {"path": "a.png", "phrase": "a dog"}
    out = tmp_path / "r.jsonl"
    write_jsonl(out, [ground_row("a.png")])
    with open(out, "ab") as f:
        f.write(b'{"path": "caf\xe9.png"}\n{not json\n[1, 2]\n')
    write_jsonl(tmp_path / "b.jsonl", [ground_row("b.png")])
    with open(out, "ab") as f:
        f.write((tmp_path / "b.jsonl").read_bytes())
    with caplog.at_level(logging.WARNING, logger="kosmos_cli"):
        got = [r["path"] for r in reader.resume_rows(str(out), None, jsonl=True)]
    assert got == ["a.png", "b.png"]  # a line that is not UTF-8, not JSON, or no record: skipped
    assert [m for m in caplog.messages if "damaged" in m] == [
        f"{out} line 2 is damaged: ignored",
        f"{out} line 3 is damaged: ignored",
    ]
    assert list(reader.resume_rows(str(tmp_path / "gone.jsonl"), None, jsonl=True)) == []


def test_the_task_of_a_parquet_file_is_its_schemas_else_its_rows_else_its_columns(tmp_path):
    pq.write_table(records_table([FindRecord(path="a.png")], Find), tmp_path / "find.parquet")
    pq.write_table(pa.table({"path": ["a.png"], "task": ["ground"], "status": ["ok"]}), tmp_path / "rows.parquet")
    pq.write_table(pa.table({"path": ["a.png"], "task": ["draw"]}), tmp_path / "other.parquet")
    pq.write_table(pa.table({"name": ["x"]}), tmp_path / "foreign.parquet")

    def task_of(name):
        return reader.parquet_task(pq.ParquetFile(tmp_path / name), name)

    assert (task_of("find.parquet"), task_of("rows.parquet"), task_of("foreign.parquet")) == (Find, Ground, None)
    with pytest.raises(InputError, match="other.parquet holds records of task 'draw'"):
        task_of("other.parquet")


def test_every_reader_parses_a_line_alike():
    assert reader.loads(b'{"a": 1}') == {"a": 1}
    for line, why in [(b"\xff", reader.NOT_UTF8), ("{no", reader.NOT_JSON), ("[" * 100_000, reader.TOO_DEEP)]:
        with pytest.raises(ValueError, match=why):
            reader.loads(line)
