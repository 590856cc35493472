"""kosmos export: ground and find results as COCO, YOLO, Pascal VOC and Label Studio labels."""

import json
import os
import random
import xml.etree.ElementTree as ET

import pytest
import shapes
import yaml
from PIL import Image, ImageOps

from kosmos_cli import export, ground, read_records
from kosmos_cli.errors import InputError, UsageError
from kosmos_cli.exports.base import xml_text
from kosmos_cli.exports.boxes import Label, suppress
from kosmos_cli.exports.classes import Classes, normalise, parse_classes
from kosmos_cli.tasks import FindRecord, GroundRecord, ReferRecord
from kosmos_cli.tasks.records import Entity
from tests.helpers import HERE, kosmos, one_error_line


# -- classes ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "phrase, name",
    [
        ("a dog", "dog"),
        ("The Red  Car.", "red car"),
        ("an apple", "apple"),
        ("  two dogs ", "two dogs"),
        ("a", ""),
        ("", ""),
        ("the", ""),
        ("athlete", "athlete"),
    ],
)
def test_a_phrase_is_normalised_into_a_class_name(phrase, name):
    assert normalise(phrase) == name


def test_by_default_one_class_per_distinct_phrase_in_the_order_met():
    classes = Classes()
    assert [classes.of(p) for p in ["a dog", "the dog", "a cat", "Dog", "", "a"]] == [0, 0, 1, 0, None, None]
    assert classes.names == ["dog", "cat"]


@pytest.mark.parametrize(
    "phrase, cls",
    [
        ("a dog", "dog"),
        ("a small brown dog", "dog"),
        ("two dogs", "dog"),
        ("the dogs", "dog"),
        ("a traffic light", "traffic light"),
        ("traffic lights", "traffic light"),
        ("a red light", "light"),
        ("a cup of coffee", "cup"),
        ("a dog wearing a hat", "dog"),
        ("a hat", None),
        ("people", "person"),
        ("a person", "person"),
        ("puppies", "puppy"),
        ("two boxes", "box"),
        ("buses", "bus"),
        ("a bus", "bus"),
        ("a hotdog", None),
        ("a cat", "cat"),
        ("a dog and a cat", "dog"),
        ("knives", "knife"),
        ("", None),
    ],
)
def test_named_classes_match_the_head_of_a_phrase_singular_or_plural(phrase, cls):
    named = ["dog", "cat", "traffic light", "light", "cup", "person", "puppy", "box", "bus", "knife"]
    classes = Classes(named)
    index = classes.of(phrase)
    assert (None if index is None else named[index]) == cls
    assert classes.names == named  # numbered in the order given, whatever is met


def test_named_classes_are_checked():
    with pytest.raises(UsageError, match="named twice"):
        Classes(["dog", "Dog"])
    with pytest.raises(UsageError, match="no class named"):
        Classes([])
    with pytest.raises(UsageError, match="cannot both be given"):
        parse_classes("dog", "classes.txt")


def test_classes_from_a_string_a_list_or_a_file(tmp_path):
    assert parse_classes("dog, cat,,traffic light ", None) == ["dog", "cat", "traffic light"]
    assert parse_classes(["dog", " cat "], None) == ["dog", "cat"]
    assert parse_classes(None, None) is None
    f = tmp_path / "classes.txt"
    f.write_text("\ufeff# our classes\ndog\n\n  traffic light \n")
    assert parse_classes(None, str(f)) == ["dog", "traffic light"]


def test_nms_keeps_the_best_scored_box_of_each_class():
    a = Label(0, (0, 0, 100, 100), 0.4)
    b = Label(0, (5, 5, 100, 100), 0.9)  # IoU 0.9025 with a
    c = Label(1, (0, 0, 100, 100), 0.1)  # another class: untouched
    d = Label(0, (200, 200, 300, 300), None)
    assert suppress([a, b, c, d], 0.5) == [b, c, d]
    assert suppress([a, b, c, d], 0.95) == [a, b, c, d]
    assert suppress([Label(0, (0, 0, 10, 10), None), Label(0, (0, 0, 10, 10), 0.2)], 0.5)[0].score == 0.2


# -- results files to export --------------------------------------------------------------------------------------
def grey(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (128, 128, 128)).save(path)
    return str(path)


def entity(phrase, boxes_px, size, scores):
    w, h = size
    return Entity(
        phrase,
        0,
        len(phrase),
        [[x1 / w, y1 / h, x2 / w, y2 / h] for x1, y1, x2, y2 in boxes_px],
        [list(b) for b in boxes_px],
        scores,
    )


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    return {
        "a": grey(folder / "a.png", (200, 100)),
        "b": grey(folder / "sub" / "b.jpg", (100, 200)),
        "c": grey(folder / "c.png", (64, 64)),
    }


@pytest.fixture
def grounded(tmp_path, photos):
    """A ground results file: a.png with a dog twice (duplicate boxes) and two cats, b.jpg with a traffic light,
    c.png with nothing; one error record."""
    rows = [
        GroundRecord(
            path=photos["a"],
            width=200,
            height=100,
            caption="a dog and two cats",
            entities=[
                entity("a dog", [[10, 10, 90, 90]], (200, 100), [0.9]),
                entity("a dog", [[12, 10, 90, 90]], (200, 100), [0.5]),
                entity("two cats", [[100, 20, 140, 60], [150, 20, 190, 95]], (200, 100), [0.8, 0.2]),
            ],
        ),
        GroundRecord(
            path=photos["b"],
            width=100,
            height=200,
            caption="a traffic light",
            entities=[entity("a traffic light", [[20, 30, 80, 190]], (100, 200), [0.7])],
        ),
        GroundRecord(path=photos["c"], width=64, height=64, caption="grey"),
        GroundRecord(path=str(tmp_path / "photos" / "gone.png"), status="error", error="file not found"),
    ]
    out = tmp_path / "results.jsonl"
    out.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    return str(out)


def coco_of(path):
    from pycocotools.coco import COCO

    return COCO(str(path))


def test_coco_loads_in_pycocotools_and_evaluates_against_itself_at_map_1(grounded, tmp_path):
    from pycocotools.cocoeval import COCOeval

    out = tmp_path / "coco.json"
    summary = export(grounded, "coco", str(out))
    assert (summary.images, summary.boxes, summary.classes, summary.errors) == (3, 5, 3, 1)
    data = json.loads(out.read_text())
    assert [c["name"] for c in data["categories"]] == ["dog", "two cats", "traffic light"]
    assert [(i["width"], i["height"]) for i in data["images"]] == [(200, 100), (100, 200), (64, 64)]
    first = data["annotations"][0]
    assert (first["bbox"], first["area"], first["category_id"], first["score"]) == ([10, 10, 80, 80], 6400, 1, 0.9)
    gt = coco_of(out)
    dt = gt.loadRes(data["annotations"])
    evaluation = COCOeval(gt, dt, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)  # mAP@[.5:.95]
    assert evaluation.stats[1] == pytest.approx(1.0)


def test_min_score_and_nms_drop_boxes_and_say_how_many(grounded, tmp_path):
    summary = export(grounded, "coco", str(tmp_path / "c.json"), min_score=0.3, nms=0.5)
    assert (summary.boxes, summary.dropped.below, summary.dropped.duplicates) == (3, 1, 1)
    scores = sorted(a["score"] for a in json.loads((tmp_path / "c.json").read_text())["annotations"])
    assert scores == [0.7, 0.8, 0.9]
    assert "1 below --min-score, 1 removed by --nms" in summary.line()
    summary = export(grounded, "coco", str(tmp_path / "d.json"), min_score=0.75)  # no traffic light kept
    assert [c["name"] for c in json.loads((tmp_path / "d.json").read_text())["categories"]] == ["dog", "two cats"]


def test_named_classes_keep_only_their_boxes_in_the_order_given(grounded, tmp_path):
    summary = export(grounded, "coco", str(tmp_path / "c.json"), classes="traffic light,cat")
    data = json.loads((tmp_path / "c.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["traffic light", "cat"]
    assert sorted(a["category_id"] for a in data["annotations"]) == [1, 2, 2]
    assert summary.dropped.unnamed == 2  # the two dogs


def test_root_makes_image_paths_relative(grounded, tmp_path):
    export(grounded, "coco", str(tmp_path / "c.json"), root=str(tmp_path / "photos"))
    names = [i["file_name"] for i in json.loads((tmp_path / "c.json").read_text())["images"]]
    assert names == ["a.png", "sub/b.jpg", "c.png"]
    with pytest.raises(UsageError, match="is not below it"):
        export(grounded, "coco", str(tmp_path / "d.json"), root=str(tmp_path / "photos" / "sub"))
    assert not (tmp_path / "d.json").exists()


def test_yolo_folder_in_the_ultralytics_layout(grounded, tmp_path, photos):
    out = tmp_path / "yolo"
    summary = export(grounded, "yolo", str(out), classes=["dog", "cat", "traffic light"], nms=0.5)
    assert (summary.images, summary.boxes) == (3, 4)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "dog", 1: "cat", 2: "traffic light"}
    assert data["path"] == str(out.resolve()) and data["train"] == data["val"] == "images"
    assert os.path.islink(out / "images" / "a.png")
    assert os.path.realpath(out / "images" / "sub" / "b.jpg") == os.path.realpath(photos["b"])
    lines = [line.split() for line in (out / "labels" / "a.txt").read_text().splitlines()]
    assert lines[0] == ["0", "0.250000", "0.500000", "0.400000", "0.800000"]
    assert [line[0] for line in lines] == ["0", "1", "1"]
    assert (out / "labels" / "sub" / "b.txt").read_text() == "2 0.500000 0.550000 0.600000 0.800000\n"
    assert (out / "labels" / "c.txt").read_text() == ""  # an image with nothing: a background image


def test_yolo_copies_images_and_names_never_collide(tmp_path):
    folder = tmp_path / "p"
    a_png, a_jpg = grey(folder / "a.png", (10, 10)), grey(folder / "a.jpg", (10, 10))
    rows = [
        GroundRecord(
            path=p, width=10, height=10, caption="x", entities=[entity("a dot", [[0, 0, 5, 5]], (10, 10), [0.5])]
        )
        for p in (a_png, a_jpg)
    ]
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    out = tmp_path / "yolo"
    export(str(results), "yolo", str(out), copy_images=True)
    assert sorted(os.listdir(out / "images")) == ["a-2.jpg", "a.png"]
    assert sorted(os.listdir(out / "labels")) == ["a-2.txt", "a.txt"]
    assert not os.path.islink(out / "images" / "a.png")


def test_yolo_labels_of_an_exif_rotated_photo_are_in_the_displayed_frame(shapes_engine, tmp_path):
    rng = random.Random(31337)
    img, truth = shapes.make_scene(rng, 320, 200, n=1)
    folder = tmp_path / "photos"
    folder.mkdir()
    shapes.save_rotated_jpeg(img, folder / "rotated.jpg", 6)
    assert Image.open(folder / "rotated.jpg").size == (200, 320)  # stored turned
    results = tmp_path / "g.parquet"
    ground([str(folder)], str(results), engine=shapes_engine)
    [row] = read_records(str(results))
    assert (row["width"], row["height"]) == (320, 200)
    out = tmp_path / "yolo"
    export(str(results), "yolo", str(out))
    # what Ultralytics does: the image with its EXIF orientation applied
    shown = ImageOps.exif_transpose(Image.open(out / "images" / "rotated.jpg"))
    assert shown.size == (320, 200)
    labels = [
        [float(v) for v in line.split()[1:]] for line in (out / "labels" / "rotated.txt").read_text().splitlines()
    ]
    boxes = [
        ((cx - w / 2) * 320, (cy - h / 2) * 200, (cx + w / 2) * 320, (cy + h / 2) * 200) for cx, cy, w, h in labels
    ]
    assert boxes and max(shapes.iou(b, truth[0].box) for b in boxes) >= 0.5


def test_voc_one_xml_per_image(grounded, tmp_path):
    out = tmp_path / "voc"
    export(grounded, "voc", str(out), min_score=0.3)
    assert (out / "labels.txt").read_text() == "dog\ntwo cats\ntraffic light\n"
    root = ET.parse(out / "Annotations" / "a.xml").getroot()
    assert root.findtext("filename") == "a.png"
    assert (root.findtext("size/width"), root.findtext("size/height"), root.findtext("size/depth")) == (
        "200",
        "100",
        "3",
    )
    objects = root.findall("object")
    assert [o.findtext("name") for o in objects] == ["dog", "dog", "two cats"]
    box = objects[0].find("bndbox")
    assert [box.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax")] == ["11", "11", "90", "90"]  # 1-based, inclusive
    assert objects[0].findtext("score") == "0.9"
    assert ET.parse(out / "Annotations" / "sub" / "b.xml").getroot().findtext("object/name") == "traffic light"
    assert ET.parse(out / "Annotations" / "c.xml").getroot().findall("object") == []


def test_label_studio_tasks_with_predictions_and_the_matching_config(grounded, tmp_path):
    out = tmp_path / "ls" / "tasks.json"
    out.parent.mkdir()
    export(grounded, "labelstudio", str(out), root=str(tmp_path / "photos"), image_root="/data/local-files/?d=photos/")
    tasks = json.loads(out.read_text())
    assert [t["data"]["image"] for t in tasks] == [
        "/data/local-files/?d=photos/a.png",
        "/data/local-files/?d=photos/sub/b.jpg",
        "/data/local-files/?d=photos/c.png",
    ]
    result = tasks[1]["predictions"][0]["result"][0]
    assert result["value"] == {
        "x": 20.0,
        "y": 15.0,
        "width": 60.0,
        "height": 80.0,
        "rotation": 0,
        "rectanglelabels": ["traffic light"],
    }
    assert (result["type"], result["score"], result["original_width"], result["original_height"]) == (
        "rectanglelabels",
        0.7,
        100,
        200,
    )
    assert tasks[2]["predictions"][0]["result"] == []
    config = ET.parse(tmp_path / "ls" / "tasks.config.xml").getroot()
    image, rectangles = config.find("Image"), config.find("RectangleLabels")
    assert image.get("value") == "$image"
    assert (rectangles.get("name"), rectangles.get("toName")) == (result["from_name"], image.get("name"))
    assert [label.get("value") for label in rectangles] == ["dog", "two cats", "traffic light"]


def test_label_studio_quotes_image_paths(tmp_path):
    path = grey(tmp_path / "p" / "a b#1.png", (10, 10))
    (tmp_path / "r.jsonl").write_text(json.dumps(GroundRecord(path=path, width=10, height=10).to_dict()) + "\n")
    export(
        str(tmp_path / "r.jsonl"),
        "labelstudio",
        str(tmp_path / "t.json"),
        root=str(tmp_path),
        image_root="https://host/x/",
    )
    assert json.loads((tmp_path / "t.json").read_text())[0]["data"]["image"] == "https://host/x/p/a%20b%231.png"


def test_find_rows_of_one_image_are_one_image_wherever_they_are(tmp_path):
    a, b = grey(tmp_path / "a.png", (100, 100)), grey(tmp_path / "b.png", (100, 100))

    def found(path, phrase, box, score):
        return FindRecord(
            path=path,
            width=100,
            height=100,
            phrase=phrase,
            boxes=[[v / 100 for v in box]],
            boxes_px=[box],
            scores=[score],
        ).to_dict()

    rows = [
        found(a, "a dog", [0, 0, 50, 50], 0.9),
        found(b, "a dog", [10, 10, 60, 60], 0.8),
        found(b, "a red ball", [50, 50, 90, 90], 0.7),
        found(a, "a red ball", [60, 60, 99, 99], 0.6),
        found(a, "a dog", [1, 1, 50, 50], 0.95),
    ]  # a's "a dog" again, later: it replaces the first
    results = tmp_path / "found.parquet"
    import pyarrow.parquet as pq

    from kosmos_cli.output.formats import records_table
    from kosmos_cli.tasks import Find

    pq.write_table(
        records_table([FindRecord(**{k: v for k, v in r.items() if k != "task"}) for r in rows], Find), results
    )
    out = tmp_path / "yolo"
    summary = export(str(results), "yolo", str(out))
    assert (summary.images, summary.boxes) == (2, 4)
    assert (out / "labels" / "a.txt").read_text().splitlines() == [
        "0 0.255000 0.255000 0.490000 0.490000",
        "1 0.795000 0.795000 0.390000 0.390000",
    ]
    assert len((out / "labels" / "b.txt").read_text().splitlines()) == 2


def test_outputs_without_scores_export_and_min_score_leaves_their_boxes_out(tmp_path):
    legacy = os.path.join(HERE, "fixtures", "legacy-outputs")
    results = os.path.join(legacy, "ground.parquet")
    rows = list(read_records(results))
    assert all("scores" not in e for r in rows for e in r["entities"])
    summary = export(results, "coco", str(tmp_path / "c.json"), root=legacy)
    boxes = sum(len(e["boxes_px"]) for r in rows for e in r["entities"])
    assert summary.images == len(rows) and summary.boxes == boxes > 0
    assert all("score" not in a for a in json.loads((tmp_path / "c.json").read_text())["annotations"])
    summary = export(results, "coco", str(tmp_path / "d.json"), root=legacy, min_score=0.1)
    assert (summary.boxes, summary.dropped.below) == (0, boxes)


# -- refusals ---------------------------------------------------------------------------------------------------------
def test_refer_results_have_no_boxes_to_export(tmp_path):
    path = grey(tmp_path / "a.png", (10, 10))
    results = tmp_path / "regions.jsonl"
    results.write_text(
        json.dumps(ReferRecord(path=path, width=10, height=10, box_px=[0, 0, 5, 5], description="a thing").to_dict())
        + "\n"
    )
    result = kosmos("export", str(results), "--to", "coco", str(tmp_path / "c.json"))
    one_error_line(result, 2, "holds refer records: they describe regions you gave, they find no boxes")
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--to", "pascal"], "unknown format 'pascal' (--to): use one of coco, yolo, voc, labelstudio"),
        (["--to", "coco", "--min-score", "2"], "--min-score 2.0: a score is a number from 0 to 1"),
        (["--to", "coco", "--nms", "-1"], "--nms -1.0: an IoU from 0 to 1"),
        (["--to", "coco", "--classes", "dog", "--classes-file", "x.txt"], "cannot both be given"),
        (["--to", "coco", "--image-root", "http://x/"], "--image-root is for --to labelstudio only"),
        (["--to", "voc", "--copy-images"], "--copy-images is for --to yolo only"),
        (["--to", "coco", "--root", "nowhere"], "--root nowhere: no such folder"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(grounded, tmp_path, args, message):
    result = kosmos("export", grounded, str(tmp_path / "out.json"), *args)
    one_error_line(result, 2, message)
    assert not os.path.exists(tmp_path / "out.json")


def test_outputs_that_cannot_be_used_are_refused(grounded, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("x")
    one_error_line(kosmos("export", grounded, "--to", "yolo", str(tmp_path / "full")), 2, "is not empty")
    one_error_line(kosmos("export", grounded, "--to", "coco", str(tmp_path / "full")), 2, "is a folder")
    one_error_line(kosmos("export", grounded, "--to", "voc", grounded), 2, "is a file")
    one_error_line(
        kosmos("export", str(tmp_path / "none.jsonl"), "--to", "coco", str(tmp_path / "c.json")),
        2,
        "results file not found",
    )
    (tmp_path / "m.jsonl").write_text('{"path": "a.png"}\n')  # a manifest, not results
    one_error_line(
        kosmos("export", str(tmp_path / "m.jsonl"), "--to", "coco", str(tmp_path / "c.json")),
        2,
        "line 1 is not a kosmos record",
    )


@pytest.mark.parametrize("to, beside", [("coco", None), ("labelstudio", "notes.config.xml")])
def test_a_one_file_export_never_writes_over_a_file_it_did_not_write(grounded, tmp_path, to, beside):
    results_before = open(grounded, "rb").read()
    one_error_line(kosmos("export", grounded, "--to", to, grounded), 2, "is not a")  # the results themselves
    assert open(grounded, "rb").read() == results_before
    notes = tmp_path / "notes.json"
    notes.write_text("my notes\n")
    one_error_line(kosmos("export", grounded, "--to", to, str(notes)), 2, f"is not a {to} export of kosmos")
    assert notes.read_text() == "my notes\n"
    if beside:  # Label Studio's config goes beside the tasks: a file of the user's there is refused too
        notes.unlink()
        (tmp_path / beside).write_text("<mine/>\n")
        one_error_line(kosmos("export", grounded, "--to", to, str(notes)), 2, f"{beside} exists")
        assert (tmp_path / beside).read_text() == "<mine/>\n" and not notes.exists()
        (tmp_path / beside).unlink()
    out = str(tmp_path / "again.json")  # an earlier export of its own is written over
    assert kosmos("export", grounded, "--to", to, out).exit_code == 0
    assert kosmos("export", grounded, "--to", to, out).exit_code == 0


def test_the_command_says_what_it_wrote(grounded, tmp_path):
    result = kosmos("export", grounded, "--to", "yolo", str(tmp_path / "y"), "--min-score", "0.3")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "kosmos export finished: 3 images, 4 boxes, 3 classes, 1 skipped (error records), 0 failed; "
            "boxes left out: 1 below --min-score, in "
        )
    )


def test_strict_fails_when_an_image_is_gone(grounded, tmp_path, photos):
    os.unlink(photos["c"])
    result = kosmos("export", grounded, "--to", "yolo", str(tmp_path / "y"), "--strict")
    assert result.exit_code == 1, result.output
    assert "kosmos: error: 1 image failed (--strict)" in result.stderr
    assert not (tmp_path / "y" / "labels" / "c.txt").exists()


def test_export_is_importable_from_the_package():
    import kosmos_cli

    assert kosmos_cli.export is export and "export" in kosmos_cli.__all__
    with pytest.raises(InputError):
        export("no-such-file.jsonl", "coco", "x.json")


def test_export_starts_without_torch(grounded, tmp_path):
    import subprocess
    import sys

    from tests.helpers import ROOT

    code = (
        "import sys; from kosmos_cli.cli import main; sys.argv = ['kosmos', 'export', sys.argv[1], '--to', "
        "'coco', sys.argv[2], '-q']\ntry:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print(code, 'torch' in sys.modules, 'transformers' in sys.modules, file=sys.stderr)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, grounded, str(tmp_path / "c.json")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.stderr.strip() == "0 False False", proc.stderr


def test_a_junk_line_is_warned_skipped_and_counted_as_ground_does(grounded, tmp_path):
    with open(grounded, "a") as f:
        f.write("garbage\n")
    lines = open(grounded).read().splitlines()
    lines.insert(1, '{"path": "x.png"}')
    with open(grounded, "w") as f:
        f.write("\n".join(lines) + "\n")
    result = kosmos("export", grounded, "--to", "coco", str(tmp_path / "c.json"))
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if "WARNING" in line] == [
        f"kosmos: WARNING: {grounded} line 2 skipped: not a kosmos record: no status, caption, box_px or phrase",
        f"kosmos: WARNING: {grounded} line 6 skipped: not JSON",
    ]
    assert "3 images, 5 boxes, 3 classes, 1 skipped (error records), 0 failed, 2 unusable, in " in result.stderr
    assert len(json.loads((tmp_path / "c.json").read_text())["images"]) == 3
    assert kosmos("export", grounded, "--to", "coco", str(tmp_path / "c.json"), "--strict").exit_code == 1


def test_records_edited_by_hand_are_each_a_warning_and_the_rest_exported(tmp_path):
    from tests.unit.test_reader import BAD_RECORDS, ground_row

    grey(tmp_path / "a.png", (200, 100))
    rows = [row for row, _ in BAD_RECORDS.values()] + [ground_row()]
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for to, out in (("coco", "c.json"), ("yolo", "y"), ("voc", "v"), ("labelstudio", "ls.json")):
        result = kosmos("export", str(results), "--to", to, str(tmp_path / out))
        assert result.exit_code == 0, result.output
        warned = [line for line in result.stderr.splitlines() if "WARNING" in line]
        assert len(warned) == len(BAD_RECORDS) and all(" skipped: " in line for line in warned)
        assert f"1 images, 3 boxes, 2 classes, 0 skipped (error records), 0 failed, {len(BAD_RECORDS)} unusable" in (
            result.stderr
        )


ODD_PHRASES = [
    "a \x01 dog",  # a control character: not allowed in XML 1.0
    "a\x0bcat",  # a vertical tab: a line break to str.splitlines
    "the \x7f bird",  # DEL: not printable in YAML
    "a \x85 fish",  # NEL: a line break in YAML and to str.splitlines
    "a \u2028 frog",  # LINE SEPARATOR
    "a \ufffe toad",  # a noncharacter: not allowed in XML
    "a \ud800 bee",  # a lone surrogate: not UTF-8
    'a "quoted" <b>tag</b> & \\ back',
    "an emoji \U0001f600",
]


def test_every_file_an_export_writes_parses_whatever_the_phrases_hold(tmp_path):
    path = grey(tmp_path / "p" / "a\x01b.png", (100, 100))
    entities = [
        {"phrase": p, "start": 0, "end": 1, "boxes_px": [[i * 10, i * 10, i * 10 + 9, i * 10 + 9]], "scores": [0.5]}
        for i, p in enumerate(ODD_PHRASES)
    ]
    row = {"path": path, "task": "ground", "width": 100, "height": 100, "status": "ok", "entities": entities}
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(row) + "\n")
    for named in (None, ",".join(p.replace(",", " ") for p in ODD_PHRASES)):
        out = tmp_path / ("named" if named else "default")
        out.mkdir()
        args = ["--classes", named] if named else []
        for to, name in (("coco", "c.json"), ("yolo", "y"), ("voc", "v"), ("labelstudio", "ls.json")):
            result = kosmos("export", str(results), "--to", to, str(out / name), *args)
            assert result.exit_code == 0, result.output
        coco = json.loads((out / "c.json").read_text())
        names = [c["name"] for c in coco["categories"]]
        found = [names[a["category_id"] - 1] for a in coco["annotations"]]
        assert len(names) == len(ODD_PHRASES) and (found or named)  # named: "a ..." names no phrase's head
        assert (out / "v" / "labels.txt").read_text(encoding="utf-8").splitlines() == names
        assert yaml.safe_load((out / "y" / "data.yaml").read_text(encoding="utf-8"))["names"] == dict(enumerate(names))
        voc = ET.parse(next((out / "v" / "Annotations").rglob("*.xml"))).getroot()
        assert [o.findtext("name") for o in voc.findall("object")] == [xml_text(name) for name in found]
        assert voc.findtext("filename") == "a\\x01b.png"  # what XML cannot hold, escaped as fsnames records it
        config = ET.parse(out / "ls.config.xml").getroot()
        assert [label.get("value") for label in config.iter("Label")] == [xml_text(name) for name in names]
        assert len(json.loads((out / "ls.json").read_text())[0]["predictions"][0]["result"]) == len(found)


def test_a_folder_as_results_is_one_line_and_exit_2(tmp_path):
    one_error_line(kosmos("export", str(tmp_path), "--to", "coco", str(tmp_path / "c.json")), 2, "is a folder")


def damaged_parquet(path, rows=20000):
    """A Parquet file of find records that opens (its footer is whole) but cannot be read past its middle."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = rows
    table = pa.table({"path": [f"{i}.png" for i in range(n)], "task": ["find"] * n, "status": ["error"] * n})
    pq.write_table(table, path, row_group_size=n // 4)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 200] = b"\xff" * 200
    path.write_bytes(bytes(data))
    return str(path)


def test_an_unreadable_parquet_is_one_line_exit_2_and_never_speaks_of_overwrite(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 nothing")
    for results, message in (
        (str(tmp_path / "broken.parquet"), "broken.parquet is not a readable Parquet file: pass the .jsonl"),
        (damaged_parquet(tmp_path / "damaged.parquet"), "damaged.parquet cannot be read past row "),
    ):
        for command in (("export", results, "--to", "coco", str(tmp_path / "c.json")), ("draw", results, "-o", "d")):
            result = kosmos(*command)
            one_error_line(result, 2, message)
            assert "--overwrite" not in result.stderr
    assert not (tmp_path / "c.json").exists() and not os.path.exists("d")


@pytest.mark.parametrize("command", ["export", "draw"])
def test_images_gone_are_each_warned_once_and_never_called_error_records(tmp_path, command):
    rows = [
        GroundRecord(path=str(tmp_path / f"gone{i}.png"), width=10, height=10, caption="x").to_dict() for i in range(7)
    ]
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ("--to", "yolo", str(tmp_path / "y")) if command == "export" else ("-o", str(tmp_path / "d"))
    result = kosmos(command, str(results), *args)
    assert result.exit_code == 0, result.output
    for i in range(7):
        assert result.stderr.count(f"gone{i}.png") == 1, result.stderr
    assert "status 'error'" not in result.stderr and "more failed" not in result.stderr
    assert "7 failed" in result.stderr.splitlines()[-1]


# -- an export replaces its own earlier work, after any interruption --------------------------------------------
OUTS = {"coco": "c.json", "yolo": "y", "voc": "v", "labelstudio": "ls.json"}


def written(out):
    """Every file an export wrote at `out` (and beside it), by name, with its bytes; YOLO's own path left out."""
    out = str(out)
    if os.path.isdir(out):
        files = {
            os.path.relpath(os.path.join(d, f), out): os.path.join(d, f) for d, _, names in os.walk(out) for f in names
        }
    else:
        folder = os.path.dirname(out)
        files = {n: os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(os.path.basename(out)[:2])}
    got = {}
    for name, path in files.items():
        if os.path.islink(path):
            got[name] = "-> " + os.readlink(path)
        else:
            data = open(path, "rb").read()
            got[name] = b"\n".join(line for line in data.split(b"\n") if not line.startswith(b"path: "))
    return got


def fresh(grounded, tmp_path, to):
    (tmp_path / "fresh").mkdir(exist_ok=True)
    out = tmp_path / "fresh" / OUTS[to]
    export(grounded, to, str(out))
    return written(out)


@pytest.mark.parametrize("to", OUTS)
def test_an_export_replaces_what_an_earlier_export_of_its_format_wrote_and_nothing_else(grounded, tmp_path, to):
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / OUTS[to]
    export(grounded, to, str(out), classes=["dog"], min_score=0.6)  # an earlier, different export
    if to in ("yolo", "voc"):
        assert (out / ".kosmos-export").read_text().startswith(f"kosmos export --to {to}\n")
        (out / "notes.txt").write_text("mine\n")  # the user's, in the folder: left as it is
    export(grounded, to, str(out))
    if to in ("yolo", "voc"):
        assert (out / "notes.txt").read_text() == "mine\n"
        (out / "notes.txt").unlink()
    assert written(out) == fresh(grounded, tmp_path, to)


def test_a_folder_export_never_writes_into_another_formats_folder(grounded, tmp_path):
    export(grounded, "yolo", str(tmp_path / "y"))
    one_error_line(
        kosmos("export", grounded, "--to", "voc", str(tmp_path / "y")),
        2,
        f"{tmp_path / 'y'} holds a --to yolo export of kosmos: --to voc writes a folder of its own",
    )
    assert not (tmp_path / "y" / "Annotations").exists()


@pytest.mark.parametrize("to", OUTS)
def test_ctrl_c_during_an_export_says_so_and_the_same_command_finishes_it(grounded, tmp_path, to, monkeypatch):
    import kosmos_cli.exports as exports

    real, seen = exports.labels, []

    def stop_at_the_second(*args):
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(exports, "labels", stop_at_the_second)
    (tmp_path / "out").mkdir()
    out = str(tmp_path / "out" / OUTS[to])
    stopped = kosmos("export", grounded, "--to", to, out)
    assert stopped.exit_code == 130
    assert stopped.stderr.splitlines()[-1] == (
        "kosmos: interrupted by SIGINT: the export is not finished; run the same command again to finish it"
    )
    monkeypatch.undo()
    again = kosmos("export", grounded, "--to", to, out)
    assert again.exit_code == 0, again.output
    assert written(out) == fresh(grounded, tmp_path, to)


PAUSED_EXPORT = """
import os, sys, time
import kosmos_cli.exports as exports
from kosmos_cli.cli import main
real, seen = exports.labels, []
def pause(*args):
    seen.append(1)
    if len(seen) == 3:  # two images written, the third on its way
        open(os.environ["PAUSED"], "w").close()
        time.sleep(3600)
    return real(*args)
exports.labels = pause
sys.argv = ["kosmos", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("to", OUTS)
def test_after_kill_9_the_same_command_finishes_the_export_and_removes_its_leftovers(grounded, tmp_path, to):
    import subprocess
    import sys
    import time

    from tests.helpers import ROOT

    (tmp_path / "out").mkdir()
    out = str(tmp_path / "out" / OUTS[to])
    args = [grounded, "--to", to, out] + (["--copy-images"] if to == "yolo" else [])
    paused = str(tmp_path / "paused")
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_EXPORT, "export", *args], cwd=ROOT, env={**os.environ, "PAUSED": paused}
    )
    while not os.path.exists(paused) and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert os.path.exists(paused)
    left = [n for d, _, names in os.walk(tmp_path / "out") for n in names if n.endswith(".tmp")]
    assert left or to in ("yolo", "voc")  # a one-file export's temporary file, left by the kill
    again = kosmos("export", *args)
    assert again.exit_code == 0, again.output
    assert not [n for d, _, names in os.walk(tmp_path / "out") for n in names if n.endswith(".tmp")]
    want = fresh(grounded, tmp_path, to) if to != "yolo" else None
    if to == "yolo":  # copies, not links
        (tmp_path / "fresh").mkdir()
        export(grounded, "yolo", str(tmp_path / "fresh" / "y"), copy_images=True)
        want = written(tmp_path / "fresh" / "y")
    assert written(out) == want


def test_a_folder_an_export_wrote_inside_the_photos_is_never_walked_as_input(grounded, tmp_path, photos):
    from kosmos_cli.inputs.sources import iter_items

    before = sorted(item.path for item in iter_items([str(tmp_path / "photos")]))
    assert len(before) == 3
    export(grounded, "yolo", str(tmp_path / "photos" / "dataset"), copy_images=True)
    assert sorted(os.listdir(tmp_path / "photos" / "dataset" / "images")) == ["a.png", "c.png", "sub"]  # copies
    assert sorted(item.path for item in iter_items([str(tmp_path / "photos")])) == before
    again = export(grounded, "yolo", str(tmp_path / "photos" / "dataset"), copy_images=True)
    assert again.images == 3  # each image once
