"""`kosmos ground` as users run it: real subprocesses, real files, real Parquet readers."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from kosmos_cli.cli import app
from kosmos_cli.output.reader import read_records
from kosmos_cli.output.store import Store
from tests.helpers import ROOT, make_images

SAMPLES = os.path.join(ROOT, "sample_images")


def kosmos(*args, stdin=None, timeout=180, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "kosmos_cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=ROOT,
    )


def test_folder_to_parquet_end_to_end(tiny_model, tmp_path):
    out = tmp_path / "results.parquet"
    proc = kosmos("ground", SAMPLES, "--out", str(out), "--model", tiny_model, "--max-new-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "kosmos ground finished: 5 done, 0 failed, 0 skipped" in proc.stderr
    assert "\x1b[" not in proc.stderr  # no colour codes or bar when stderr is not a terminal
    table = pq.read_table(out)
    rows = {os.path.basename(r["path"]): r for r in table.to_pylist()}
    assert sorted(rows) == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "coffee_exif_rotated.jpg", "rocket.jpg"]
    assert (rows["coffee_exif_rotated.jpg"]["width"], rows["coffee_exif_rotated.jpg"]["height"]) == (600, 400)
    assert (rows["chelsea.jpg"]["width"], rows["chelsea.jpg"]["height"]) == (451, 300)
    assert all(r["status"] == "ok" and r["model"] == tiny_model for r in rows.values())
    assert set(table.column_names) >= {
        "path",
        "width",
        "height",
        "status",
        "error",
        "caption",
        "entities",
        "prompt",
        "model",
    }


def test_stdin_paths_to_jsonl_on_stdout(tiny_model):
    paths = "\n".join(os.path.join(SAMPLES, n) for n in ["chelsea.jpg", "rocket.jpg"]) + "\n"
    proc = kosmos("ground", "-", "--out", "-", "--model", tiny_model, "--max-new-tokens", "4", stdin=paths)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [os.path.basename(r["path"]) for r in rows] == ["chelsea.jpg", "rocket.jpg"]
    assert "2 done" in proc.stderr


def test_a_reader_that_closes_the_pipe_ends_the_run_quietly(tiny_model, tmp_path):
    folder = tmp_path / "many"
    make_images(str(folder), sizes=[(64, 64)] * 24)
    cmd = (
        f"{sys.executable} -m kosmos_cli ground {folder} --out - --model {tiny_model} -b 2 --max-new-tokens 4 | head -1"
    )
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=180)
    assert len(proc.stdout.splitlines()) == 1 and json.loads(proc.stdout)["status"] == "ok"
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert proc.returncode == 0, proc.stderr


def test_manifest_and_folder_with_carried_columns(tiny_model, tmp_path):
    photos = tmp_path / "photos"
    make_images(str(photos))
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label,width\n{os.path.join(SAMPLES, 'rocket.jpg')},launch,9\nphotos/img_00.png,blue,1\n")
    out = tmp_path / "r.jsonl"
    proc = kosmos(
        "ground", str(manifest), str(photos), "--out", str(out), "--model", tiny_model, "--max-new-tokens", "4"
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(read_records(str(out)))
    assert len(rows) == 5  # photos/img_00.png comes once, with the manifest's columns
    by_name = {os.path.basename(r["path"]): r for r in rows}
    assert by_name["rocket.jpg"]["label"] == "launch" and by_name["rocket.jpg"]["input_width"] == "9"
    assert by_name["rocket.jpg"]["width"] == 640
    assert by_name["img_00.png"]["label"] == "blue"


def test_bad_files_are_error_records_and_strict_exits_1(tiny_model, tmp_path):
    photos = tmp_path / "photos"
    make_images(str(photos), sizes=[(64, 64), (80, 60)])
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "text.png").write_text("hello")
    shutil.copy(os.path.join(SAMPLES, "rocket.jpg"), photos / "cut.jpg")
    with open(photos / "cut.jpg", "r+b") as f:
        f.truncate(5000)
    out = tmp_path / "r.parquet"
    proc = kosmos("ground", str(photos), "--out", str(out), "--model", tiny_model, "--max-new-tokens", "4")
    assert proc.returncode == 0, proc.stderr
    rows = {os.path.basename(r["path"]): r for r in read_records(str(out))}
    assert len(rows) == 5
    assert {n for n, r in rows.items() if r["status"] == "error"} == {"empty.jpg", "text.png", "cut.jpg"}
    assert rows["empty.jpg"]["error"] == "empty file"
    assert all("\n" not in r["error"] for r in rows.values() if r["error"])
    assert "2 done, 3 failed" in proc.stderr
    strict = kosmos(
        "ground",
        str(photos),
        "--out",
        str(tmp_path / "s.jsonl"),
        "--model",
        tiny_model,
        "--max-new-tokens",
        "4",
        "--strict",
    )
    assert strict.returncode == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such/folder"], "input not found"),
        (["{samples}", "--out", "r.csv"], "cannot tell the output format"),
        (["{samples}", "--format", "xml"], "unknown format"),
        (["{samples}", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["{samples}", "--dtype", "float8"], "unknown dtype"),
        (["{samples}", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args, message, tmp_path):
    args = [a.replace("{samples}", SAMPLES) for a in args]
    proc = kosmos("ground", *args, "--model", str(tmp_path / "never-loaded"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_folder_that_is_not_a_checkpoint_is_a_one_line_model_error(tmp_path):
    (tmp_path / "notamodel").mkdir()
    proc = kosmos("ground", SAMPLES, "--model", str(tmp_path / "notamodel"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("kosmos: error: cannot load model from folder") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_an_uncached_hub_model_offline_says_what_to_do(tmp_path):
    proc = kosmos(
        "ground", SAMPLES, "--model", "someone/not-cached-kosmos", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    )
    assert proc.returncode == 1
    assert "HF_HUB_OFFLINE is set" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_kosmos_model_env_var_picks_the_model(tiny_model, tmp_path):
    proc = kosmos(
        "ground", os.path.join(SAMPLES, "rocket.jpg"), "--max-new-tokens", "2", env={"KOSMOS_MODEL": tiny_model}
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] == tiny_model


def test_rerun_skips_what_is_done_and_overwrite_starts_afresh(tiny_model, tmp_path):
    out = tmp_path / "r.parquet"
    first = kosmos("ground", SAMPLES, "--out", str(out), "--model", tiny_model, "--max-new-tokens", "2")
    assert first.returncode == 0, first.stderr
    again = kosmos("ground", SAMPLES, "--out", str(out), "--model", tiny_model, "--max-new-tokens", "2")
    assert "0 done, 0 failed, 5 skipped" in again.stderr
    fresh = kosmos("ground", SAMPLES, "--out", str(out), "--model", tiny_model, "--max-new-tokens", "2", "--overwrite")
    assert "5 done, 0 failed, 0 skipped" in fresh.stderr
    assert len(pq.read_table(out)) == 5


def test_kill_9_keeps_finished_batches_and_the_rerun_completes_exactly_once(tiny_model, tmp_path):
    photos = tmp_path / "photos"
    make_images(str(photos), sizes=[(64 + i, 64) for i in range(12)])
    for fmt in ("jsonl", "parquet"):
        out = tmp_path / f"r.{fmt}"
        args = [
            "ground",
            str(photos),
            "--out",
            str(out),
            "--model",
            tiny_model,
            "-b",
            "2",
            "--max-new-tokens",
            "24",
            "--workers",
            "1",
        ]
        paused = tmp_path / f"paused-{fmt}"
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "pause_after.py"), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "KOSMOS_TEST_PAUSE_AFTER": "2", "KOSMOS_TEST_PAUSED": str(paused)},
        )
        while not paused.exists() and proc.poll() is None:  # it stops by itself after its second batch
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = Store(str(out), fmt, "ground").scan().seen
        assert len(partial) == 4, fmt  # two batches of two, durable when the kill came
        rerun = subprocess.run(
            [sys.executable, "-m", "kosmos_cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
        )
        assert rerun.returncode == 0, rerun.stderr
        assert f"{len(partial)} skipped" in rerun.stderr
        rows = list(read_records(str(out)))
        assert sorted(r["path"] for r in rows) == sorted(str(p) for p in photos.iterdir())
        assert not os.path.exists(str(out) + ".parts")


def test_cli_runner_argument_file_and_stdin(tiny_model, tmp_path):
    runner = CliRunner()
    rocket = os.path.join(SAMPLES, "rocket.jpg")
    by_arg = runner.invoke(app, ["ground", rocket, "--model", tiny_model, "--max-new-tokens", "3", "-q"])
    listing = tmp_path / "list.txt"
    listing.write_text(rocket + "\n")
    by_file = runner.invoke(app, ["ground", str(listing), "--model", tiny_model, "--max-new-tokens", "3", "-q"])
    by_stdin = runner.invoke(
        app, ["ground", "-", "--model", tiny_model, "--max-new-tokens", "3", "-q"], input=rocket + "\n"
    )
    outputs = []
    for result in (by_arg, by_file, by_stdin):
        assert result.exit_code == 0, result.output
        (row,) = [json.loads(line) for line in result.stdout.splitlines()]
        row.pop("seconds")
        outputs.append(row)
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0]["path"] == rocket and outputs[0]["width"] == 640


def test_help_ends_with_an_example():
    result = CliRunner().invoke(app, ["ground", "--help"])
    assert result.exit_code == 0 and "Example: kosmos ground" in result.stdout


def test_help_does_not_import_torch():
    code = (
        "import sys; from typer.testing import CliRunner; from kosmos_cli.cli import app; "
        "CliRunner().invoke(app, ['ground', '--help']); print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip() == "False False", proc.stderr
