"""The export registry is the only extension point: a toy format, registered here and nowhere else, runs end to end
through the command line and the Python API, with its help, its option checks and kosmos view's export line."""

from __future__ import annotations

import csv
import os

import pytest
from typer.testing import CliRunner

import kosmos_cli
from kosmos_cli import exports
from kosmos_cli.cli import app
from kosmos_cli.exports.base import Writer
from kosmos_cli.output.atomic import AtomicFile
from tests.unit.test_reader import ground_row, write_jsonl


class Tsv(Writer):
    """One line per box: image, class, x1, y1, x2, y2."""

    name = "tsv"
    title = "tab-separated boxes"
    default_out = "boxes.tsv"
    out_kind = "a .tsv file"
    takes = ("copy_images",)  # a toy that says it takes yolo's option, to show the checks follow the registry

    @classmethod
    def ours(cls, path: str) -> bool:
        with open(path, encoding="utf-8") as f:
            return f.readline().startswith("image\tclass")

    def __init__(self, out, options):
        super().__init__(out, options)
        self._file = AtomicFile(out)
        self._rows = csv.writer(self._file.file, delimiter="\t", lineterminator="\n")
        self._rows.writerow(["image", "class", "x1", "y1", "x2", "y2"])

    def add(self, image, labels, names):
        for label in labels:
            self._rows.writerow([image.name, names[label.cls], *label.box])
        return None

    def close(self, classes):
        self._file.commit()

    def discard(self):
        self._file.discard()


@pytest.fixture
def registered():
    exports.register(Tsv)
    yield Tsv
    del exports.FORMATS["tsv"]


@pytest.fixture
def results(tmp_path):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"")  # export reads the records, not the pixels, for a one-file format
    return write_jsonl(tmp_path / "r.jsonl", [ground_row(str(tmp_path / "a.png")), ground_row(str(tmp_path / "b.png"))])


def read_tsv(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t"))


def test_a_registered_format_exports_through_the_api(registered, results, tmp_path):
    out = str(tmp_path / "boxes.tsv")
    summary = kosmos_cli.export(results, "tsv", out)
    rows = read_tsv(out)
    assert (summary.images, summary.boxes, summary.to) == (2, 6, "tsv")
    assert rows[0] == ["image", "class", "x1", "y1", "x2", "y2"] and len(rows) == 7
    assert {row[1] for row in rows[1:]} == {"dog", "cat"}


def test_a_registered_format_exports_through_the_command_line(registered, results, tmp_path):
    out = str(tmp_path / "boxes.tsv")
    result = CliRunner().invoke(app, ["export", results, "--to", "tsv", out])
    assert result.exit_code == 0, result.output
    assert len(read_tsv(out)) == 7 and "-> " + out + " (tsv)" in result.stderr


def test_its_options_are_checked_from_the_registry(registered, results, tmp_path):
    with pytest.raises(kosmos_cli.UsageError, match="for --to yolo or tsv only"):
        kosmos_cli.export(results, "coco", str(tmp_path / "c.json"), copy_images=True)
    kosmos_cli.export(results, "tsv", str(tmp_path / "t.tsv"), copy_images=True)  # it takes it: no error
    assert os.path.exists(tmp_path / "t.tsv")


def test_the_help_and_the_view_offer_come_from_the_registry(registered):
    assert exports.formats_help() == "coco, yolo, voc, labelstudio or tsv"
    assert "tsv: a .tsv file" in exports.out_help()
    from kosmos_cli.view.export import FORMATS as offered

    assert offered["tsv"].default_out == "boxes.tsv"


def test_an_unknown_format_names_the_registered_ones(results, tmp_path):
    with pytest.raises(kosmos_cli.UsageError, match="use one of coco, yolo, voc, labelstudio"):
        kosmos_cli.export(results, "csv", str(tmp_path / "x"))
