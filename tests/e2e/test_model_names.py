"""The same local model named two ways (relative, absolute, through a link) is one model: a rerun redoes nothing.
Records name a local folder by its real path; records written before that, with the name as given, still match."""

import json
import os
import shutil

from tests.helpers import ROOT, SHAPES_MODEL, kosmos

RELATIVE = os.path.relpath(SHAPES_MODEL, ROOT)  # tests/fixtures/kosmos2-shapes


def _ground(photos, out, model):
    result = kosmos("ground", str(photos), "--out", str(out), model=model)
    assert result.exit_code == 0, result.output
    return result.stderr


def _rows(out):
    return [json.loads(line) for line in open(out, encoding="utf-8")]


def test_relative_then_absolute_then_through_a_link_redoes_nothing(image_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "r.jsonl"
    _ground(image_dir, out, RELATIVE)
    assert {r["model"] for r in _rows(out)} == {os.path.realpath(SHAPES_MODEL)}
    os.symlink(SHAPES_MODEL, tmp_path / "current-model")
    for name in (os.path.abspath(RELATIVE), str(tmp_path / "current-model"), "./" + RELATIVE):
        stderr = _ground(image_dir, out, name)
        assert "other settings" not in stderr, (name, stderr)
        assert "0 done, 0 failed, 4 skipped" in stderr, (name, stderr)


def test_records_written_with_the_old_relative_spelling_still_match(image_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "r.jsonl"
    _ground(image_dir, out, RELATIVE)
    old = [{**r, "model": RELATIVE} for r in _rows(out)]  # as kosmos wrote them before: the name as given
    out.write_text("".join(json.dumps(r) + "\n" for r in old))
    stderr = _ground(image_dir, out, SHAPES_MODEL)
    assert "other settings" not in stderr and "0 done, 0 failed, 4 skipped" in stderr, stderr


def test_another_folder_is_another_model(image_dir, tmp_path):
    out = tmp_path / "r.jsonl"
    _ground(image_dir, out, SHAPES_MODEL)
    copy = shutil.copytree(SHAPES_MODEL, tmp_path / "copy")
    stderr = _ground(image_dir, out, str(copy))
    assert "4 records were made with other settings (model): redone" in stderr, stderr
    assert {r["model"] for r in _rows(out)} == {os.path.realpath(copy)}
