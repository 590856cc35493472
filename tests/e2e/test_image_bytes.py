"""Parquet with the images in it (inputs/locations/: table.py, members.py): img2dataset's output (a binary `jpg`
column keyed on `key`) and a Hugging Face Image feature (a struct with `bytes`), grounded by the trained shapes
model: records named `TABLE#KEY` with right boxes and the other columns carried, a null image as an error record,
resume (after a kill too), and draw and export on the results."""

import io
import json
import logging
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapes  # tools/shapes.py

from kosmos_cli import ground, read_records
from kosmos_cli.inputs.listing import Columns, Unlisted
from kosmos_cli.inputs.locations import FetchOptions, Unreadable
from kosmos_cli.inputs.locations.members import read_member
from kosmos_cli.inputs.sources import iter_items
from kosmos_cli.output.store import Store
from tests.helpers import SHAPES_MODEL, killed_after, kosmos, kosmos_process, one_error_line, rows_of

N = 8  # scenes; one more row failed to download (a null jpg)


def scene(rng, i):
    width, height = shapes.CLI_SIZES[i % len(shapes.CLI_SIZES)]
    img, objs = shapes.make_scene(rng, width, height)
    buf = io.BytesIO()
    if i % 3 == 2:
        img.save(buf, format="JPEG", quality=95)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue(), (width, height, objs)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """An img2dataset-shaped images.parquet, row groups of 3: -> (path, truth by key)."""
    rng, truth, rows = random.Random(31337), {}, []
    for i in range(N + 1):
        key = f"{i:09d}"
        if i == 4:
            rows.append(
                dict(key=key, jpg=None, caption="gone", url=f"http://x/{i}.jpg", width=None, height=None)
                | dict(original_width=None, original_height=None, status="failed_to_download")
                | dict(error_message="HTTP Error 404", sha256=None)
            )
            continue
        data, shown = scene(rng, i)
        truth[key] = shown
        rows.append(
            dict(key=key, jpg=data, caption=shapes.caption(shown[2]), url=f"http://x/{i}.jpg", width=shown[0])
            | dict(height=shown[1], original_width=shown[0] * 2, original_height=shown[1] * 2, status="success")
            | dict(error_message=None, sha256="ab" * 32)
        )
    path = tmp_path_factory.mktemp("img2dataset") / "images.parquet"
    schema = pa.schema(
        [
            ("key", pa.string()),
            ("jpg", pa.binary()),
            ("caption", pa.string()),
            ("url", pa.string()),
            ("width", pa.int64()),
            ("height", pa.int64()),
            ("original_width", pa.int64()),
            ("original_height", pa.int64()),
            ("status", pa.string()),
            ("error_message", pa.string()),
            ("sha256", pa.string()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=3)
    return str(path), truth


def model_args():
    return ["--model", SHAPES_MODEL, "--max-new-tokens", "48"]


def boxed(rows, truth, prefix):
    found = objects = 0
    for key, (width, height, objs) in truth.items():
        row = rows[prefix + key]
        assert row["status"] == "ok" and (row["width"], row["height"]) == (width, height), row
        found, objects = found + shapes.boxed(row["entities"], objs), objects + len(objs)
    return found, objects


@pytest.fixture(scope="module")
def grounded(table, tmp_path_factory):
    """`kosmos ground images.parquet --image-column jpg -o r.jsonl`: (results path, rows by path)."""
    path, _ = table
    out = str(tmp_path_factory.mktemp("out") / "r.jsonl")
    result = kosmos("ground", path, "--image-column", "jpg", "-o", out, "-b", "4", *model_args())
    assert result.exit_code == 0, result.output
    assert f"{N} done, 1 failed, 0 skipped" in result.stderr
    return out, {r["path"]: r for r in read_records(out)}


def test_rows_ground_to_records_named_by_table_and_key_with_right_boxes(grounded, table):
    path, truth = table
    _, rows = grounded
    assert sorted(rows) == sorted(f"{path}#{i:09d}" for i in range(N + 1))
    found, objects = boxed(rows, truth, f"{path}#")
    assert found / objects >= 0.75, f"{found}/{objects} objects boxed"
    row = rows[f"{path}#000000000"]
    # the other columns carried (ours kept under input_), never the image bytes
    assert row["key"] == "000000000" and row["url"] == "http://x/0.jpg" and "jpg" not in row
    assert row["input_caption"] == shapes.caption(truth["000000000"][2]) and row["input_status"] == "success"
    assert (row["input_width"], row["original_width"]) == (row["width"], row["width"] * 2)
    assert row["file_size"] > 0 and row["file_mtime"] is None
    failed = rows[f"{path}#000000004"]
    assert failed["status"] == "error" and failed["error"] == "the row has no image (its 'jpg' is null)"
    assert failed["error_message"] == "HTTP Error 404"


def test_a_second_run_skips_every_row(grounded, table):
    path, _ = table
    out, rows = grounded
    result = kosmos("ground", path, "--image-column", "jpg", "-o", out, *model_args())
    assert result.exit_code == 0, result.output
    assert f"0 done, 0 failed, {N + 1} skipped" in result.stderr
    assert {r["path"]: r for r in read_records(out)} == rows


def test_a_hugging_face_image_struct_keyed_on_another_column(table, shapes_engine, tmp_path):
    path, truth = table
    source = pq.read_table(path)
    images = [{"bytes": b, "path": f"{k}.png"} for k, b in zip(source["key"].to_pylist(), source["jpg"].to_pylist())]
    ids = [int(k) + 100 for k in source["key"].to_pylist()]
    hf = pa.table({"id": ids, "image": pa.array(images), "text": source["caption"]})
    hf_path = str(tmp_path / "train-00000-of-00001.parquet")
    pq.write_table(hf, hf_path)
    out = str(tmp_path / "r.parquet")
    summary = ground([hf_path], out, engine=shapes_engine, image_column="image", key_column="id")
    assert (summary.done, summary.failed) == (N, 1)
    rows = {r["path"]: r for r in read_records(out)}
    found, objects = boxed(rows, {str(int(k) + 100): v for k, v in truth.items()}, f"{hf_path}#")
    assert found / objects >= 0.75
    assert rows[f"{hf_path}#100"]["id"] == 100 and "image" not in rows[f"{hf_path}#100"]
    # draw finds a row by a key column that is not `key`, and the image column among several
    assert read_member(hf_path, "101", FetchOptions()) == source["jpg"][1].as_py()
    with pytest.raises(Unreadable, match="no row '7'"):
        read_member(hf_path, "7", FetchOptions())
    with pytest.raises(Unreadable, match="has no image"):
        read_member(hf_path, "104", FetchOptions())


def test_a_missing_image_or_key_column_is_one_line_naming_what_there_is(table, tmp_path):
    path, _ = table
    result = kosmos("ground", path, "--image-column", "image", *model_args())
    one_error_line(result, 2, "has no 'image' column (--image-column): its columns are 'key', 'jpg', 'caption'")
    result = kosmos("ground", path, "--image-column", "jpg", "--key-column", "id", *model_args())
    one_error_line(result, 2, "has no 'id' column to name each row: name one with --key-column")
    result = kosmos("ground", path, "--image-column", "caption", *model_args())
    one_error_line(result, 2, "the 'caption' column holds string, not image bytes")
    keyless = tmp_path / "keyless.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["key"]), keyless)
    result = kosmos("ground", str(keyless), "--image-column", "jpg", *model_args())
    one_error_line(result, 2, "has no 'key' column to name each row: name one with --key-column")


def test_rows_are_read_in_batches_never_the_whole_table(table, monkeypatch):
    from kosmos_cli.inputs.locations import table as table_module
    from kosmos_cli.inputs.sources import Columns

    path, _ = table
    sizes = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        sizes.append(kwargs.get("batch_size"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    monkeypatch.setattr(table_module, "BATCH_ROWS", 2)
    items = list(table_module.iter_table(path, Columns(image="jpg")))
    assert len(items) == N + 1 and sizes == [2]


def test_every_row_is_recorded_or_counted_and_named_in_one_line(tmp_path, caplog):
    """Rows that repeat the key of an earlier row (another image under the same name): the first of each key is
    read, the others are counted in one warning naming the first of them; a row without a key is warned about
    and counted as not seen (so --prune removes nothing after it)."""
    path = tmp_path / "t.parquet"
    rows = [("a", b"1"), ("b", b"2"), ("a", b"3"), (None, b"4"), ("a", None), ("c", b"5")]
    pq.write_table(pa.table({"key": [k for k, _ in rows], "jpg": [d for _, d in rows]}), path)
    unseen = Unlisted()
    with caplog.at_level(logging.WARNING, logger="kosmos_cli"):
        items = list(iter_items([str(path)], columns=Columns(image="jpg"), unseen=unseen))
    assert [(i.path, i.data) for i in items] == [(f"{path}#a", b"1"), (f"{path}#b", b"2"), (f"{path}#c", b"5")]
    repeats = [r.getMessage() for r in caplog.records if "repeat" in r.getMessage()]
    assert len(repeats) == 1 and repeats[0].startswith("2 rows or samples") and f"{path}#a" in repeats[0], repeats
    assert (unseen.skipped, unseen.first_skipped) == (1, f"{path} row 4")


def test_max_image_mb_caps_table_rows_and_shard_members(tiny_model, tmp_path):
    """`--max-image-mb` caps every image wherever it lives: a table row's bytes and a shard's member over it are
    their images' error records, read no further; the images under it are grounded."""
    import tarfile

    small = io.BytesIO()
    shapes.make_scene(random.Random(7), 32, 32)[0].save(small, format="PNG")
    small_png, big = small.getvalue(), b"\x89PNG" + b"\0" * 5000
    assert len(small_png) < 1000
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"key": ["big", "small"], "jpg": [big, small_png]}), table)
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in [("big.png", big), ("small.png", small_png)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "r.jsonl"
    args = [str(table), str(shard), "--image-column", "jpg", "--max-image-mb", "0.001", "-o", str(out)]
    result = kosmos("ground", *args, model=tiny_model)
    assert result.exit_code == 0, result.output
    rows = {r["path"]: r for r in read_records(str(out))}
    for name in (f"{table}#big", f"{shard}#big"):
        assert rows[name]["status"] == "error" and "(--max-image-mb)" in rows[name]["error"], rows[name]
    assert rows[f"{table}#small"]["status"] == rows[f"{shard}#small"]["status"] == "ok"
    unit = list(iter_items([str(table)], columns=Columns(image="jpg"), fetch=FetchOptions(max_bytes=1000)))
    assert [(i.data, i.error is None) for i in unit] == [(None, False), (small_png, True)]


def test_draw_finds_the_pixels_of_table_rows(grounded, table, tmp_path):
    out, _ = grounded
    _, truth = table
    drawn = tmp_path / "drawn"
    result = kosmos("draw", out, "-o", str(drawn))
    assert result.exit_code == 0, result.output
    assert sorted(str(p.relative_to(drawn)) for p in drawn.rglob("*.png")) == sorted(f"images/{k}.png" for k in truth)
    from PIL import Image

    with Image.open(drawn / "images" / "000000001.png") as img:
        assert img.size == truth["000000001"][:2]


def test_export_to_coco_writes_row_paths_as_they_are(grounded, table, tmp_path):
    out, _ = grounded
    path, truth = table
    coco = tmp_path / "coco.json"
    result = kosmos("export", out, str(coco), "--to", "coco")
    assert result.exit_code == 0, result.output
    data = json.loads(coco.read_text())
    assert sorted(i["file_name"] for i in data["images"]) == sorted(f"{path}#{k}" for k in truth)
    assert len(data["annotations"]) >= len(truth)


def test_rows_of_stdout_carry_the_columns(table):
    path, _ = table
    result = kosmos("ground", path, "--image-column", "jpg", "-q", *model_args())
    assert result.exit_code == 0, result.output
    rows = rows_of(result)
    assert len(rows) == N + 1 and all(r["path"].startswith(f"{path}#") for r in rows)


@pytest.mark.slow
def test_killed_mid_run_then_resumed_every_row_once(table, tmp_path):
    path, truth = table
    out = tmp_path / "r.parquet"
    args = ["ground", path, "--image-column", "jpg", "--out", str(out), *model_args(), "-b", "2", "--workers", "1"]
    killed_after(args, tmp_path)
    partial = Store(str(out), "parquet", "ground").scan().seen
    assert 0 < len(partial) < N + 1
    rerun = kosmos_process(args)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(partial)} skipped" in rerun.stderr
    paths = [r["path"] for r in read_records(str(out))]
    assert len(paths) == len(set(paths)) == N + 1


def test_an_image_column_without_a_parquet_input_is_refused_in_one_line(tmp_path):
    from tests.helpers import make_images

    make_images(str(tmp_path / "photos"))
    result = kosmos("ground", str(tmp_path / "photos"), "--image-column", "jpg", model=SHAPES_MODEL)
    one_error_line(result, 2, "--image-column reads each image from a column of a Parquet file: name a .parquet input")
