"""Cron-grade runs: locks, full disks, termination signals, changed files, damaged outputs."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from kosmos_cli import ground
from kosmos_cli.cli import app
from kosmos_cli.errors import OutputError
from kosmos_cli.output.reader import read_records
from kosmos_cli.output.store import Store
from tests.helpers import ROOT, make_images


def cmd(folder, out, model, *extra):
    return [
        sys.executable,
        "-m",
        "kosmos_cli",
        "ground",
        str(folder),
        "--out",
        str(out),
        "--model",
        model,
        "--max-new-tokens",
        "4",
        *extra,
    ]


def paths_in(out):
    return sorted(r["path"] for r in read_records(str(out)))


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    make_images(str(folder), sizes=[(48 + i, 48) for i in range(12)])
    return folder


# -- overlap ------------------------------------------------------------------------------------------------
def test_a_second_run_on_a_locked_output_exits_75_naming_the_holder(tiny_model, photos, tmp_path):
    out = tmp_path / "r.jsonl"
    holder = Store(str(out), "jsonl", "ground")
    holder.lock()
    try:
        proc = subprocess.run(cmd(photos, out, tiny_model), capture_output=True, text=True, cwd=ROOT, timeout=120)
    finally:
        holder.unlock()
    assert proc.returncode == 75
    assert proc.stderr.strip() == (
        f"kosmos: error: another kosmos run (pid {os.getpid()}) is writing {out}: "
        "let it finish, or pass --wait to wait for it"
    )
    assert not out.exists() or out.read_text() == ""


def test_wait_waits_for_the_first_run(tiny_model, photos, tmp_path):
    out = tmp_path / "r.jsonl"
    holder = Store(str(out), "jsonl", "ground")
    holder.lock()
    proc = subprocess.Popen(cmd(photos, out, tiny_model, "--wait"), stderr=subprocess.PIPE, text=True, cwd=ROOT)
    time.sleep(3)
    assert proc.poll() is None  # still waiting
    holder.unlock()
    assert proc.wait(timeout=120) == 0
    assert len(paths_in(out)) == 12


def test_a_lock_left_by_a_killed_run_does_not_block(tiny_model, photos, tmp_path):
    out = tmp_path / "r.jsonl"
    code = (
        f"from kosmos_cli.output.store import Store; import time; Store({str(out)!r}, 'jsonl', 'ground').lock(); "
        "print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    assert os.path.exists(str(out) + ".lock")  # the file is still there: its existence means nothing
    proc = subprocess.run(cmd(photos, out, tiny_model), capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr


# -- full disk ----------------------------------------------------------------------------------------------
def _fsync_fails_after(monkeypatch, calls):
    import kosmos_cli.output.formats as writers

    real, count = os.fsync, {"n": 0}

    def fsync(fd):
        count["n"] += 1
        if count["n"] > calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(writers.os, "fsync", fsync)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_enospc_stops_the_run_keeps_finished_records_and_the_rerun_completes(
    tiny_engine, photos, tmp_path, monkeypatch, fmt
):
    out = str(tmp_path / f"r.{fmt}")
    with monkeypatch.context() as m:
        _fsync_fails_after(m, 2)
        with pytest.raises(OutputError, match="no space left writing .* free some space and run the same command"):
            ground([str(photos)], out, engine=tiny_engine, batch_size=2)
    store = Store(out, fmt, "ground")
    kept = store.scan().seen
    assert 4 <= len(kept) < 12  # at least the two batches synced before the disk filled
    summary = ground([str(photos)], out, engine=tiny_engine, batch_size=2)
    assert (summary.done, summary.skipped) == (12 - len(kept), len(kept))
    assert paths_in(out) == sorted(str(p) for p in photos.iterdir())


def test_enospc_through_the_cli_is_one_line_and_exit_1(tiny_model, photos, tmp_path, monkeypatch):
    _fsync_fails_after(monkeypatch, 1)
    result = CliRunner().invoke(
        app,
        [
            "ground",
            str(photos),
            "--out",
            str(tmp_path / "r.jsonl"),
            "--model",
            tiny_model,
            "--max-new-tokens",
            "2",
            "-b",
            "2",
        ],
    )
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("kosmos: error: no space left writing")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_under_draw_keeps_every_record(tiny_model, small_disk, tmp_path):
    """ground --draw with the annotated images on a 64 KB tmpfs: drawing (on its own thread) runs out of space;
    the run says so in one line, exits 1, and every record written before that is kept; a rerun with room
    finishes."""
    import numpy as np
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    noise = np.random.default_rng(0)
    for i in range(16):  # noise: each annotated PNG is bigger than the whole disk
        Image.fromarray(noise.integers(0, 255, (150, 200, 3), dtype=np.uint8)).save(photos / f"n{i:02d}.png")
    out = tmp_path / "r.jsonl"
    first = subprocess.run(
        cmd(photos, out, tiny_model, "-b", "4", "--draw", str(small_disk / "drawn")),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert first.returncode == 1, first.stderr
    last = first.stderr.strip().splitlines()[-1]
    assert last.startswith("kosmos: error: cannot write ") and last.endswith(
        "No space left on device: choose another --draw or free some space"
    ), last
    kept = paths_in(out)
    assert 0 < len(kept) <= 16 and len(set(kept)) == len(kept)
    assert not [f for f in os.listdir(small_disk / "drawn") if f.endswith(".tmp")]  # no half-written image
    second = subprocess.run(
        cmd(photos, out, tiny_model, "-b", "4", "--draw", str(tmp_path / "drawn")),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr
    assert paths_in(out) == sorted(str(p) for p in photos.iterdir())


def test_a_draw_folder_that_cannot_be_made_is_refused_before_the_model_loads(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a.png").write_bytes(b"")
    done = subprocess.run(
        cmd(tmp_path / "a.png", tmp_path / "r.jsonl", "/no/such/model", "--draw", str(tmp_path / "a_file" / "drawn")),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"kosmos: error: --draw {tmp_path}/a_file/drawn: cannot make that folder "
        "(Not a directory): name a folder you can write to"
    )
    assert not (tmp_path / "r.jsonl").exists()


def test_a_real_full_disk(tiny_model, small_disk, tmp_path):
    photos = tmp_path / "photos"
    make_images(str(photos), sizes=[(32, 32)] * 60)
    out = small_disk / "r.jsonl"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (64 * 1024 - 12 * 1024))  # leaves room for a few dozen records
    first = subprocess.run(
        cmd(photos, out, tiny_model, "-b", "4"), capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert first.returncode == 1, first.stderr
    assert first.stderr.strip().endswith(
        "free some space and run the same command again (finished records are kept and will be skipped)"
    )
    kept = Store(str(out), "jsonl", "ground").scan().seen
    assert 0 < len(kept) < 60
    filler.unlink()
    second = subprocess.run(
        cmd(photos, out, tiny_model, "-b", "4"), capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert second.returncode == 0, second.stderr
    assert f"{len(kept)} skipped" in second.stderr
    assert paths_in(out) == sorted(str(p) for p in photos.iterdir())


def test_a_full_disk_leaves_whole_jsonl_records_only(small_disk):
    """A batch the disk has no room for is cut off again before the error: jq and kosmos draw read the file
    as it is, with no repair run needed."""
    from kosmos_cli.output.formats import JsonlSink
    from kosmos_cli.tasks import GroundRecord

    (small_disk / "filler").write_bytes(b"\0" * (64 * 1024 - 8 * 1024))
    out = small_disk / "r.jsonl"
    sink = JsonlSink(str(out))
    written = 0
    with pytest.raises(OutputError, match="no space left writing"):
        for batch in range(100):  # 3 records of ~500 bytes a batch: the disk fills in the middle of one
            sink.write([GroundRecord(path=f"img{batch}-{i}.png", caption="x" * 450) for i in range(3)])
            written += 3
    sink.close()
    assert 0 < written < 300
    text = out.read_text()
    assert text.endswith("\n") and [json.loads(line)["path"] for line in text.splitlines()] == [
        f"img{b}-{i}.png" for b in range(written // 3) for i in range(3)
    ]


def test_a_nightly_draw_inside_the_library_is_not_grounded_the_next_night(tiny_model, tmp_path):
    lib = tmp_path / "lib"
    make_images(str(lib), sizes=[(48, 48), (56, 40)])
    args = ["--draw", str(lib / "annotated")]
    first = subprocess.run(
        cmd(lib, lib / "r.parquet", tiny_model, *args), capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert first.returncode == 0, first.stderr
    assert "2 done, 0 failed, 0 skipped" in first.stderr and "2 drawn" in first.stderr
    second = subprocess.run(
        cmd(lib, lib / "r.parquet", tiny_model, *args), capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert second.returncode == 0, second.stderr
    assert "0 done, 0 failed, 2 skipped" in second.stderr and "0 drawn" in second.stderr
    assert not (lib / "annotated" / "annotated").exists()
    assert paths_in(lib / "r.parquet") == sorted(str(p) for p in lib.glob("img_*"))


# -- signals ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_keep_finished_batches_and_leave_a_valid_output(tiny_model, tmp_path, sig, code):
    photos = tmp_path / "photos"
    make_images(str(photos), sizes=[(40 + i, 40) for i in range(12)])
    out = tmp_path / "r.parquet"
    args = cmd(photos, out, tiny_model, "-b", "2", "--workers", "1")
    args[args.index("--max-new-tokens") + 1] = "24"
    paused = tmp_path / "paused"
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tests", "pause_after.py"), *args[3:]],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "KOSMOS_TEST_PAUSE_AFTER": "2", "KOSMOS_TEST_PAUSED": str(paused)},
    )
    while not paused.exists() and proc.poll() is None:  # it stops by itself after its second batch
        time.sleep(0.05)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == code
    stderr = proc.stderr.read()
    assert f"interrupted by {signal.Signals(sig).name}" in stderr and "Traceback" not in stderr
    done = paths_in(out)  # the Parquet file itself is complete and readable
    assert len(done) == 4 and not os.path.exists(str(out) + ".parts")
    rerun = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert rerun.returncode == 0 and f"{len(done)} skipped" in rerun.stderr
    assert paths_in(out) == sorted(str(p) for p in photos.iterdir())


# -- changed inputs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_changed_images_are_redone_and_replaced_removed_ones_kept_unless_prune(tiny_engine, photos, tmp_path, fmt):
    out = str(tmp_path / f"r.{fmt}")
    ground([str(photos)], out, engine=tiny_engine)
    changed, removed = photos / "img_01.jpg", photos / "img_02.webp"
    from PIL import Image

    Image.new("RGB", (100, 70), (1, 2, 3)).save(changed)
    os.utime(changed, (1_000_000_000, 1_000_000_000))
    removed.unlink()
    summary = ground([str(photos)], out, engine=tiny_engine)
    assert (summary.done, summary.skipped) == (1, 10)
    rows = {r["path"]: r for r in read_records(out)}
    assert len(rows) == 12 == len(list(read_records(out)))  # one record per image: the old one was replaced
    assert (rows[str(changed)]["width"], rows[str(changed)]["file_mtime"]) == (100, 1_000_000_000)
    assert str(removed) in rows
    pruned = ground([str(photos)], out, engine=tiny_engine, prune=True)
    assert (pruned.done, pruned.skipped) == (0, 11)
    assert str(removed) not in {r["path"] for r in read_records(out)}


def test_failed_images_are_skipped_unless_retry_failed(tiny_engine, photos, tmp_path):
    out = str(tmp_path / "r.jsonl")
    bad = photos / "bad.png"
    bad.write_bytes(b"nope")
    assert ground([str(photos)], out, engine=tiny_engine).failed == 1
    assert ground([str(photos)], out, engine=tiny_engine).skipped == 13
    shutil.copy(photos / "img_00.png", bad)
    os.utime(bad, (2_000_000_000, 2_000_000_000))  # a fixed file is a changed file: redone anyway
    again = ground([str(photos)], out, engine=tiny_engine, retry_failed=True)
    assert (again.done, again.failed) == (1, 0)
    assert {r["status"] for r in read_records(out)} == {"ok"}


# -- damaged outputs ----------------------------------------------------------------------------------------
def test_a_torn_jsonl_line_is_repaired_on_the_next_run(tiny_engine, photos, tmp_path):
    out = tmp_path / "r.jsonl"
    ground([str(photos)], str(out), engine=tiny_engine)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:5]) + lines[5][:40])  # a crash in the middle of the sixth line
    summary = ground([str(photos)], str(out), engine=tiny_engine)
    assert (summary.done, summary.skipped) == (7, 5)
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()]  # every line parses
    assert paths_in(out) == sorted(str(p) for p in photos.iterdir())


def test_a_half_written_parquet_part_is_repaired_on_the_next_run(tiny_engine, photos, tmp_path):
    out = tmp_path / "r.parquet"
    parts = tmp_path / "r.parquet.parts"
    parts.mkdir()
    (parts / "part-0000-00000000.parquet.tmp").write_bytes(b"PAR1 cut short")
    summary = ground([str(photos)], str(out), engine=tiny_engine)
    assert summary.done == 12 and not parts.exists()
    assert paths_in(out) == sorted(str(p) for p in photos.iterdir())
