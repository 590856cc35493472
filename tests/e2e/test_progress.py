"""Progress: a live bar with a total on a terminal; only the summary line elsewhere."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

from tests.helpers import ROOT

SAMPLES = os.path.join(ROOT, "sample_images")


def test_a_terminal_gets_a_live_bar_with_the_total(tiny_model, tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kosmos_cli",
            "ground",
            SAMPLES,
            "--out",
            str(tmp_path / "r.jsonl"),
            "--model",
            tiny_model,
            "--max-new-tokens",
            "2",
            "-b",
            "1",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        cwd=ROOT,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "kosmos ground" in screen and "/5 " in screen  # tqdm's "n/total" with the total counted
    assert "kosmos ground finished: 5 done" in screen


def test_quiet_prints_nothing_on_success(tiny_model, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kosmos_cli",
            "ground",
            SAMPLES,
            "--out",
            str(tmp_path / "r.jsonl"),
            "--model",
            tiny_model,
            "--max-new-tokens",
            "2",
            "-q",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == ""
