"""kosmos_cli.evaluate without a model: reading truth, pairing images, and the --min-score sweep on a case counted
by hand (the figures pycocotools gives are held to the library itself in tests/e2e/test_eval.py)."""

import json
import shlex

import pytest
from PIL import Image

from kosmos_cli import eval_results, export
from kosmos_cli.errors import InputError, UsageError
from kosmos_cli.evaluate import truth
from kosmos_cli.evaluate.pairing import Names
from kosmos_cli.evaluate.scoring import Count, best, sweep
from kosmos_cli.tasks import GroundRecord
from kosmos_cli.tasks.records import Entity


# -- pairing ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "recorded, truth_name, root, paired",
    [
        (["photos/a.png", "photos/b.png"], "photos/a.png", None, "photos/a.png"),  # the same name
        (["photos/a.png", "photos/b.png"], "a.png", None, "photos/a.png"),  # the truth's name ends the path
        (["/data/photos/sub/a.png"], "sub/a.png", None, "/data/photos/sub/a.png"),
        (["a.png"], "/data/local-files/?d=photos/a.png", None, "a.png"),  # the truth has a prefix of its own
        (["x/a.png", "y/a.png"], "a.png", None, None),  # two fit: never guessed
        (["x/a.png", "y/a.png"], "y/a.png", None, "y/a.png"),
        (["a.png"], "/data/photos/a.png", "/data/photos", "a.png"),  # absolute below --root
        (["photos/ba.png"], "a.png", None, None),  # a name ends another only at a folder
        (["./photos//a.png"], "photos/a.png", None, "./photos//a.png"),
    ],
)
def test_images_pair_by_path(recorded, truth_name, root, paired):
    assert Names(recorded).pair(truth_name, root) == paired


def test_a_results_image_pairs_with_one_truth_image_only():
    names = Names(["photos/a.png"])
    assert names.pair("a.png", None) == "photos/a.png"
    assert names.pair("photos/a.png", None) is None
    assert names.paired() == {"photos/a.png"}


# -- the sweep, counted by hand ----------------------------------------------------------------------------------
def test_the_sweep_counts_what_each_threshold_keeps():
    matches = [(0.9, True), (0.6, False), (0.3, True), (0.2, False), (None, False)]
    counts = {c.min_score: c for c in sweep(matches, truth=3)}
    assert counts[0.2] == Count(0.2, 2, 2, 1)  # a box without a score passes no threshold
    assert counts[0.3] == Count(0.3, 2, 1, 1) and (counts[0.21].tp, counts[0.21].fp) == (2, 1)
    assert counts[0.31] == Count(0.31, 1, 1, 2)
    assert counts[0.91] == Count(0.91, 0, 0, 3)
    assert counts[0.3].precision == pytest.approx(2 / 3) and counts[0.3].recall == pytest.approx(2 / 3)
    assert counts[0.91].precision is None and counts[0.91].f1 == 0.0
    chosen = best(list(counts.values()))
    assert chosen is not None and chosen.min_score == 0.3  # 0.21 to 0.30 keep the same boxes: the highest
    assert best(sweep([(0.5, False)], truth=2)) is None


# -- a small case end to end, without a model ---------------------------------------------------------------------
def _image(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (128, 128, 128)).save(path)
    return str(path)


def _entity(phrase, boxes, size, scores):
    w, h = size
    return Entity(phrase, 0, len(phrase), [[x1 / w, y1 / h, x2 / w, y2 / h] for x1, y1, x2, y2 in boxes], boxes, scores)


@pytest.fixture
def small(tmp_path):
    """Two images with three dogs; four dog boxes predicted (two right) and a cat; a third image the truth lacks and
    a fourth of the truth that the results lack."""
    a, b = _image(tmp_path / "photos" / "a.png", (400, 400)), _image(tmp_path / "photos" / "b.png", (400, 400))
    c = _image(tmp_path / "photos" / "c.png", (64, 64))
    rows = [
        GroundRecord(
            path=a,
            width=400,
            height=400,
            caption="a dog and a dog",
            entities=[
                _entity("a dog", [[0, 0, 100, 100]], (400, 400), [0.9]),  # right
                _entity("a dog", [[200, 200, 250, 250]], (400, 400), [0.6]),  # wrong
            ],
        ),
        GroundRecord(
            path=b,
            width=400,
            height=400,
            caption="two dogs and a cat",
            entities=[
                _entity("two dogs", [[2, 2, 50, 50], [300, 0, 350, 50]], (400, 400), [0.3, 0.2]),  # right, wrong
                _entity("a cat", [[0, 200, 90, 290]], (400, 400), [0.8]),  # names no class of the truth
            ],
        ),
        GroundRecord(path=c, width=64, height=64, caption="grey"),
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 400, "height": 400},
            {"id": 2, "file_name": "b.png", "width": 400, "height": 400},
            {"id": 3, "file_name": "gone.png", "width": 400, "height": 400},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 100, 100], "area": 1e4, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [0, 0, 50, 50], "area": 2500, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 7, "bbox": [100, 100, 50, 50], "area": 2500, "iscrowd": 0},
            {"id": 4, "image_id": 3, "category_id": 7, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        ],
        "categories": [{"id": 7, "name": "dog"}],
    }
    truth_file = tmp_path / "truth.json"
    truth_file.write_text(json.dumps(coco))
    return str(results), str(truth_file), tmp_path


def test_a_small_case_gives_the_figures_counted_by_hand(small, tmp_path, monkeypatch):
    results, truth_file, _ = small
    report = eval_results(results, truth_file)
    by = {c.min_score: c for c in report.sweep}
    # thresholds up to 0.2 keep all four dog boxes: 2 right, 2 wrong, 1 of 3 dogs missed
    assert (by[0.0].tp, by[0.0].fp, by[0.0].fn) == (2, 2, 1) and by[0.0].f1 == pytest.approx(4 / 7)
    assert (by[0.25].tp, by[0.25].fp, by[0.25].fn) == (2, 1, 1) and by[0.25].f1 == pytest.approx(2 / 3)
    assert (by[0.5].tp, by[0.5].fp, by[0.5].fn) == (1, 1, 2) and by[0.5].f1 == pytest.approx(0.4)
    assert (by[0.7].tp, by[0.7].fp, by[0.7].fn) == (1, 0, 2) and by[0.7].f1 == pytest.approx(0.5)
    assert (by[0.95].tp, by[0.95].fp) == (0, 0)
    assert report.best is not None and report.best.min_score == 0.3
    assert report.best.precision == pytest.approx(2 / 3) and report.best.recall == pytest.approx(2 / 3)
    [dog] = report.classes
    assert (dog.name, dog.truth_boxes, dog.predictions) == ("dog", 3, 4)
    assert report.unnamed == 1  # the cat: no class of the truth, left out as export leaves it
    assert report.missing == ["gone.png"] and report.unlabelled == [str(tmp_path / "photos" / "c.png")]
    assert (report.images, report.truth_images, report.result_images) == (2, 3, 3)
    assert report.command == f"kosmos export {results} --to coco export.json --classes dog --min-score 0.3"
    # the line exports exactly the boxes the best threshold kept: 2 right and 1 wrong
    monkeypatch.chdir(tmp_path)
    args = shlex.split(report.command)[2:]
    export(args[0], "coco", "export.json", classes=args[args.index("--classes") + 1], min_score=0.3)
    assert len(json.loads((tmp_path / "export.json").read_text())["annotations"]) == 3
    assert json.loads(json.dumps(report.as_dict()))["best"]["min_score"] == 0.3


def test_nms_drops_the_duplicates_export_drops_and_goes_into_the_export_line(tmp_path):
    a = _image(tmp_path / "a.png", (200, 200))
    row = GroundRecord(
        path=a,
        width=200,
        height=200,
        caption="a dog",
        entities=[_entity("a dog", [[0, 0, 100, 100], [2, 2, 100, 100]], (200, 200), [0.9, 0.5])],
    )
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(row.to_dict()) + "\n")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 200, "height": 200}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "dog"}],
    }
    (tmp_path / "t.json").write_text(json.dumps(coco))
    plain = eval_results(str(results), str(tmp_path / "t.json"))
    assert (plain.sweep[0].tp, plain.sweep[0].fp, plain.overall.predictions) == (1, 1, 2)  # the duplicate is wrong
    dedup = eval_results(str(results), str(tmp_path / "t.json"), nms=0.5)
    assert (dedup.sweep[0].tp, dedup.sweep[0].fp, dedup.overall.predictions, dedup.duplicates) == (1, 0, 1, 1)
    assert dedup.command.endswith("--min-score 0.9 --nms 0.5") and "--nms" not in plain.command
    with pytest.raises(UsageError, match="nms 2"):
        eval_results(str(results), str(tmp_path / "t.json"), nms=2)


# -- reading truth ------------------------------------------------------------------------------------------------
def test_yolo_and_voc_truth_read_into_the_frame_of_the_results(tmp_path):
    yolo = tmp_path / "yolo"
    _image(yolo / "images" / "sub" / "a.png", (200, 100))
    (yolo / "labels" / "sub").mkdir(parents=True)
    (yolo / "labels" / "sub" / "a.txt").write_text("1 0.25 0.5 0.1 0.2\n\n")
    (yolo / "data.yaml").write_text("path: .\ntrain: images\nval: images\nnames:\n  0: cat\n  1: dog\n")
    read = truth.read(str(yolo))
    assert (read.format, read.names) == ("yolo", ["cat", "dog"])
    [image] = read.images
    assert (image.name, image.width, image.height) == ("sub/a.png", 200, 100)
    assert image.boxes[0].name == "dog" and image.boxes[0].box == pytest.approx((40, 40, 60, 60))

    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.png</filename><size><width>200</width><height>100</height></size>"
        "<object><name>dog</name><difficult>1</difficult><bndbox><xmin>41</xmin><ymin>41</ymin><xmax>60</xmax>"
        "<ymax>60</ymax></bndbox></object></annotation>"
    )
    read = truth.read(str(voc))
    assert (read.format, read.names, read.images[0].name) == ("voc", ["dog"], "a.png")
    assert read.images[0].boxes[0].box == (40, 40, 60, 60) and read.images[0].boxes[0].ignored


def test_yolo_splits_in_the_ultralytics_layout_name_images_below_their_split(tmp_path):
    for split in ("train", "val"):
        _image(tmp_path / "images" / split / f"{split}1.png", (10, 10))
        (tmp_path / "labels" / split).mkdir(parents=True)
        (tmp_path / "labels" / split / f"{split}1.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "list.txt").write_text("./images/train/train1.png\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: [images/val, list.txt]\nnames: [dog]\n")
    read = truth.read(str(tmp_path / "data.yaml"))
    assert [(i.name, len(i.boxes)) for i in read.images] == [("train1.png", 1), ("val1.png", 1)]  # listed once


def test_yolo_reads_an_exif_rotated_photo_in_its_displayed_frame(tmp_path):
    import shapes

    (tmp_path / "images").mkdir()
    shapes.save_rotated_jpeg(Image.new("RGB", (320, 200), (90, 90, 90)), tmp_path / "images" / "r.jpg", 6)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "r.txt").write_text("0 0.5 0.5 0.25 0.5\n")
    (tmp_path / "data.yaml").write_text("train: images\nnames: [dog]\n")
    [image] = truth.read(str(tmp_path)).images
    assert (image.width, image.height) == (320, 200)  # stored 200x320, shown 320x200: YOLO's 0-1 are of the shown
    assert image.boxes[0].box == pytest.approx((120, 50, 200, 150))


@pytest.mark.parametrize(
    "files, message",
    [
        ({"t.txt": "hello"}, "is not one of the formats"),
        ({"t.json": "{not json"}, "is not JSON"),
        ({"t.json": "[1, 2]"}, "is not a COCO instances file"),
        (
            {
                "t.json": '{"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}], "categories": '
                '[{"id": 1, "name": "dog"}], "annotations": [{"image_id": 1, "category_id": 1, "bbox": [5, 5, 8, 2]}]}'
            },
            "is outside its image a.png (10x10)",
        ),
        (
            {
                "t.json": '{"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}], "categories": '
                '[{"id": 1, "name": "dog"}], "annotations": [{"image_id": 2, "category_id": 1, "bbox": [1, 1, 2, 2]}]}'
            },
            "is no image of the file",
        ),
        ({"d/data.yaml": "train: images\n"}, "names no classes"),
        ({"d/data.yaml": "names: [dog]\ntrain: images\n"}, "neither a folder of images nor a .txt list"),
        ({"d/Annotations/a.xml": "<annotation><size>"}, "is not XML"),
        ({"d/Annotations/a.xml": "<annotation><size><width>0</width></size></annotation>"}, "no size/width"),
        ({"d/other.txt": ""}, "neither data.yaml nor Annotations/"),
    ],
)
def test_bad_truth_is_one_clear_error(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    target = tmp_path / next(iter(files)).split("/")[0]
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        truth.read(str(target))


def test_a_yolo_box_past_its_image_or_of_an_unknown_class_is_refused(tmp_path):
    _image(tmp_path / "images" / "a.png", (100, 100))
    (tmp_path / "labels").mkdir()
    (tmp_path / "data.yaml").write_text("train: images\nnames: [dog]\n")
    (tmp_path / "labels" / "a.txt").write_text("0 0.95 0.5 0.2 0.2\n")
    with pytest.raises(InputError, match=r"line 1: the box \[85, 40, 105, 60\] is outside its image a.png"):
        truth.read(str(tmp_path))
    (tmp_path / "labels" / "a.txt").write_text("3 0.5 0.5 0.2 0.2\n")
    with pytest.raises(InputError, match="class 3 is not one of data.yaml's names"):
        truth.read(str(tmp_path / "data.yaml"))
