"""refer: boxes in, descriptions out. Box parsing as a table; runs on the tiny checkpoint (plumbing only)."""

import dataclasses
import json
import os
import random

import pytest
import shapes
from PIL import Image
from shapes import save_rotated_jpeg

from kosmos_cli import UsageError, read_records, refer
from kosmos_cli.inputs.sources import Item
from kosmos_cli.model.engine import Engine
from kosmos_cli.model.prompts import refer_prompt
from kosmos_cli.tasks import Settings
from kosmos_cli.tasks.markup import box_to_patches, snap, to_pixels
from kosmos_cli.tasks.refer import Refer as ReferJob
from kosmos_cli.tasks.refer import check_fits, clean_description, parse_box
from kosmos_cli.tasks.scores import Generation


@pytest.mark.parametrize(
    "value, normalized, box",
    [
        ("10,20,200,300", False, (10, 20, 200, 300)),
        ("10 20 200 300", False, (10, 20, 200, 300)),
        (" 1.5, 2 ,3.5,4 ", False, (1.5, 2, 3.5, 4)),
        ([0, 0, 1, 1], False, (0, 0, 1, 1)),
        (["5", "6", "7", "8"], False, (5, 6, 7, 8)),
        ("0.1,0.2,0.5,0.6", True, (0.1, 0.2, 0.5, 0.6)),
        ("0,0,1,1", True, (0, 0, 1, 1)),
    ],
)
def test_parse_box_accepts(value, normalized, box):
    assert parse_box(value, normalized) == box


@pytest.mark.parametrize(
    "value, normalized, message",
    [
        ("10,20,200", False, "4 numbers x1,y1,x2,y2, got 3"),
        ("10,20,200,300,4", False, "got 5"),
        ("", False, "got 0"),
        ("a,b,c,d", False, "got a,b,c,d"),
        ("10,20,nan,300", False, "finite"),
        ("200,20,10,300", False, "is empty: x2 must be greater than x1"),
        ("10,300,200,300", False, "is empty"),
        ("-5,20,200,300", False, "outside the image"),
        ("0.1,0.2,0.5,0.6", False, "smaller than a pixel: for 0-1 boxes pass --normalized"),
        ("10,20,200,300", True, "not normalised"),
        ([1, None, 3, 4], False, "no value for y1"),
        (["1", "2", " ", "4"], False, "no value for x2"),
    ],
)
def test_parse_box_rejects_with_a_reason(value, normalized, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_box(value, normalized)


def test_check_fits_is_about_the_displayed_size():
    check_fits((0, 0, 320, 200), 320, 200)
    with pytest.raises(ValueError, match="outside the 320x200 image"):
        check_fits((0, 0, 321, 200), 320, 200)
    with pytest.raises(ValueError, match="outside"):
        check_fits((0, 0, 10, 201), 320, 200)
    check_fits((0, 0, 1, 1), 320, 200, normalized=True)


@pytest.mark.parametrize(
    "text, description",
    [
        (" a red circle.", "a red circle"),
        ("a  snowman   wearing a hat. ", "a snowman wearing a hat"),
        ("", ""),
        ("two. sentences.", "two. sentences"),
    ],
)
def test_clean_description(text, description):
    assert clean_description(text) == description


def test_finish_takes_the_text_after_the_prompt():
    job = ReferJob(["0,0,10,10"])
    (unit,) = job.units(Item("x.png"), Settings("m"))
    text = (
        "<grounding><phrase> It</phrase><object><patch_index_0000><patch_index_0033></object> is "
        "a red circle.</s><phrase> junk"
    )
    record = job.record(dataclasses.replace(unit, size=(320, 200), generated=Generation(text)))
    assert record.description == "a red circle"


def test_the_processor_makes_the_patch_tokens_from_the_box(tiny_engine):
    prompt = refer_prompt((0.1, 0.2, 0.5, 0.6))
    prepared = tiny_engine.prepare(Image.new("RGB", (100, 80)), prompt)
    text = tiny_engine.processor.tokenizer.decode(prepared.input_ids)
    ul, lr = box_to_patches((0.1, 0.2, 0.5, 0.6))
    assert text.endswith(
        f"</image><grounding><phrase> It</phrase><object><patch_index_{ul:04d}><patch_index_{lr:04d}></object> is"
    )


def test_refer_on_an_image_gives_one_record_per_box(tiny_engine, tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (320, 200), (120, 60, 30)).save(path)
    out = tmp_path / "r.jsonl"
    summary = refer([str(path)], str(out), boxes=["10,20,100,120", (0, 0, 320, 200)], engine=tiny_engine)
    assert (summary.done, summary.failed) == (2, 0)
    rows = list(read_records(str(out)))
    assert [r["box_px"] for r in rows] == [[10.0, 20.0, 100.0, 120.0], [0.0, 0.0, 320.0, 200.0]]
    for row in rows:
        x1, y1, x2, y2 = row["box_px"]
        assert row["box_model_px"] == to_pixels(snap((x1 / 320, y1 / 200, x2 / 320, y2 / 200)), 320, 200)
        assert row["status"] == "ok" and isinstance(row["description"], str)
        assert row["prompt"] == "<grounding><phrase> It</phrase> is"
        assert (row["width"], row["height"]) == (320, 200)
        assert "caption" not in row and "phrase" not in row


def test_boxes_are_pixels_of_the_displayed_image(tiny_engine, tmp_path):
    path = tmp_path / "rotated.jpg"
    save_rotated_jpeg(Image.new("RGB", (320, 200), (10, 200, 10)), path, 6)  # stored 200x320
    assert Image.open(path).size == (200, 320)
    out = tmp_path / "r.jsonl"
    refer([str(path)], str(out), boxes=["250,10,320,190"], engine=tiny_engine)
    (row,) = read_records(str(out))
    assert row["status"] == "ok" and (row["width"], row["height"]) == (320, 200)
    with pytest.raises(UsageError, match="outside .*rotated.jpg, which is 320x200"):
        refer([str(path)], str(tmp_path / "no.jsonl"), boxes=["10,250,100,300"], engine=tiny_engine)
    assert not (tmp_path / "no.jsonl").exists()


def test_normalized_boxes_and_resume(tiny_engine, tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (200, 100)).save(path)
    out = tmp_path / "r.parquet"
    first = refer([str(path)], str(out), boxes=["0.25,0.5,0.75,1"], normalized=True, engine=tiny_engine)
    (row,) = read_records(str(out))
    assert row["box_px"] == [50.0, 50.0, 150.0, 100.0]
    again = refer([str(path)], str(out), boxes=["0.25,0.5,0.75,1"], normalized=True, engine=tiny_engine)
    assert (first.done, again.done, again.skipped) == (1, 0, 1)
    more = refer([str(path)], str(out), boxes=["0.25,0.5,0.75,1", "0,0,0.5,0.5"], normalized=True, engine=tiny_engine)
    assert (more.done, more.skipped) == (1, 1)
    assert len(list(read_records(str(out)))) == 2


def test_manifest_rows_of_one_image_are_all_kept_and_bad_rows_fail_alone(tiny_engine, tmp_path):
    for name, size in (("a.png", (320, 200)), ("b.png", (100, 100))):
        Image.new("RGB", size, (200, 200, 200)).save(tmp_path / name)
    manifest = tmp_path / "regions.csv"
    manifest.write_text(
        "path,x1,y1,x2,y2,note\n"
        "a.png,10,20,100,120,first\n"
        "a.png,0,0,320,200,second\n"
        "a.png,0,0,320,200,second\n"  # the same row twice: once
        "b.png,50,5,40,50,reversed\n"
        "b.png,0,0,101,50,too wide\n"
        "b.png,1,2,3,,missing\n"
        "b.png,0,0,100,100,whole\n"
    )
    out = tmp_path / "r.jsonl"
    summary = refer([str(manifest)], str(out), engine=tiny_engine)
    rows = {r["note"]: r for r in read_records(str(out))}
    assert (summary.done, summary.failed) == (3, 3) and len(rows) == 6
    assert rows["first"]["box_px"] == [10.0, 20.0, 100.0, 120.0] and rows["first"]["status"] == "ok"
    assert rows["whole"]["status"] == "ok" and rows["whole"]["box_model_px"] is not None
    assert "x2 must be greater than x1" in rows["reversed"]["error"]
    assert rows["reversed"]["box_px"] == [50.0, 5.0, 40.0, 50.0]
    assert "outside the 100x100 image" in rows["too wide"]["error"]
    assert "no value for y2" in rows["missing"]["error"] and rows["missing"]["box_px"] is None
    assert all("x1" not in r and "input_x1" not in r for r in rows.values())  # the box columns became box_px


class CountingEngine(Engine):
    """The real engine, counting its vision preprocessing calls."""

    def __init__(self, loaded: Engine):
        self.__dict__.update(loaded.__dict__)
        self.pixel_calls = 0

    def pixels(self, image):
        self.pixel_calls += 1
        return super().pixels(image)


def test_regions_of_one_image_share_one_decode_and_one_pixels_call(tiny_engine, tmp_path, monkeypatch):
    from kosmos_cli.run import batching

    decoded = []
    real_load = batching.open_image
    monkeypatch.setattr(
        batching, "open_image", lambda path, *args, **kw: decoded.append(path) or real_load(path, *args, **kw)
    )
    for name in ("a.png", "b.png"):
        Image.new("RGB", (64, 64)).save(tmp_path / name)
    manifest = tmp_path / "regions.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"path": p, "x1": x, "y1": 0, "x2": x + 8, "y2": 8}) + "\n"
            for p in ("a.png", "b.png")
            for x in (0, 8, 16, 24, 32)
        )
    )
    engine = CountingEngine(tiny_engine)
    summary = refer([str(manifest)], "-", engine=engine, batch_size=10)
    assert summary.done == 10
    assert sorted(os.path.basename(p) for p in decoded) == ["a.png", "b.png"]
    assert engine.pixel_calls == 2


def test_regions_of_many_images_batched_equal_one_at_a_time(tiny_engine, tmp_path, capsys):
    for i in range(3):
        Image.new("RGB", (96, 64), (80 * i, 100, 50)).save(tmp_path / f"{i}.png")
    args = ([str(tmp_path)], "-")
    refer(*args, boxes=["0,0,48,32", "40,20,96,64"], engine=tiny_engine, batch_size=6)
    batched = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    refer(*args, boxes=["0,0,48,32", "40,20,96,64"], engine=tiny_engine, batch_size=1)
    single = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    def strip(rows):
        return sorted((r["path"], r["box_px"], r["description"], r["box_model_px"]) for r in rows)

    assert len(batched) == 6 and strip(batched) == strip(single)


def test_no_boxes_and_no_manifest_is_a_usage_error(tiny_engine, tmp_path):
    Image.new("RGB", (10, 10)).save(tmp_path / "a.png")
    with pytest.raises(UsageError, match="needs boxes"):
        refer([str(tmp_path / "a.png")], engine=tiny_engine)
    with pytest.raises(UsageError, match="boxes: .*got 3"):
        refer([str(tmp_path / "a.png")], boxes=["1,2,3"], engine=tiny_engine)


def test_refer_on_a_shape_names_its_colour_on_the_toy_checkpoint(shapes_engine, tmp_path):
    rng, rows = random.Random(777), []
    for i in range(12):
        width, height = shapes.CLI_SIZES[i % len(shapes.CLI_SIZES)]
        img, objs = shapes.make_scene(rng, width, height)
        img.save(tmp_path / f"s{i}.png")
        for obj in objs:
            rows.append(
                {
                    "path": f"s{i}.png",
                    "x1": obj.box[0],
                    "y1": obj.box[1],
                    "x2": obj.box[2],
                    "y2": obj.box[3],
                    "truth": obj.color,
                }
            )
    manifest = tmp_path / "regions.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.jsonl"
    refer([str(manifest)], str(out), engine=shapes_engine)
    said = [(r["truth"], r["description"]) for r in read_records(str(out))]
    assert len(said) == len(rows)
    assert sum(truth in description.split() for truth, description in said) >= 0.8 * len(said), said
