"""Every message on stderr is one line per message, whatever the file names hold; the reason for a non-zero exit
is never silenced."""

import json

import pytest

from cli_helpers import kosmos, rows_of
from conftest import make_images
from kosmos_cli.records import one_line, printable

SPOOF = "kosmos: error: spoof"


@pytest.mark.parametrize("text, shown", [
    ("plain é 東京", "plain é 東京"),
    ("a\nb", "a\\nb"),
    ("a\r\nb\tc", "a\\r\\nb\\tc"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("nul\x00del\x7fc1\x85\x9b", "nul\\x00del\\x7fc1\\x85\\x9b"),
    ("line\u2028para\u2029rtl\u202e", "line\\u2028para\\u2029rtl\\u202e"),
    ("bytes\udcff", "bytes\\xff"),
])
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
