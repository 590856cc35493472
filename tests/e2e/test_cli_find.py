"""`kosmos find` through typer's CliRunner: input and phrases as arguments, manifest file and stdin."""

import json

import pytest
from PIL import Image

from kosmos_cli.output.reader import read_records
from tests.helpers import kosmos, one_error_line, rows_of


@pytest.fixture
def images(tmp_path):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (160, 120), (200, 40, 40)).save(tmp_path / "photos" / "a.png")
    Image.new("RGB", (120, 160), (40, 40, 200)).save(tmp_path / "photos" / "b.png")
    return tmp_path


def test_image_and_phrases_as_arguments(images, tiny_model):
    result = kosmos("find", str(images / "photos" / "a.png"), "a red car", "a dog", model=tiny_model)
    assert result.exit_code == 0, result.output
    rows = rows_of(result)
    assert [r["phrase"] for r in rows] == ["a red car", "a dog"]
    assert all(r["status"] == "ok" and r["boxes"] == [] and r["boxes_px"] == [] for r in rows)
    assert "kosmos find finished: 2 done, 0 failed, 0 skipped" in result.stderr


def test_a_folder_and_a_glob(images, tiny_model):
    folder = kosmos("find", str(images / "photos"), "a dog", model=tiny_model)
    pattern = kosmos("find", str(images / "photos" / "*.png"), "a dog", model=tiny_model)
    for result in (folder, pattern):
        assert result.exit_code == 0, result.output
        assert sorted(r["path"].rsplit("/", 1)[1] for r in rows_of(result)) == ["a.png", "b.png"]


def test_manifest_to_jsonl_file(images, tiny_model):
    queries = images / "queries.jsonl"
    queries.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"path": "photos/a.png", "phrase": "a red circle"},
                {"path": "photos/a.png", "phrase": "a blue square"},
                {"path": "photos/b.png", "phrase": "a dog"},
                {"path": "photos/b.png"},
            ]
        )
    )
    out = images / "found.jsonl"
    result = kosmos("find", str(queries), "--out", str(out), model=tiny_model)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    rows = list(read_records(str(out)))
    assert sorted((r["phrase"] or "", r["status"]) for r in rows) == [
        ("", "error"),
        ("a blue square", "ok"),
        ("a dog", "ok"),
        ("a red circle", "ok"),
    ]
    assert "3 done, 1 failed" in result.stderr


def test_stdin_paths_and_json_rows(images, tiny_model):
    paths = f"{images / 'photos' / 'a.png'}\n{images / 'photos' / 'b.png'}\n"
    by_paths = kosmos("find", "-", "a dog", model=tiny_model, input=paths)
    assert by_paths.exit_code == 0, by_paths.output
    assert [r["phrase"] for r in rows_of(by_paths)] == ["a dog", "a dog"]
    rows = [{"path": str(images / "photos" / "a.png"), "phrase": p} for p in ("a dog", "a cat")]
    by_json = kosmos("find", "-", model=tiny_model, input="".join(json.dumps(r) + "\n" for r in rows))
    assert by_json.exit_code == 0, by_json.output
    assert [r["phrase"] for r in rows_of(by_json)] == ["a dog", "a cat"]


def test_usage_errors(images):
    image = str(images / "photos" / "a.png")
    one_error_line(kosmos("find", image), 2, "kosmos find needs phrases")
    one_error_line(kosmos("find", image, "a dog", "  "), 2, "phrase 2 ('  ') cannot be used")
    one_error_line(kosmos("find", str(images / "nope.png"), "a dog"), 2, "input not found")
    one_error_line(kosmos("find", image, "a dog", "--out", "-", "--format", "parquet"), 2, "JSONL only")
    one_error_line(kosmos("find", image, "a dog", "--batch-size", "0"), 2, "--batch-size")
    assert kosmos("find").exit_code == 2


def test_help_ends_with_an_example():
    result = kosmos("find", "--help")
    assert result.exit_code == 0 and 'Example: kosmos find photo.jpg "a red car" "a dog"' in result.stdout
