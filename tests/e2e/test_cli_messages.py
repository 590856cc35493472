"""Every message on stderr is one line per message, whatever the file names hold; the reason for a non-zero exit
is never silenced."""

import json

import pytest

from kosmos_cli.tasks.records import one_line, printable
from tests.helpers import kosmos, make_images, one_error_line, rows_of

SPOOF = "kosmos: error: spoof"


@pytest.mark.parametrize(
    "text, shown",
    [
        ("plain é 東京", "plain é 東京"),
        ("a\nb", "a\\nb"),
        ("a\r\nb\tc", "a\\r\\nb\\tc"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("nul\x00del\x7fc1\x85\x9b", "nul\\x00del\\x7fc1\\x85\\x9b"),
        ("line\u2028para\u2029rtl\u202e", "line\\u2028para\\u2029rtl\\u202e"),
        ("bytes\udcff", "bytes\\xff"),
    ],
)
def test_printable_escapes_control_characters(text, shown):
    assert printable(text) == shown


def test_one_line_collapses_whitespace_and_escapes_the_rest():
    assert one_line("a\n   b\x1b c") == "a b\\x1b c"


def test_a_file_name_with_a_newline_cannot_forge_a_line(tiny_model, tmp_path):
    photos = tmp_path / "photos"
    make_images(str(photos), sizes=((64, 48),))
    bad = photos / f"bad\n{SPOOF}.png"
    bad.write_bytes(b"")  # an empty file: its failure is reported with its name
    (photos / "esc\x1b[2J.png").write_bytes(b"")
    result = kosmos("ground", str(photos), model=tiny_model)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert not any(line.startswith(SPOOF) for line in lines), result.stderr
    assert all(line.startswith("kosmos") for line in lines), result.stderr
    assert "\x1b" not in result.stderr
    assert any("bad\\nkosmos: error: spoof.png: empty file" in line for line in lines), result.stderr
    paths = {row["path"] for row in rows_of(result)}
    assert str(bad) in paths  # the record keeps the real name


def test_a_warning_naming_such_a_file_is_one_line_too(tiny_model, tmp_path):
    make_images(str(tmp_path), sizes=((64, 48),))
    manifest = tmp_path / f"list\n{SPOOF}.jsonl"
    manifest.write_text(json.dumps({"path": "img_00.png"}) + "\nnot json\n")
    result = kosmos("ground", str(manifest), model=tiny_model)
    assert result.exit_code == 0, result.output
    assert not any(line.startswith(SPOOF) for line in result.stderr.splitlines()), result.stderr
    assert "not valid JSON" in result.stderr


@pytest.mark.parametrize("files", [[], ["a.HEIC", "b.avif", "notes.txt"]])
def test_inputs_without_images_say_so_in_one_warning(tiny_model, tmp_path, files):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in files:
        (photos / name).write_bytes(b"x")
    result = kosmos("ground", str(photos), model=tiny_model)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "no images found" in line]
    assert len(warnings) == 1 and warnings[0].startswith("kosmos: WARNING: no images found in "), result.stderr
    assert ".jpg" in warnings[0] and ".png" in warnings[0] and ".webp" in warnings[0]
    assert result.stderr.splitlines()[-1].startswith("kosmos ground finished: 0 done")


def test_inputs_without_images_fail_with_strict_even_when_quiet(tiny_model, tmp_path):
    (tmp_path / "empty").mkdir()
    quiet = kosmos("ground", str(tmp_path / "empty"), "-q", model=tiny_model)
    assert quiet.exit_code == 0 and quiet.stderr == ""
    strict = kosmos("ground", str(tmp_path / "empty"), "-q", "--strict", model=tiny_model)
    assert strict.exit_code == 1
    assert strict.stderr.splitlines() == ["kosmos: error: no images found (--strict)"]


def test_quiet_strict_still_says_why_it_exits_1(tiny_model, tmp_path):
    photos = tmp_path / "photos"
    make_images(str(photos), sizes=((64, 48),))
    (photos / "empty.png").write_bytes(b"")
    (photos / "text.jpg").write_text("not an image")
    result = kosmos("ground", str(photos), "-q", "--strict", model=tiny_model)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["kosmos: error: 2 images failed (--strict)"]
    loud = kosmos("ground", str(photos), "--strict", "--out", str(tmp_path / "r.jsonl"), model=tiny_model)
    assert loud.exit_code == 1 and loud.stderr.splitlines()[-1] == "kosmos: error: 2 images failed (--strict)"


def test_find_strict_counts_phrases(tiny_model, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    result = kosmos("find", str(tmp_path / "empty.png"), "a dog", "a cat", "-q", "--strict", model=tiny_model)
    assert result.stderr.splitlines() == ["kosmos: error: 2 phrases failed (--strict)"]


def test_prune_over_inputs_that_name_nothing_is_refused(tiny_model, tmp_path):
    """An emptied folder (the disk is not mounted tonight) or an empty stdin with --prune: one line, exit 2, the
    output untouched."""
    photos = tmp_path / "photos"
    make_images(str(photos), sizes=((64, 48), (48, 64)))
    out = tmp_path / "results.jsonl"
    assert kosmos("ground", str(photos), "--out", str(out), model=tiny_model).exit_code == 0
    before = out.read_text()
    for path in photos.iterdir():
        path.unlink()
    for args, stdin in (([str(photos)], None), (["-"], "")):
        result = kosmos("ground", *args, "--out", str(out), "--prune", model=tiny_model, input=stdin)
        where = "stdin" if stdin is not None else str(photos)
        one_error_line(result, 2, f"no images found in {where}: ")
        assert f"--prune refused: it would remove every record of {out}" in result.stderr
        assert out.read_text() == before
