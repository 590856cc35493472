"""output/placement.py: where draw and export put each result's files; a name too long is shortened."""

import errno
import io
import json
import os
import tarfile

import pytest
from PIL import Image

import kosmos_cli
from kosmos_cli.output.placement import MAX_NAME, fit, write_error
from kosmos_cli.tasks import FindRecord

LONG = "k" * 300
DEEP = "/".join(["abcdefghij" * 20] * 30)  # 30 folders of 200 characters: 6000 characters, past PATH_MAX


@pytest.mark.parametrize(
    "layout",
    [LONG + ".png", "a/" + LONG + ".png", "é" * 200 + ".jpg", DEEP + "/x.png", "short/name.png", LONG],
)
def test_fit_keeps_each_name_within_the_limit_recognisable_and_unique(layout):
    fitted = fit(layout)
    parts = fitted.split("/")
    assert all(len(p.encode()) <= MAX_NAME for p in parts) and len(fitted.encode()) <= 1024
    assert os.path.splitext(fitted)[1] == os.path.splitext(layout)[1]
    assert parts[-1][:20] == layout.split("/")[-1][:20]  # recognisable: it starts as the name did
    if len(layout.encode()) <= 1024 and all(len(p.encode()) <= MAX_NAME for p in layout.split("/")):
        assert fitted == layout  # a name that fits is kept as it is
    else:
        assert fit(layout[:-5] + "z" + layout[-4:]) != fitted  # unique: another name, another short name


def test_write_errors_give_advice_that_fits_the_cause():
    full = write_error(OSError(errno.ENOSPC, "No space left on device"), "out/a.png", "--out-dir")
    assert "free some space" in str(full)
    long = write_error(OSError(errno.ENAMETOOLONG, "File name too long"), "out/a.png", "--out-dir")
    assert str(long) == "cannot write out/a.png: File name too long"
    denied = write_error(OSError(errno.EACCES, "Permission denied"), "out/a.png", "--out-dir")
    assert str(denied) == "cannot write out/a.png: Permission denied: choose another --out-dir or fix its permissions"


def shard_with_long_keys(tmp_path):
    """shards/s.tar with three samples whose keys are too long for a file name: two share their first 300
    characters, one is 30 folders deep."""
    (tmp_path / "shards").mkdir()
    keys = [LONG + "1", LONG + "2", DEEP + "/x"]
    with tarfile.open(tmp_path / "shards" / "s.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for key in keys:
            data = io.BytesIO()
            Image.new("RGB", (32, 32), (128, 128, 128)).save(data, format="PNG")
            info = tarfile.TarInfo(key + ".png")
            info.size = len(data.getvalue())
            tar.addfile(info, io.BytesIO(data.getvalue()))
    rows = [
        FindRecord(
            path=str(tmp_path / "shards" / "s.tar") + "#" + key,
            width=32,
            height=32,
            phrase="a dot",
            boxes_px=[[2, 2, 20, 20]],
            scores=[0.9],
        ).to_dict()
        for key in keys
    ]
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(results)


def names_below(folder):
    return [os.path.relpath(os.path.join(d, f), folder) for d, _, files in os.walk(folder) for f in files]


def test_draw_and_export_shorten_names_too_long_for_the_file_system(tmp_path):
    results = shard_with_long_keys(tmp_path)
    drawn = kosmos_cli.draw(results, str(tmp_path / "drawn"), html=True)
    assert (drawn.drawn, drawn.failed) == (3, 0)
    images = [n for n in names_below(tmp_path / "drawn") if n.endswith(".png")]
    assert len(images) == 3 and all(os.path.basename(n).startswith(("k" * 100, "x")) for n in images)
    for to in ("yolo", "voc"):
        summary = kosmos_cli.export(results, to, str(tmp_path / to))
        assert (summary.images, summary.failed) == (3, 0)
    assert len([n for n in names_below(tmp_path / "yolo" / "labels")]) == 3
    assert len([n for n in names_below(tmp_path / "voc" / "Annotations")]) == 3


def test_a_remote_image_is_laid_out_below_its_host_without_its_credentials():
    from kosmos_cli.output.placement import remote_layout

    assert remote_layout("https://alice:s3cr3t@example.com:8443/a/b.jpg", None) == os.path.join(
        "example.com_8443", "a", "b.jpg"
    )
    signed = remote_layout("https://b.s3.amazonaws.com/k.png?X-Amz-Signature=abc123&v=2", None)
    assert "abc123" not in signed and signed.endswith(".png") and "Signature" in signed
