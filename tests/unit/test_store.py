"""The store (output/store.py and its rooms: ownership.py, locking.py, compaction.py) on records made by hand: no model.

Each test opens an output the way a run does (`with store.open(crew) as output`) or calls one step of its life, and
reads the files back.
"""

import dataclasses
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kosmos_cli.errors import LockedError, OutputError, UsageError
from kosmos_cli.output.reader import read_records
from kosmos_cli.output.store import Recorded, Store, present_only
from kosmos_cli.run.ranks import Solo
from kosmos_cli.tasks import FindRecord, Ground, GroundRecord, ReferRecord
from kosmos_cli.tasks.records import Entity
from tests.helpers import HERE

FORMATS = ["jsonl", "parquet"]


def rec(path, caption="a cat", status="ok", size=10, **extra):
    r = GroundRecord(
        path=path,
        width=32,
        height=32,
        caption=caption,
        entities=[Entity("a cat", 0, 5, [[0.1, 0.2, 0.5, 0.6]], [[3, 6, 16, 19]])],
        prompt="<grounding> An image of",
        model="m",
        decoding="greedy",
        file_size=size,
        file_mtime=1.5,
        extra=extra,
    )
    return dataclasses.replace(r, status="error", error="boom") if status != "ok" else r


def key(out, path):
    return Ground.key({"path": path}, os.path.dirname(os.path.abspath(out)))


def rows(out):
    return list(read_records(str(out)))


def captions(out):
    return sorted((r["path"], r["caption"]) for r in rows(out))


def written(out, fmt, *records):
    """An output holding `records`, written as a run writes it."""
    with Store(str(out), fmt, "ground").open(Solo()) as output:
        output.write(list(records))
    return str(out)


class Main(Solo):
    """The main process of several: it writes parts, and compacts once `merged`."""

    solo = False

    def __init__(self, merged=True, rank=0):
        super().__init__(rank)
        self.merged, self.main = merged, rank == 0


# -- writing and reading back -------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_run_writes_its_records_and_leaves_only_the_output(tmp_path, fmt):
    out = written(tmp_path / f"r.{fmt}", fmt, rec("a.png", label="x"), rec("b.png", status="error"))
    got = rows(out)
    assert got[0] == rec("a.png", label="x").to_dict()
    assert (got[1]["status"], got[1]["error"]) == ("error", "boom")
    assert os.listdir(tmp_path) == [f"r.{fmt}"]  # no lock, no parts: only what was asked for


@pytest.mark.parametrize("fmt", FORMATS)
def test_what_is_recorded_is_seen_by_the_next_run(tmp_path, fmt):
    out = written(tmp_path / f"r.{fmt}", fmt, rec("a.png", size=7))
    with Store(out, fmt, "ground").open(Solo()) as output:
        assert output.seen == {key(out, "a.png"): Recorded(7, 1.5, "ok", "m", "<grounding> An image of", "greedy")}


def test_parquet_output_has_the_tasks_schema_and_names_it(tmp_path):
    out = written(tmp_path / "r.parquet", "parquet", rec("a.png", label="x"))
    schema = pq.read_schema(out)
    assert schema.names == [*Ground.schema().names, "label"]
    assert schema.metadata[b"kosmos_cli.task"] == b"ground"


@pytest.mark.parametrize("fmt", FORMATS)
def test_several_processes_write_parts_that_the_main_one_folds_in(tmp_path, fmt):
    out = str(tmp_path / f"r.{fmt}")
    other = Store(out, fmt, "ground", rank=1)
    with other.open(Main(rank=1)) as output:
        output.write([rec("b.png")])
    assert os.listdir(out + ".parts")  # rank 1 never compacts
    with Store(out, fmt, "ground").open(Main()) as output:
        output.write([rec("a.png")])
    assert captions(out) == [("a.png", "a cat"), ("b.png", "a cat")]
    assert not os.path.exists(out + ".parts")


# -- replaced records, duplicates, errors ---------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_record_written_again_replaces_the_older_one(tmp_path, fmt):
    out = written(tmp_path / f"r.{fmt}", fmt, rec("a.png", caption="old"), rec("b.png"))
    with Store(out, fmt, "ground").open(Solo()) as output:
        output.write([rec("a.png", caption="new")])
        assert output.replaced == 1
    assert captions(out) == [("a.png", "new"), ("b.png", "a cat")]


def test_an_output_holding_a_key_twice_is_compacted_when_opened(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text("".join(json.dumps(rec("a.png", caption=c).to_dict()) + "\n" for c in ("first", "second")))
    with Store(str(out), "jsonl", "ground").open(Solo()) as output:
        assert output.seen[key(out, "a.png")].status == "ok"
        assert len(out.read_text().splitlines()) == 1
    assert captions(out) == [("a.png", "second")]


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_error_never_replaces_an_ok_record(tmp_path, fmt):
    out = written(tmp_path / f"r.{fmt}", fmt, rec("a.png"))
    with Store(out, fmt, "ground").open(Solo()) as output:
        assert output.write([rec("a.png", status="error"), rec("b.png", status="error")]) != []
        assert (output.kept, output.kept_first) == (1, "a.png: boom")
    assert sorted((r["path"], r["status"]) for r in rows(out)) == [("a.png", "ok"), ("b.png", "error")]


# -- --prune ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_complete_pass_prunes_what_it_did_not_see(tmp_path, fmt):
    out = written(tmp_path / f"r.{fmt}", fmt, rec("a.png"), rec("b.png"), rec("c.png"))
    with Store(out, fmt, "ground").open(Solo()) as output:
        output.complete({key(out, "a.png"), key(out, "c.png")})
    assert [r["path"] for r in rows(out)] == ["a.png", "c.png"]


def test_a_pass_that_is_not_complete_prunes_nothing(tmp_path):
    out = written(tmp_path / "r.jsonl", "jsonl", rec("a.png"), rec("b.png"))
    with Store(out, "jsonl", "ground").open(Solo()) as output:
        output.write([rec("c.png")])
    assert [r["path"] for r in rows(out)] == ["a.png", "b.png", "c.png"]


def test_the_prune_keep_function_takes_the_image_of_a_key():
    keep = present_only({"/p/a.png", "/p/x\x00y.png"})
    assert keep("/p/a.png") and keep('/p/a.png\x00"a cat"')  # find: the image's key, then the phrase
    assert keep("/p/x\x00y.png") and keep('/p/x\x00y.png\x00"a cat"')  # a NUL in the path itself
    assert not keep("/p/b.png") and not keep('/p/b.png\x00"a cat"') and not keep("/p/a")


# -- --overwrite ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_overwrite_starts_afresh(tmp_path, fmt):
    out = written(tmp_path / f"r.{fmt}", fmt, rec("a.png"), rec("b.png"))
    with Store(out, fmt, "ground").open(Solo(), overwrite=True) as output:
        assert output.seen == {}
        output.write([rec("c.png")])
    assert [r["path"] for r in rows(out)] == ["c.png"]


def test_overwrite_replaces_another_tasks_output(tmp_path):
    out = str(tmp_path / "r.jsonl")
    with Store(out, "jsonl", "find").open(Solo()) as output:
        output.write([FindRecord(path="a.png", phrase="a cat", boxes=[], boxes_px=[])])
    with pytest.raises(UsageError, match="holds kosmos find records: a ground run would mix its own in"):
        Store(out, "jsonl", "ground").check()
    written_again = Store(out, "jsonl", "ground")
    with written_again.open(Solo(), overwrite=True) as output:
        output.write([rec("b.png")])
    assert [(r["task"], r["path"]) for r in rows(out)] == [("ground", "b.png")]


# -- the lock ---------------------------------------------------------------------------------------------------
def test_a_second_run_on_a_locked_output_is_refused_with_exit_75(tmp_path):
    out = str(tmp_path / "r.jsonl")
    with Store(out, "jsonl", "ground").open(Solo()) as output:
        output.write([rec("a.png")])
        second = Store(out, "jsonl", "ground")
        with pytest.raises(LockedError) as refused:
            second.probe()
        assert refused.value.exit_code == 75
        assert str(refused.value) == (
            f"another kosmos run (pid {os.getpid()}) is writing {out}: let it finish, or pass --wait to wait for it"
        )
        with pytest.raises(LockedError), second.open(Solo()):
            pass
    assert [r["path"] for r in rows(out)] == ["a.png"]  # the refused run changed nothing
    with Store(out, "jsonl", "ground").open(Solo()):  # let go of when the run ends
        pass


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, OutputError])
def test_the_lock_is_let_go_of_and_removed_after_an_error(tmp_path, error):
    out = str(tmp_path / "r.jsonl")
    with pytest.raises(error), Store(out, "jsonl", "ground").open(Solo()) as output:
        output.write([rec("a.png")])
        raise error("stop")
    assert not os.path.exists(out + ".lock")
    Store(out, "jsonl", "ground").probe()


def test_a_lock_file_left_by_a_killed_run_is_taken_and_removed(tmp_path):
    out = tmp_path / "r.jsonl"
    (tmp_path / "r.jsonl.lock").write_text("4242\n")  # kill -9 leaves the file; the kernel dropped the lock
    written(out, "jsonl", rec("a.png"))
    assert os.listdir(tmp_path) == ["r.jsonl"]


def test_a_run_that_waited_on_the_lock_holds_it_alone(tmp_path, monkeypatch):
    """The holder removes the lock file as it lets go. A run that was waiting on that file must not take it for
    the lock: a third run would make a new file and lock that, and two runs would write at once."""
    import fcntl

    out = str(tmp_path / "r.jsonl")
    first = Store(out, "jsonl", "ground")
    first.lock()
    real, waited = fcntl.flock, []

    def flock(fd, operation):
        if not waited:  # the waiter has opened the lock file and waits on it: the first run ends now
            waited.append(fd)
            first.unlock()
        return real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    waiter = Store(out, "jsonl", "ground")
    waiter.lock(wait=True)
    monkeypatch.undo()
    try:
        assert waited and os.path.exists(out + ".lock")
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            Store(out, "jsonl", "ground").lock()
    finally:
        waiter.unlock()
    assert not os.path.exists(out + ".lock")


def test_probe_creates_nothing(tmp_path):
    Store(str(tmp_path / "new" / "r.jsonl"), "jsonl", "ground").probe()
    assert os.listdir(tmp_path) == []


def test_probe_refuses_a_file_where_the_folder_must_be(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="Not a directory"):
        Store(str(tmp_path / "file" / "r.jsonl"), "jsonl", "ground").probe()


# -- what a crash leaves ----------------------------------------------------------------------------------------
def test_a_torn_last_jsonl_line_is_cut_and_the_run_goes_on_after_it(tmp_path):
    out = tmp_path / "r.jsonl"
    line = json.dumps(rec("a.png").to_dict())
    out.write_text(line + "\n" + line.replace("a.png", "b.png")[:50])
    with Store(str(out), "jsonl", "ground").open(Solo()) as output:
        assert list(output.seen) == [key(out, "a.png")]
        output.write([rec("c.png")])
    assert [r["path"] for r in rows(out)] == ["a.png", "c.png"]


def test_parts_of_a_killed_run_are_folded_in_and_unfinished_ones_dropped(tmp_path):
    out = str(tmp_path / "r.parquet")
    with pytest.raises(KeyboardInterrupt), Store(out, "parquet", "ground").open(Main(merged=False)) as output:
        output.write([rec("a.png")])
        raise KeyboardInterrupt  # killed before every process was done: nothing folded in
    parts = tmp_path / "r.parquet.parts"
    (parts / "part-0001-00000000.parquet.77.tmp").write_bytes(b"PAR1 half")
    (parts / "part-0001-00000001.parquet").write_bytes(b"not parquet")
    with Store(out, "parquet", "ground").open(Solo()) as output:
        assert list(output.seen) == [key(out, "a.png")]
        assert [r["path"] for r in rows(out)] == ["a.png"]  # folded in when opened
        assert os.listdir(parts) == []  # the damaged and unfinished parts removed
        output.write([rec("b.png")])
    assert [r["path"] for r in rows(out)] == ["a.png", "b.png"] and not parts.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_ctrl_c_keeps_what_is_done(tmp_path, fmt):
    out = str(tmp_path / f"r.{fmt}")
    with pytest.raises(KeyboardInterrupt), Store(out, fmt, "ground").open(Solo()) as output:
        output.write([rec("a.png")])
        raise KeyboardInterrupt
    assert [r["path"] for r in rows(out)] == ["a.png"]
    assert not os.path.exists(out + ".parts")


def test_a_failed_write_leaves_the_parts_for_the_next_run(tmp_path):
    out = str(tmp_path / "r.parquet")
    with pytest.raises(OutputError), Store(out, "parquet", "ground").open(Solo()) as output:
        output.write([rec("a.png")])
        raise OutputError("no space left")
    assert not os.path.exists(out) and len(os.listdir(out + ".parts")) == 1
    with Store(out, "parquet", "ground").open(Solo()) as output:
        assert list(output.seen) == [key(out, "a.png")]
    assert [r["path"] for r in rows(out)] == ["a.png"]


def test_a_merge_killed_before_its_rename_is_cleared(tmp_path):
    out = written(tmp_path / "r.parquet", "parquet", rec("a.png"))
    leftover = tmp_path / "r.parquet.4242.tmp"
    leftover.write_bytes(b"PAR1")
    with Store(out, "parquet", "ground").open(Solo()):
        pass
    assert not leftover.exists() and [r["path"] for r in rows(out)] == ["a.png"]


# -- whose output -----------------------------------------------------------------------------------------------
def _sha(path):
    return open(path, "rb").read()


FOREIGN = {
    "text": ("notes.jsonl", lambda p: p.write_text("my notes\n"), "its first line is not a JSON record"),
    "manifest": ("list.jsonl", lambda p: p.write_text('{"path": "a.png"}\n'), "no 'path' and 'status'"),
    "table": ("t.parquet", lambda p: pq.write_table(pa.table({"a": [1]}), p), "its schema names no kosmos task"),
    "folder": ("d.jsonl", lambda p: p.mkdir(), "it is a folder"),
}


@pytest.mark.parametrize("kind", FOREIGN)
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_file_that_is_not_ours_is_refused_and_left_as_it_was(tmp_path, kind, overwrite):
    name, make, why = FOREIGN[kind]
    out = tmp_path / name
    make(out)
    before = _sha(out) if out.is_file() else None
    store = Store(str(out), "parquet" if name.endswith(".parquet") else "jsonl", "ground")
    with pytest.raises(UsageError, match=f"is not a results file of kosmos \\(.*{why}"):
        store.check(overwrite=overwrite)
    with pytest.raises(UsageError, match="is not a results file of kosmos"), store.open(Solo(), overwrite=overwrite):
        pass
    assert (_sha(out) if out.is_file() else None) == before


def test_an_output_that_is_one_of_the_inputs_is_refused(tmp_path):
    out = written(tmp_path / "r.jsonl", "jsonl", rec("a.png"))
    with pytest.raises(UsageError, match="is also one of the inputs"):
        Store(out, "jsonl", "ground").check([str(tmp_path / "." / "r.jsonl")])


def test_an_empty_file_is_ours_to_write(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text("")
    assert Store(str(out), "jsonl", "ground").owner() is None
    written(out, "jsonl", rec("a.png"))
    assert [r["path"] for r in rows(out)] == ["a.png"]


# -- proving a file is ours: only what kosmos writes ------------------------------------------------------------
LEGACY = os.path.join(HERE, "fixtures", "legacy-outputs")


def first_row_owner(tmp_path, row):
    out = tmp_path / "r.jsonl"
    out.write_text(json.dumps(row) + "\n")
    try:
        return Store(str(out), "jsonl", "ground").owner()
    except UsageError as exc:
        return str(exc)


RECORDS = {
    "ground": rec("a.png", label="x", status="error"),
    "refer": ReferRecord(path="a.png", box_px=[1.0, 1.0, 5.0, 5.0], description="a cat", extra={"caption": "c"}),
    "find": FindRecord(path="a.png", phrase="a cat", boxes=[[0, 0, 1, 1]], boxes_px=[[0, 0, 9, 9]], scores=[0.5]),
}


@pytest.mark.parametrize("task", RECORDS)
def test_a_record_of_each_task_is_ours_with_its_carried_columns(tmp_path, task):
    assert first_row_owner(tmp_path, RECORDS[task].to_dict()) == task


@pytest.mark.parametrize("name", ["ground.jsonl", "refer.jsonl", "find.jsonl"])
def test_records_written_before_the_task_and_decoding_fields_are_ours(tmp_path, name):
    row = next(read_records(os.path.join(LEGACY, name)))
    assert "task" not in row and "decoding" not in row
    assert first_row_owner(tmp_path, row) == name.split(".")[0]


def _moved(row):
    keys = list(row)
    keys.insert(1, keys.pop(keys.index("caption")))
    return {k: row[k] for k in keys}


NOT_RECORDS = {
    "img2dataset": {"path": "1.jpg", "status": "success", "caption": "a cat", "url": "http://x/1.jpg"},
    "our names, in another order": _moved(rec("a.png").to_dict()),
    "a field missing": {k: v for k, v in rec("a.png").to_dict().items() if k != "seconds"},
    "a width that is text": {**rec("a.png").to_dict(), "width": "32"},
    "a status of no kosmos": {**rec("a.png").to_dict(), "status": "success"},
    "entities that are not a list": {**rec("a.png").to_dict(), "entities": "a cat"},
    "a column of ours carried twice": {**rec("a.png").to_dict(), "phrase": "a cat"},
}


@pytest.mark.parametrize("kind", NOT_RECORDS)
def test_a_first_row_kosmos_would_not_have_written_is_not_ours(tmp_path, kind):
    assert "is not a results file of kosmos" in first_row_owner(tmp_path, NOT_RECORDS[kind])


@pytest.mark.parametrize(
    "torn, ours",
    [
        (json.dumps(rec("a.png").to_dict())[:60], True),  # a crash in the first record: repaired
        ('{"path": "a.png", "width": 3', True),  # written before the task field
        ('{"path": "1.jpg", "status": "succ', False),  # a user's line, cut short
        ('{"path": "a.p', False),  # too short to tell: left alone
    ],
)
def test_a_first_line_cut_short_is_ours_only_when_it_begins_as_ours_do(tmp_path, torn, ours):
    out = tmp_path / "r.jsonl"
    out.write_text(torn)
    store = Store(str(out), "jsonl", "ground")
    if ours:
        assert store.owner() is None  # nothing recorded yet: the run repairs it and writes
    else:
        with pytest.raises(UsageError, match="is not a results file of kosmos"):
            store.owner()


def test_a_parquet_file_is_ours_only_when_its_schema_names_a_kosmos_task(tmp_path):
    out = tmp_path / "r.parquet"
    rows = [rec("a.png").to_dict()]
    pq.write_table(pa.Table.from_pylist(rows, schema=Ground.schema().remove_metadata()), out)  # every column ours
    with pytest.raises(UsageError, match="its schema names no kosmos task"):
        Store(str(out), "parquet", "ground").owner()
    pq.write_table(pa.Table.from_pylist(rows, schema=Ground.schema()), out)
    assert Store(str(out), "parquet", "ground").owner() == "ground"
