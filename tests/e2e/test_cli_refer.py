"""`kosmos refer` through typer's CliRunner: box argument, manifest file and stdin; exit codes and messages."""

import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.helpers import kosmos, one_error_line, rows_of


@pytest.fixture
def images(tmp_path):
    Image.new("RGB", (320, 200), (200, 40, 40)).save(tmp_path / "a.png")
    Image.new("RGB", (100, 100), (40, 40, 200)).save(tmp_path / "b.jpg")
    return tmp_path


def test_boxes_on_the_command_line(images, tiny_model):
    result = kosmos("refer", str(images / "a.png"), "--box", "10,20,200,180", "--box", "0,0,320,200", model=tiny_model)
    assert result.exit_code == 0, result.output
    rows = rows_of(result)
    assert [r["box_px"] for r in rows] == [[10, 20, 200, 180], [0, 0, 320, 200]]
    assert all(r["status"] == "ok" and isinstance(r["description"], str) and len(r["box_model_px"]) == 4 for r in rows)
    assert "kosmos refer finished: 2 done, 0 failed, 0 skipped" in result.stderr


def test_manifest_to_parquet(images, tiny_model):
    (images / "regions.csv").write_text(
        "path,x1,y1,x2,y2,id\na.png,10,20,200,180,1\na.png,0,0,50,50,2\nb.jpg,0,0,100,100,3\nb.jpg,0,0,101,100,4\n"
    )
    out = images / "regions.parquet"
    result = kosmos("refer", str(images / "regions.csv"), "--out", str(out), model=tiny_model)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    rows = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert [rows[i]["status"] for i in "1234"] == ["ok", "ok", "ok", "error"]  # CSV values are text
    assert "outside the 100x100 image" in rows["4"]["error"]
    assert "3 done, 1 failed" in result.stderr and "kosmos: failed: " in result.stderr
    strict = kosmos(
        "refer", str(images / "regions.csv"), "--out", str(out), "--strict", "--retry-failed", model=tiny_model
    )
    assert strict.exit_code == 1


def test_stdin_paths_and_json_rows(images, tiny_model):
    by_paths = kosmos(
        "refer", "-", "--box", "0,0,50,50", model=tiny_model, input=f"{images / 'a.png'}\n{images / 'b.jpg'}\n"
    )
    assert by_paths.exit_code == 0, by_paths.output
    assert [r["box_px"] for r in rows_of(by_paths)] == [[0, 0, 50, 50]] * 2
    rows = [{"path": str(images / "a.png"), "x1": 0.5, "y1": 0, "x2": 1, "y2": 0.5}]
    by_json = kosmos("refer", "-", "--normalized", model=tiny_model, input="".join(json.dumps(r) + "\n" for r in rows))
    assert by_json.exit_code == 0, by_json.output
    (row,) = rows_of(by_json)
    assert row["box_px"] == [160, 0, 320, 100]


@pytest.mark.parametrize(
    "box, message",
    [
        ("10,20,5,30", "--box: box 10,20,5,30 is empty: x2 must be greater than x1"),
        ("10,20,30,20", "is empty"),
        ("10,20,30", "--box: a box is 4 numbers x1,y1,x2,y2, got 3"),
        ("10,20,30,40,50", "got 5"),
        ("a,b,c,d", "got a,b,c,d"),
        ("0,0,400,100", "--box 0,0,400,100 is outside"),
        ("0.1,0.1,0.5,0.5", "smaller than a pixel: for 0-1 boxes pass --normalized"),
    ],
)
def test_bad_boxes_are_usage_errors_and_nothing_is_written(images, tiny_model, box, message):
    out = images / "r.jsonl"
    result = kosmos(
        "refer", str(images / "a.png"), "--box", "0,0,10,10", "--box", box, "--out", str(out), model=tiny_model
    )
    one_error_line(result, 2, message)
    assert not out.exists() and not (images / "r.jsonl.lock").exists()


def test_refer_needs_boxes_or_a_manifest(images):
    one_error_line(kosmos("refer", str(images / "a.png")), 2, "kosmos refer needs boxes: pass --box")
    one_error_line(kosmos("refer", str(images / "nope.png"), "--box", "1,1,5,5"), 2, "input not found")
    one_error_line(kosmos("refer", str(images / "a.png"), "--box", "1,1,5,5", "--normalized"), 2, "not normalised")


def test_help_ends_with_an_example():
    result = kosmos("refer", "--help")
    assert result.exit_code == 0 and "Example: kosmos refer photo.jpg --box 10,20,200,300" in result.stdout
    assert "--normalized" in result.stdout and "--box" in result.stdout
