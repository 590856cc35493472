"""`find -print0 | kosmos ground - --null`: NUL-separated paths on stdin, for ground, refer and find."""

import io
import os

import pytest
from PIL import Image

from kosmos_cli.inputs.sources import iter_items
from tests.helpers import kosmos, rows_of


@pytest.fixture
def odd_names(tmp_path):
    """Names a line-based listing cannot carry: a newline, leading spaces, bytes that are not UTF-8."""
    folder = tmp_path / "odd"
    folder.mkdir()
    names = ["two\nlines.png", "  spaced.png", os.fsdecode(b"caf\xe9.png")]
    for name in names:
        Image.new("RGB", (32, 32), (10, 200, 10)).save(os.path.join(str(folder), name), format="PNG")
    return [os.path.join(str(folder), n) for n in names]


def print0(paths):
    return b"".join(os.fsencode(p) + b"\0" for p in paths)


@pytest.mark.parametrize("flag", ["--null", "-0"])
def test_ground_reads_nul_separated_paths(tiny_model, odd_names, flag):
    result = kosmos("ground", "-", flag, "-q", model=tiny_model, input=print0(odd_names))
    assert result.exit_code == 0, result.output
    rows = rows_of(result)
    assert [r["path"] for r in rows] == [odd_names[0], odd_names[1], odd_names[2].replace("\udce9", "\\xe9")]
    assert all(r["status"] == "ok" for r in rows)


def test_refer_and_find_take_null_too(tiny_model, odd_names):
    refer = kosmos("refer", "-", "--box", "0,0,16,16", "--null", "-q", model=tiny_model, input=print0(odd_names[:2]))
    assert refer.exit_code == 0, refer.output
    assert [r["path"] for r in rows_of(refer)] == odd_names[:2]
    find = kosmos("find", "-", "a dog", "-0", "-q", model=tiny_model, input=print0(odd_names[:1]))
    assert find.exit_code == 0, find.output
    assert [(r["path"], r["phrase"]) for r in rows_of(find)] == [(odd_names[0], "a dog")]


def test_without_null_a_print0_listing_is_error_rows_that_say_so(tiny_model, odd_names):
    result = kosmos("ground", "-", "-q", model=tiny_model, input=print0(odd_names[1:2]) + b"\n")
    assert result.exit_code == 0, result.output
    (row,) = rows_of(result)
    assert row["status"] == "error" and "--null" in row["error"]


def test_iter_items_null_takes_each_path_as_it_is():
    text = 'a.png\0 b .png\0\0{"path": "c"}\0#d.png'  # no stripping, no JSON, no comments; empty ones skipped
    got = [i.path for i in iter_items(["-"], stdin=io.StringIO(text), null=True)]
    assert got == ["a.png", " b .png", '{"path": "c"}', "#d.png"]
