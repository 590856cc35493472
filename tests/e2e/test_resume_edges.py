"""What earlier runs leave behind: a last JSONL line without its newline, a merge killed before its rename."""

import json
import os

import kosmos_cli
from kosmos_cli.output.reader import read_records
from kosmos_cli.output.store import Store
from kosmos_cli.tasks import GroundRecord


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


def test_done_is_the_same_image_however_its_folder_is_spelled(tmp_path, tiny_engine, monkeypatch):
    """`kosmos ground rs`, then `$PWD/rs`, `./rs/`, a symlink to rs, `../rs` from a folder below: one record per
    image, and every run after the first skips all of them (records keep the path as the first run gave it)."""
    from tests.helpers import make_images

    make_images(str(tmp_path / "rs"))
    os.symlink(tmp_path / "rs", tmp_path / "link")
    (tmp_path / "below").mkdir()
    monkeypatch.chdir(tmp_path)
    for fmt in ("jsonl", "parquet"):
        out = f"r.{fmt}"
        first = kosmos_cli.ground("rs", out, engine=tiny_engine)
        assert (first.done, first.skipped) == (4, 0)
        for spelling in (str(tmp_path / "rs"), "./rs/", "link", str(tmp_path / "link" / "..") + "/rs"):
            again = kosmos_cli.ground(spelling, out, engine=tiny_engine, prune=True)
            assert (again.done, again.skipped) == (0, 4), spelling
        monkeypatch.chdir(tmp_path / "below")  # the output's relative paths are found beside it
        again = kosmos_cli.ground("../rs", f"../{out}", engine=tiny_engine, prune=True)
        assert (again.done, again.skipped) == (0, 4)
        monkeypatch.chdir(tmp_path)
        paths = sorted(r["path"] for r in read_records(out))
        assert paths == sorted(os.path.join("rs", name) for name in os.listdir("rs"))  # as the first run gave them


def test_keys_are_canonical_and_tell_apart_what_differs(tmp_path, monkeypatch):
    from kosmos_cli.tasks import Ground, path_key

    (tmp_path / "rs").mkdir()
    (tmp_path / "rs" / "a.png").write_bytes(b"")
    os.symlink("rs/a.png", tmp_path / "alias.png")
    monkeypatch.chdir(tmp_path)
    real = str(tmp_path / "rs" / "a.png")
    assert {path_key(p) for p in ("rs/a.png", "./rs//a.png", real, "alias.png", "rs/../rs/a.png")} == {real}
    assert path_key("rs/b.png") != path_key("b.png")  # a missing file still has a key of its own
    assert path_key("a\x00b.png") == str(tmp_path / "a\x00b.png")  # cannot be looked up: made absolute only
    (tmp_path / "below").mkdir()
    monkeypatch.chdir(tmp_path / "below")
    assert Ground.key({"path": "rs/a.png"}, str(tmp_path)) == real  # not here: beside the output
    assert Ground.key({"path": "rs/a.png"}) == str(tmp_path / "below" / "rs" / "a.png")
