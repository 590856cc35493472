"""Named pipes, sockets and devices among the inputs: each is its input's error record, found without waiting on
it; and a run whose read never returns still ends on SIGTERM or Ctrl-C within seconds, lock released.

Every run here is a real `kosmos` process with a timeout: a run that waits on a pipe fails the test, not the suite.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers import HERE, ROOT, SHAPES_MODEL, kosmos_process, make_images

MODEL = ["--model", SHAPES_MODEL, "--max-new-tokens", "3"]
NOT_REGULAR = "not a regular file"

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")


def _specials(folder):
    """A FIFO, a unix socket and a link to /dev/zero in `folder`, named as images; the socket is returned open."""
    os.mkfifo(folder / "pipe.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "sock.png"))
    os.symlink("/dev/zero", folder / "zero.jpg")
    return sock


def _records(path):
    return {os.path.basename(r["path"]): r for r in map(json.loads, open(path, encoding="utf-8"))}


def test_special_files_in_a_folder_a_glob_a_manifest_or_named_are_error_records(tmp_path):
    photos = tmp_path / "photos"
    make_images(str(photos), sizes=((224, 224), (200, 320)))
    sock = _specials(photos)
    other = tmp_path / "other"
    other.mkdir()
    os.mkfifo(other / "named.jpg")
    os.mkfifo(other / "globbed.png")
    os.mkfifo(other / "listed.jpg")
    (tmp_path / "list.txt").write_text("other/listed.jpg\n")
    os.mkfifo(tmp_path / "fifo-list.txt")  # a manifest that is a pipe: nobody writes to it
    out = tmp_path / "r.jsonl"
    args = ["ground", str(photos), str(other / "named.jpg"), str(other / "*.png"), str(tmp_path / "list.txt")]
    try:
        done = kosmos_process([*args, str(tmp_path / "fifo-list.txt"), "--out", str(out), *MODEL], timeout=240)
    finally:
        sock.close()
    assert done.returncode == 0, done.stderr
    got = _records(out)
    assert {n for n, r in got.items() if r["status"] == "ok"} == {"img_00.png", "img_01.jpg"}
    special = ["pipe.jpg", "sock.png", "zero.jpg", "named.jpg", "globbed.png", "listed.jpg"]
    assert {n: got[n]["error"] for n in special} == dict.fromkeys(special, NOT_REGULAR)
    assert got["fifo-list.txt"]["error"].startswith(NOT_REGULAR + ": a manifest is read from a file")
    assert f"pipe.jpg: {NOT_REGULAR}" in done.stderr and "Traceback" not in done.stderr


def test_refer_and_find_over_a_fifo_are_error_records(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    refer = kosmos_process(["refer", str(tmp_path / "pipe.jpg"), "--box", "0,0,10,10", *MODEL], timeout=240)
    assert refer.returncode == 0, refer.stderr
    assert [json.loads(line)["error"] for line in refer.stdout.splitlines()] == [NOT_REGULAR]
    (tmp_path / "rows.jsonl").write_text(json.dumps({"path": "pipe.jpg", "phrase": "a red square"}) + "\n")
    find = kosmos_process(["find", str(tmp_path / "rows.jsonl"), *MODEL], timeout=240)
    assert find.returncode == 0, find.stderr
    assert [json.loads(line)["error"] for line in find.stdout.splitlines()] == [NOT_REGULAR]


def _results_naming_a_fifo(tmp_path):
    photos = tmp_path / "photos"
    make_images(str(photos), sizes=((224, 224), (200, 320)))
    out = tmp_path / "r.jsonl"
    done = kosmos_process(["ground", str(photos), "--out", str(out), *MODEL], timeout=240)
    assert done.returncode == 0, done.stderr
    os.remove(photos / "img_01.jpg")
    os.mkfifo(photos / "img_01.jpg")  # the image became a pipe since it was grounded
    return out


def test_draw_and_export_skip_an_image_that_is_a_fifo_with_a_line(tmp_path):
    results = _results_naming_a_fifo(tmp_path)
    drawn = kosmos_process(["draw", str(results), "--out-dir", str(tmp_path / "drawn")], timeout=60)
    assert "Traceback" not in drawn.stderr
    assert f"img_01.jpg: {NOT_REGULAR}" in drawn.stderr, drawn.stderr
    assert os.listdir(tmp_path / "drawn")  # the other image was drawn
    export = ["export", str(results), "--to", "yolo", str(tmp_path / "yolo"), "--copy-images", "--min-score", "0"]
    exported = kosmos_process(export, timeout=60)
    assert "Traceback" not in exported.stderr
    assert f"img_01.jpg: {NOT_REGULAR}" in exported.stderr, exported.stderr


def _stuck_run(tmp_path, out):
    """`kosmos ground` over two images and a FIFO, its read of the FIFO stuck in `open` (tests/stuck_read.py)."""
    photos = tmp_path / "photos"
    make_images(str(photos), sizes=((224, 224), (200, 320)))
    os.mkfifo(photos / "zz-pipe.jpg")
    flag = tmp_path / "stuck"
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "stuck_read.py"), "ground", str(photos), "--out", str(out), "-b", "1"]
        + MODEL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "KOSMOS_TEST_STUCK": str(flag)},
    )
    deadline = time.monotonic() + 240
    while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists(), proc.communicate(timeout=60)[1] if proc.poll() is not None else "never got to the FIFO"
    return proc, photos


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_run_stuck_reading_a_fifo_within_seconds_and_frees_its_lock(tmp_path, signum):
    out = tmp_path / "r.jsonl"
    proc, photos = _stuck_run(tmp_path, out)
    try:
        time.sleep(0.5)  # the loader is in open() for good now
        started = time.monotonic()
        proc.send_signal(signum)  # the first one: no second needed
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - started < 5, err
    assert proc.returncode == 128 + signum, err
    assert f"interrupted by {signal.Signals(signum).name}" in err and "Traceback" not in err
    again = kosmos_process(["ground", str(photos), "--out", str(out), *MODEL], timeout=240)
    assert again.returncode == 0, again.stderr  # not 75: the lock was released
    got = _records(out)
    assert got["zz-pipe.jpg"]["error"] == NOT_REGULAR
    assert all(got[n]["status"] == "ok" for n in ("img_00.png", "img_01.jpg"))


@pytest.mark.parametrize("command", [["draw"], ["export", "--to", "coco"]])
def test_a_results_file_that_is_a_fifo_is_one_line_not_a_wait(tmp_path, command):
    os.mkfifo(tmp_path / "r.jsonl")  # nobody writes to it
    out = [str(tmp_path / "out")] if command[0] == "export" else ["--out-dir", str(tmp_path / "out")]
    done = kosmos_process([command[0], str(tmp_path / "r.jsonl"), *command[1:], *out], timeout=60)
    assert done.returncode != 0
    assert done.stderr.splitlines() == [
        f"kosmos: error: {tmp_path / 'r.jsonl'} is {NOT_REGULAR}: results are read from a file that kosmos wrote"
    ], done.stderr


def test_an_out_that_is_a_fifo_is_refused_in_one_line(tmp_path):
    make_images(str(tmp_path / "photos"), sizes=((224, 224),))
    os.mkfifo(tmp_path / "r.jsonl")  # nobody reads it: writing, or reading what it holds, would wait forever
    done = kosmos_process(["ground", str(tmp_path / "photos"), "--out", str(tmp_path / "r.jsonl"), *MODEL], timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"kosmos: error: --out {tmp_path / 'r.jsonl'} is {NOT_REGULAR}: name a results file (for records on stdout, "
        "give --out -)"
    ], done.stderr
