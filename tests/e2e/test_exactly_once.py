"""Any manifest a user has, and exactly once on every resume path: --prune after an incomplete pass, rows whose
keys collide, an image that cannot be read this time, and the spool that several processes write for stdout."""

import json
import os
import shutil

import pytest

from kosmos_cli import ground
from kosmos_cli.output.reader import read_records
from kosmos_cli.output.store import Store
from kosmos_cli.run.ranks import Solo
from kosmos_cli.tasks import Ground, GroundRecord
from kosmos_cli.tasks.base import path_key
from tests.helpers import kosmos, make_images


def paths_in(out):
    return sorted(r["path"] for r in read_records(str(out)))


# -- --prune only after a pass that saw every input -----------------------------------------------------------
@pytest.fixture
def recorded(tiny_engine, tmp_path):
    """Three images, all recorded in results.jsonl."""
    photos = sorted(make_images(str(tmp_path / "photos"), sizes=((64, 48), (48, 64), (40, 40))))
    out = tmp_path / "results.jsonl"
    ground(photos, str(out), engine=tiny_engine)
    return photos, out


def test_prune_after_a_manifest_that_fails_mid_pass_keeps_every_record(recorded, tiny_model, tmp_path):
    """A CSV whose last row cannot be read (a field over 128 KiB): the run stops with exit 2 and prunes nothing."""
    photos, out = recorded
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,note\n{photos[0]},a\n{photos[1]},{'x' * 200_000}\n")
    before = out.read_text()
    result = kosmos("ground", str(manifest), "--out", str(out), "--prune", model=tiny_model)
    assert result.exit_code == 2 and "line 3" in result.stderr
    assert out.read_text() == before


def test_prune_after_a_txt_manifest_that_cannot_be_read_keeps_every_record(recorded, tiny_engine, tmp_path):
    """A .txt manifest whose read fails with an I/O error (as on a network share that went away) after an image
    was done: the error comes out and no record is pruned."""
    photos, out = recorded
    manifest = tmp_path / "list.txt"
    manifest.symlink_to("/proc/self/mem")  # reading it is a real EIO
    with pytest.raises(OSError):
        ground([photos[0], str(manifest)], str(out), engine=tiny_engine, prune=True)
    assert paths_in(out) == photos


def test_prune_after_a_jsonl_manifest_with_a_line_it_skipped_keeps_every_record(recorded, tiny_model, tmp_path):
    """One line that is not JSON is warned about and skipped: the pass did not see every input, so it prunes
    nothing, and says so in one line."""
    photos, out = recorded
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps({"path": photos[0]}) + '\n{"path": "cut off\n')
    result = kosmos("ground", str(manifest), "--out", str(out), "--prune", model=tiny_model)
    assert result.exit_code == 0, result.output
    assert paths_in(out) == photos
    warnings = [line for line in result.stderr.splitlines() if "--prune" in line]
    assert len(warnings) == 1 and f"{manifest} line 2" in warnings[0], result.stderr


def test_prune_after_a_csv_cut_inside_a_quote_keeps_every_record(recorded, tiny_model, tmp_path):
    """`"photo.png` never closed: a broken manifest, named by line; nothing is pruned."""
    photos, out = recorded
    manifest = tmp_path / "list.csv"
    manifest.write_text(f'path\n{photos[0]}\n"{photos[1]}\n')
    before = out.read_text()
    result = kosmos("ground", str(manifest), "--out", str(out), "--prune", model=tiny_model)
    assert result.exit_code == 2 and "list.csv line 3" in result.stderr and "quote" in result.stderr
    assert out.read_text() == before


def test_prune_over_a_folder_it_cannot_list_keeps_the_records_under_it(tiny_model, tmp_path):
    """photos/nas is a link to a disk that is not mounted tonight: its records stay, and the run says why."""
    disk = tmp_path / "disk"
    make_images(str(disk), sizes=((64, 48), (48, 64)))
    photos = tmp_path / "photos"
    make_images(str(photos / "here"), sizes=((40, 40),))
    (photos / "nas").symlink_to(disk, target_is_directory=True)
    out = tmp_path / "results.jsonl"
    assert kosmos("ground", str(photos), "--out", str(out), model=tiny_model).exit_code == 0
    assert len(paths_in(out)) == 3
    shutil.rmtree(disk)
    result = kosmos("ground", str(photos), "--out", str(out), "--prune", model=tiny_model)
    assert result.exit_code == 0, result.output
    assert len(paths_in(out)) == 3
    warnings = [line for line in result.stderr.splitlines() if "--prune" in line]
    assert len(warnings) == 1 and str(photos / "nas") in warnings[0], result.stderr


# -- rows whose keys collide are one unit from the start -------------------------------------------------------
def rows_after_two_runs(*args, model):
    counts = []
    for _ in range(2):
        result = kosmos(*args, model=model)
        assert result.exit_code == 0, result.output
        counts.append(len(list(read_records(args[args.index("--out") + 1]))))
    return counts


def test_refer_rows_with_the_same_box_are_one_record(tiny_model, tmp_path):
    (path,) = make_images(str(tmp_path), sizes=((200, 200),))
    rows = [
        {"path": path, "x1": 10, "y1": 10, "x2": 100, "y2": 100, "id": "first"},
        {"path": path, "x1": 10.0, "y1": 10, "x2": 100.0, "y2": 100},
        {"path": path, "x1": 10, "y1": 10, "x2": 100, "y2": 100, "id": "another"},
        {"path": path, "x1": 0, "y1": 0, "x2": 50, "y2": 50},
        {"path": path, "x1": -0.0, "y1": 0, "x2": 50, "y2": 50},
    ]
    manifest = tmp_path / "regions.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = str(tmp_path / "r.jsonl")
    assert rows_after_two_runs("refer", str(manifest), "--out", out, model=tiny_model) == [2, 2]
    first = next(r for r in read_records(out) if r["box_px"] == [10, 10, 100, 100])
    assert first["id"] == "first"  # the first row wins


def test_find_rows_with_the_same_phrase_are_one_record(tiny_model, tmp_path):
    (path,) = make_images(str(tmp_path), sizes=((200, 200),))
    rows = [
        {"path": path, "phrase": "a cup", "id": "first"},
        {"path": path, "phrase": "<a cup>"},
        {"path": path, "phrase": " a  cup ", "id": "another"},
        {"path": path, "phrase": "a dog"},
    ]
    manifest = tmp_path / "phrases.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = str(tmp_path / "f.jsonl")
    assert rows_after_two_runs("find", str(manifest), "--out", out, model=tiny_model) == [2, 2]
    assert next(r for r in read_records(out) if r["phrase"] == "a cup")["id"] == "first"


# -- a record that was ok is not replaced by a worse one --------------------------------------------------------
def test_an_image_missing_for_one_run_keeps_its_ok_record(tiny_model, tmp_path):
    photos = sorted(make_images(str(tmp_path / "photos"), sizes=((64, 48), (48, 64))))
    manifest = tmp_path / "list.txt"
    manifest.write_text("".join(p + "\n" for p in photos))
    out = tmp_path / "results.jsonl"
    assert kosmos("ground", str(manifest), "--out", str(out), model=tiny_model).exit_code == 0
    before = out.read_text()
    away = tmp_path / "away.png"
    os.rename(photos[0], away)  # on a disk that is not mounted this time
    result = kosmos("ground", str(manifest), "--out", str(out), model=tiny_model)
    assert result.exit_code == 0, result.output
    assert out.read_text() == before  # no error record written, the ok one kept
    warnings = [line for line in result.stderr.splitlines() if line.startswith("kosmos: WARNING:")]
    assert warnings == [
        f"kosmos: WARNING: 1 image recorded ok failed this time (e.g. {photos[0]}: file not found): "
        "its ok record is kept"
    ], result.stderr
    assert "0 done, 0 failed, 2 skipped" in result.stderr
    os.rename(away, photos[0])
    again = kosmos("ground", str(manifest), "--out", str(out), model=tiny_model)
    assert "0 done, 0 failed, 2 skipped" in again.stderr


# -- the spool of several processes writing to stdout ---------------------------------------------------------
class Main(Solo):
    """The main process of a team of several, as the store sees it: it writes parts and compacts at the end."""

    solo = False

    def __init__(self, merged):
        super().__init__()
        self.merged = merged


def test_the_stdout_spool_resumes_and_keeps_only_this_passs_inputs(tmp_path, monkeypatch, capsys):
    """What a killed multi-process run to stdout leaves is resumed by the next one, which writes to stdout only the
    records of its own inputs, once each, and removes the spool."""
    monkeypatch.chdir(tmp_path)
    killed = Store.for_run("-", "jsonl", Ground, Main(merged=False))
    assert killed.path == ".kosmos-stdout-ground.jsonl"
    with pytest.raises(KeyboardInterrupt), killed.open(Main(merged=False)) as output:
        output.write([GroundRecord(path="a.jpg", caption="a"), GroundRecord(path="gone.jpg", caption="g")])
        raise KeyboardInterrupt
    assert capsys.readouterr().out == ""
    assert os.listdir(killed.parts_dir)  # left for the rerun
    rerun = Store.for_run("-", "jsonl", Ground, Main(merged=True))
    with rerun.open(Main(merged=True)) as output:
        assert set(output.seen) == {path_key("a.jpg"), path_key("gone.jpg")}  # keyed on the real paths
        output.write([GroundRecord(path="b.jpg", caption="b")])
        output.complete({path_key("a.jpg"), path_key("b.jpg")})
    assert sorted(json.loads(line)["path"] for line in capsys.readouterr().out.splitlines()) == ["a.jpg", "b.jpg"]
    assert os.listdir(tmp_path) == []
