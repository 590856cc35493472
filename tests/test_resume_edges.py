"""What earlier runs leave behind: a last JSONL line without its newline, a merge killed before its rename."""

import json
import os

import kosmos_cli
from kosmos_cli.tasks import GroundRecord
from kosmos_cli.store import Store
from kosmos_cli.writers import read_records


def line(path):
    return json.dumps(GroundRecord(path=path, caption="c", file_size=1, file_mtime=1.0).to_dict())


def test_a_whole_last_jsonl_line_without_a_newline_is_kept(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text(line("a.jpg") + "\n" + line("b.jpg"))  # complete, only the newline is missing
    store = Store(str(out), "jsonl", "ground")
    store.repair()
    assert out.read_text().endswith("}\n")
    sink = store.sink()
    sink.write([GroundRecord(path="c.jpg")])
    sink.close()
    assert [r["path"] for r in read_records(str(out))] == ["a.jpg", "b.jpg", "c.jpg"]


def test_a_torn_last_line_is_still_dropped(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text(line("a.jpg") + "\n" + line("b.jpg")[:-1])
    Store(str(out), "jsonl", "ground").repair()
    assert [r["path"] for r in read_records(str(out))] == ["a.jpg"]


def test_a_merge_killed_before_its_rename_leaves_nothing_behind(tmp_path):
    out = tmp_path / "r.parquet"
    leftovers = [tmp_path / "r.parquet.12345.tmp", tmp_path / "r.parquet.99.tmp"]
    for leftover in leftovers:
        leftover.write_bytes(b"PAR1 half a merge")
    others = [tmp_path / "r.parquet.x.tmp", tmp_path / "other.parquet.1.tmp"]  # not ours: kept
    for other in others:
        other.write_bytes(b"")
    store = Store(str(out), "parquet", "ground")
    store.lock()
    try:
        store.repair()
    finally:
        store.unlock()
    assert [p.exists() for p in leftovers + others] == [False, False, True, True]


def test_a_run_clears_a_killed_merge(tmp_path, tiny_engine, image_dir):
    out = tmp_path / "r.parquet"
    kosmos_cli.ground([str(image_dir)], str(out), engine=tiny_engine)
    leftover = tmp_path / f"r.parquet.{os.getpid() + 1}.tmp"
    leftover.write_bytes(b"PAR1")
    again = kosmos_cli.ground([str(image_dir)], str(out), engine=tiny_engine)
    assert again.skipped == 4 and not leftover.exists()
