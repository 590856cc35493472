"""File names that are not UTF-8, lone surrogates and NUL bytes: every run finishes, and a rerun finds them done."""

import io
import json
import os

import pytest
from PIL import Image

import kosmos_cli
from kosmos_cli import tasks
from kosmos_cli.inputs.images import file_stat, load_image
from kosmos_cli.inputs.names import clean, recorded
from kosmos_cli.inputs.sources import iter_items
from tests.helpers import kosmos, rows_of

LATIN1 = os.fsdecode(b"caf\xe9.png")  # 'caf\udce9.png': how Python holds a name that is not UTF-8


@pytest.mark.parametrize(
    "text, want",
    [
        ("plain.png", "plain.png"),
        ("unicodé ✓.png", "unicodé ✓.png"),
        (LATIN1, "caf\\xe9.png"),
        ("a\ud800b", "a\\ud800b"),
        ("a\x00b", "a\x00b"),  # valid text: JSON and Parquet hold it
    ],
)
def test_recorded(text, want):
    assert recorded(text) == want
    assert recorded(recorded(text)) == want  # a recorded key is its own key
    want.encode("utf-8")


def test_clean_reaches_keys_and_nested_values():
    assert clean({LATIN1: [LATIN1, 1, None], "x": {"y": "\udcff"}}) == {
        "caf\\xe9.png": ["caf\\xe9.png", 1, None],
        "x": {"y": "\\xff"},
    }


def test_keys_of_raw_and_recorded_names_agree():
    assert tasks.get("ground").key({"path": LATIN1}) == tasks.get("ground").key({"path": "caf\\xe9.png"})
    assert tasks.get("find").key({"path": LATIN1, "phrase": "\udce9"}) == tasks.get("find").key(
        {"path": "caf\\xe9.png", "phrase": "\\xe9"}
    )


def test_nul_bytes_and_lone_surrogates_in_paths_are_errors_not_exceptions(tmp_path):
    assert file_stat("a\x00b.png") == (None, None)
    assert "NUL" in load_image("a\x00b.png").error
    assert "not valid Unicode" in load_image(str(tmp_path / "a\ud800.png")).error
    items = list(iter_items(["-"], stdin=io.StringIO("a\x00b.png\nc\ud800.png\n")))
    assert [i.path for i in items] == ["a\x00b.png", "c\ud800.png"]


@pytest.fixture
def odd_folder(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    for name in (LATIN1, "ok.png"):
        Image.new("RGB", (32, 32), (200, 10, 10)).save(os.path.join(str(folder), name), format="PNG")
    return folder


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_a_name_that_is_not_utf8_is_recorded_escaped_and_done_once(tmp_path, tiny_engine, odd_folder, fmt):
    out = str(tmp_path / f"r.{fmt}")
    manifest = tmp_path / "m.txt"  # a listing with the raw bytes, as `ls > m.txt` writes it
    manifest.write_bytes(os.fsencode(os.path.join(str(odd_folder), LATIN1)) + b"\n")
    jsonl = tmp_path / "m.jsonl"  # a lone surrogate and a NUL in a JSON manifest
    jsonl.write_text('{"path": "x\\ud800.png", "label": "\\ud800"}\n{"path": "y\\u0000.png"}\n')
    first = kosmos_cli.ground([str(odd_folder), str(manifest), str(jsonl)], out, engine=tiny_engine, batch_size=2)
    assert (first.done, first.failed) == (2, 2)
    rows = {r["path"]: r for r in kosmos_cli.read_records(out)}
    escaped = os.path.join(str(odd_folder), "caf\\xe9.png")
    assert rows[escaped]["status"] == "ok"  # opened by its real name, recorded escaped
    assert rows[os.path.join(str(tmp_path), "x\\ud800.png")]["label"] == "\\ud800"
    assert "NUL" in rows[os.path.join(str(tmp_path), "y\x00.png")]["error"]
    again = kosmos_cli.ground([str(odd_folder), str(manifest), str(jsonl)], out, engine=tiny_engine, prune=True)
    assert (again.done, again.failed, again.skipped) == (0, 0, 4)
    assert sorted(r["path"] for r in kosmos_cli.read_records(out)) == sorted(rows)


def test_stdin_bytes_that_are_not_utf8(tiny_model, odd_folder):
    raw = os.fsencode(os.path.join(str(odd_folder), LATIN1))
    result = kosmos("ground", "-", "-q", model=tiny_model, input=raw + b"\n" + b"bad\x00name.png\n")
    assert result.exit_code == 0, result.output
    rows = {r["path"]: r for r in rows_of(result)}
    assert rows[os.path.join(str(odd_folder), "caf\\xe9.png")]["status"] == "ok"
    assert "NUL" in rows["bad\x00name.png"]["error"]


def test_non_utf8_bytes_in_csv_and_jsonl_manifests_are_read_as_file_names(tmp_path, odd_folder):
    raw = os.fsencode(os.path.join(str(odd_folder), LATIN1))
    (tmp_path / "m.csv").write_bytes(b"path,label\n" + raw + b",caf\xe9\n")
    (tmp_path / "m.jsonl").write_bytes(b'{"path": "' + raw + b'", "label": "caf\xe9"}\n')
    for name in ("m.csv", "m.jsonl"):
        (item,) = iter_items([str(tmp_path / name)])
        assert item.path == os.fsdecode(raw) and os.path.exists(item.path)
        assert clean(item.extra) == {"label": "caf\\xe9"}


def test_json_text_is_recorded_the_same_way(tmp_path):
    from kosmos_cli.output.reader import read_records
    from kosmos_cli.output.store import Store
    from kosmos_cli.tasks import GroundRecord

    for fmt in ("parquet", "jsonl"):
        out = str(tmp_path / f"r.{fmt}")
        store = Store(out, fmt, "ground")
        store.sink().write([GroundRecord(path=LATIN1, extra={"x": 1}), GroundRecord(path="b", extra={"x": ["\udce9"]})])
        store.compact()
        got = {r["path"]: r["x"] for r in read_records(out)}
        if fmt == "parquet":
            got = {p: json.loads(v) for p, v in got.items()}
        assert got == {"caf\\xe9.png": 1, "b": ["\\xe9"]}


def test_draw_and_export_open_a_recorded_escaped_path_by_its_real_name(tmp_path, odd_folder):
    from kosmos_cli.tasks import FindRecord

    escaped = os.path.join(str(odd_folder), "caf\\xe9.png")  # as ground records it
    row = FindRecord(path=escaped, width=32, height=32, phrase="a dot", boxes_px=[[2, 2, 20, 20]], scores=[0.9])
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(row.to_dict()) + "\n")
    drawn = kosmos_cli.draw(str(results), str(tmp_path / "drawn"), html=True)
    assert (drawn.drawn, drawn.failed) == (1, 0)
    assert os.listdir(tmp_path / "drawn").count("caf\\xe9.png") == 1  # named as recorded: valid UTF-8
    assert "caf%5Cxe9.png" in (tmp_path / "drawn" / "index.html").read_text(encoding="utf-8")
    exported = kosmos_cli.export(str(results), "yolo", str(tmp_path / "yolo"))
    assert (exported.images, exported.failed) == (1, 0)
    link = tmp_path / "yolo" / "images" / "caf\\xe9.png"
    assert os.path.samefile(link, os.path.join(str(odd_folder), LATIN1))
    coco = kosmos_cli.export(str(results), "coco", str(tmp_path / "c.json"), root=str(odd_folder))
    assert coco.images == 1
    assert json.loads((tmp_path / "c.json").read_text())["images"][0]["file_name"] == "caf\\xe9.png"


def test_a_file_named_as_written_comes_first(tmp_path):
    from kosmos_cli.output.reader import locate

    real = tmp_path / LATIN1
    real.write_bytes(b"x")
    escaped = str(tmp_path / "caf\\xe9.png")
    assert locate(escaped, None) == str(real)
    (tmp_path / "caf\\xe9.png").write_bytes(b"y")  # a file whose name really is the escape: it is the one named
    assert locate(escaped, None) == escaped
