"""`kosmos draw` and `kosmos ground --draw` through typer's CliRunner; draw must start without torch."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from kosmos_cli.drawing import PALETTE
from kosmos_cli.output.formats import records_table
from kosmos_cli.tasks import Find, FindRecord
from tests.helpers import ROOT, one_error_line

runner = CliRunner()
GREY = (128, 128, 128)


@pytest.fixture
def results(tmp_path):
    """A find results file: two ok records of photos/a.png, one of photos/sub/b.png, one error record."""
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png"):
        Image.new("RGB", (200, 150), GREY).save(photos / name)
    rows = [
        FindRecord(
            path=str(photos / "a.png"), width=200, height=150, phrase="a dog", boxes_px=[[20, 30, 120, 110]]
        ).to_dict(),
        FindRecord(path=str(photos / "a.png"), width=200, height=150, phrase="a cat").to_dict(),
        FindRecord(
            path=str(photos / "sub" / "b.png"), width=200, height=150, phrase="a dog", boxes_px=[[100, 20, 190, 140]]
        ).to_dict(),
        FindRecord(path=str(photos / "gone.png"), phrase="a dog", status="error", error="file not found").to_dict(),
    ]
    path = tmp_path / "found.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def invoke(*args):
    from kosmos_cli.cli import app

    return runner.invoke(app, list(args))


def test_draw_a_jsonl_results_file(results, tmp_path):
    out = tmp_path / "annotated"
    result = invoke("draw", str(results), "--out-dir", str(out))
    assert result.exit_code == 0, result.output
    written = result.stdout.splitlines()
    assert [os.path.relpath(p, out) for p in written] == ["a.png", "a-2.png", "sub/b.png"]
    assert all(os.path.isfile(p) for p in written)
    assert result.stderr.splitlines()[-1].startswith(
        "kosmos draw finished: 3 drawn, 1 skipped (error records), 0 failed in "
    )
    with Image.open(out / "a.png") as img:
        assert img.getpixel((20 + 2, 70)) == PALETTE[0]
    assert not (out / "index.html").exists()


def test_draw_a_parquet_file_with_a_gallery(results, tmp_path):
    rows = [
        FindRecord(
            **{k: v for k, v in r.items() if k in ("path", "width", "height", "status", "error", "phrase", "boxes_px")}
        )
        for r in map(json.loads, results.read_text().splitlines())
    ]
    parquet = tmp_path / "found.parquet"
    pq.write_table(records_table(rows, Find), parquet)
    out = tmp_path / "gallery"
    result = invoke("draw", str(parquet), "-o", str(out), "--html", "-q")
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and len(result.stdout.splitlines()) == 3
    page = (out / "index.html").read_text()
    assert page.count("<figure>") == 3 and 'href="sub/b.png"' in page and "not found" in page


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"path": "a.png", "phrase": "a dog"}\n', "is not a kosmos record"),
        ("hello\n", "line 1 is not JSON"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not a results file of kosmos"),
    ],
)
def test_a_file_that_is_not_ours_is_one_line_and_exit_2(tmp_path, content, message):
    bad = tmp_path / ("bad.jsonl" if isinstance(content, str) else "bad.png")
    bad.write_bytes(content.encode() if isinstance(content, str) else content)
    result = invoke("draw", str(bad), "--out-dir", str(tmp_path / "out"))
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("kosmos: error: ") and message in line
    assert result.stdout == "" and not (tmp_path / "out").exists()


def test_usage_errors(results, tmp_path):
    missing = invoke("draw", str(tmp_path / "nope.jsonl"), "--out-dir", str(tmp_path / "out"))
    assert missing.exit_code == 2 and "results file not found" in missing.stderr
    no_out = invoke("draw", str(results))
    assert no_out.exit_code == 2 and "--out-dir" in no_out.output
    same = invoke("draw", str(results), "--out-dir", str(tmp_path / "photos"))
    assert same.exit_code == 2 and "folder of the images" in same.stderr


def _lib(tmp_path):
    """lib/x.png and an original lib/sub/x.png whose path is where lib/x.png would be drawn in lib/sub."""
    lib = tmp_path / "lib"
    (lib / "sub").mkdir(parents=True)
    Image.new("RGB", (64, 48), GREY).save(lib / "x.png")
    Image.new("RGB", (64, 48), (0, 90, 200)).save(lib / "sub" / "x.png")
    rows = [
        FindRecord(path=str(lib / name), width=64, height=48, phrase="a dog", boxes_px=[[4, 4, 40, 40]]).to_dict()
        for name in ("x.png", "sub/x.png")
    ]
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return lib, results


def test_no_draw_writes_over_an_original_in_a_folder_kosmos_did_not_draw(tmp_path):
    lib, results = _lib(tmp_path)
    before = {p: p.read_bytes() for p in lib.rglob("*") if p.is_file()}
    refused = invoke("draw", str(results), "-o", str(lib / "sub"))
    one_error_line(
        refused,
        2,
        f"--out-dir {lib / 'sub'} already holds files that kosmos did not draw (it has no "
        ".kosmos-drawn): name a new or empty folder",
    )
    grounding = invoke(
        "ground", str(lib), "--out", str(tmp_path / "g.jsonl"), "--draw", str(lib / "sub"), "--model", "/no/such/model"
    )  # refused before the model would load
    one_error_line(grounding, 2, f"--draw {lib / 'sub'} already holds files that kosmos did not draw")
    assert {p: p.read_bytes() for p in lib.rglob("*") if p.is_file()} == before  # nothing written, nothing marked
    assert not (tmp_path / "g.jsonl").exists()


def test_a_new_or_empty_folder_is_marked_as_ours_and_drawn_into_again(tmp_path):
    lib, results = _lib(tmp_path)
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "new"):
        for _ in range(2):  # the second draw writes over what the first drew: the folder is ours
            result = invoke("draw", str(results), "-o", str(folder))
            assert result.exit_code == 0, result.output
            assert sorted(os.listdir(folder)) == [".kosmos-drawn", "sub", "x.png"]
            assert "kosmos drew the images in this folder" in (folder / ".kosmos-drawn").read_text()


def test_ground_with_draw(tmp_path, tiny_model):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.jpg"):
        Image.new("RGB", (96, 64), GREY).save(photos / name)
    out = tmp_path / "annotated"
    result = invoke(
        "ground", str(photos), "--out", "-", "--draw", str(out), "--model", tiny_model, "--max-new-tokens", "3"
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]  # stdout still carries the records only
    assert len(rows) == 2
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.*")) == [".kosmos-drawn", "a.png", "sub/b.jpg"]
    assert "kosmos draw finished: 2 drawn, 0 skipped" in result.stderr
    assert "kosmos ground finished: 2 done" in result.stderr
    again = invoke("ground", str(photos), "--out", "-", "--draw", str(photos), "--model", tiny_model)
    assert again.exit_code == 2 and "folder of the images" in again.stderr


def test_help_ends_with_an_example():
    result = invoke("draw", "--help")
    assert result.exit_code == 0 and "Example: kosmos draw results.parquet --out-dir annotated/" in result.stdout
    assert "--draw" in invoke("ground", "--help").stdout


def test_draw_starts_without_torch(results, tmp_path):
    code = (
        "import sys; from kosmos_cli.cli import main; sys.argv = ['kosmos', 'draw', sys.argv[1], '--out-dir', "
        "sys.argv[2], '-q']\ntry:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print(code, 'torch' in sys.modules, 'transformers' in sys.modules, file=sys.stderr)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(results), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.stderr.strip() == "0 False False", proc.stderr
    assert len(proc.stdout.splitlines()) == 3


def test_an_image_gone_since_is_a_warning_and_strict_exits_1(results, tmp_path):
    os.remove(tmp_path / "photos" / "sub" / "b.png")
    for _ in range(2):  # warnings reach this invocation's stderr, not an earlier one's
        result = invoke("draw", str(results), "--out-dir", str(tmp_path / "out"))
        assert result.exit_code == 0, result.output
        assert "kosmos: WARNING: cannot draw " in result.stderr and "b.png: file not found" in result.stderr
        assert "2 drawn, 1 skipped (error records), 1 failed" in result.stderr
    assert invoke("draw", str(results), "--out-dir", str(tmp_path / "out"), "--strict").exit_code == 1


def test_a_junk_line_is_warned_skipped_and_counted_as_ground_does(results, tmp_path):
    lines = results.read_text().splitlines()
    lines[1:1] = ['{"path": "x.png", "truncated', '{"path": "notes.png", "comment": "mine"}']
    results.write_text("\n".join(lines) + "\n")
    result = invoke("draw", str(results), "--out-dir", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 3  # every usable record drawn
    warned = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert warned == [
        f"kosmos: WARNING: {results} line 2 skipped: not JSON",
        f"kosmos: WARNING: {results} line 3 skipped: not a kosmos record: no status, caption, box_px or phrase",
    ]
    assert "3 drawn, 1 skipped (error records), 0 failed, 2 unusable in " in result.stderr
    assert invoke("draw", str(results), "--out-dir", str(tmp_path / "out"), "--strict").exit_code == 1


def test_records_edited_by_hand_are_each_a_warning_and_the_rest_is_drawn(tmp_path):
    from tests.unit.test_reader import BAD_RECORDS, ground_row

    Image.new("RGB", (200, 100), GREY).save(tmp_path / "a.png")
    rows = [ground_row()] + [row for row, _ in BAD_RECORDS.values()] + [ground_row()]
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = invoke("draw", str(results), "-o", str(tmp_path / "out"), "--html")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2
    warned = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert warned == [
        f"kosmos: WARNING: {results} line {n} skipped: {why}" for n, (_, why) in enumerate(BAD_RECORDS.values(), 2)
    ]
    assert f"2 drawn, 0 skipped (error records), 0 failed, {len(BAD_RECORDS)} unusable in " in result.stderr


def test_a_folder_as_results_is_one_line_and_exit_2(tmp_path):
    one_error_line(invoke("draw", str(tmp_path), "-o", str(tmp_path / "out")), 2, f"{tmp_path} is a folder")
    assert not (tmp_path / "out").exists()
