"""kosmos eval on the shapes checkpoint, which really grounds: its figures are pycocotools' own, the three truth
formats give the same ones, and the command line's tables, --json, --plot and bad truth behave.

The truth is the scenes' own boxes (tools/shapes.py), written as COCO, YOLO and Pascal VOC by this test, not by
kosmos export, so an error shared by our exporter and our reader cannot hide."""

import json
import random
import shlex
import xml.etree.ElementTree as ET

import pytest
import shapes
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from kosmos_cli import eval_results, export, find, ground, read_records
from tests.helpers import kosmos, one_error_line

N_SCENES = 12


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, shapes_engine):
    """Shape scenes, their ground results, and their truth as COCO, YOLO and VOC: {"results", "coco", "yolo",
    "voc", "truth": {file name: (width, height, [Shape])}, "folder"}."""
    folder = tmp_path_factory.mktemp("eval")
    photos = folder / "photos"
    photos.mkdir()
    rng, known = random.Random(4242), {}
    for i in range(N_SCENES):
        width, height = shapes.CLI_SIZES[i % len(shapes.CLI_SIZES)]
        img, objs = shapes.make_scene(rng, width, height)
        img.save(photos / f"scene_{i:02d}.png")
        known[f"scene_{i:02d}.png"] = (width, height, objs)
    results = folder / "results.jsonl"
    ground([str(photos)], str(results), engine=shapes_engine, batch_size=4)
    names = sorted({f"{s.color} {s.shape}" for _, _, objs in known.values() for s in objs})
    return {
        "results": str(results),
        "coco": _write_coco(folder / "truth.json", known, names),
        "yolo": _write_yolo(folder / "yolo", photos, known, names),
        "voc": _write_voc(folder / "voc", known),
        "truth": known,
        "names": names,
        "folder": folder,
    }


def _write_coco(path, known, names):
    images, annotations = [], []
    for image_id, (name, (w, h, objs)) in enumerate(sorted(known.items()), 1):
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for s in objs:
            x1, y1, x2, y2 = s.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": names.index(f"{s.color} {s.shape}") + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return str(path)


def _write_yolo(folder, photos, known, names):
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for name, (w, h, objs) in known.items():
        (folder / "images" / name).symlink_to(photos / name)
        lines = [
            f"{names.index(f'{s.color} {s.shape}')} {(s.box[0] + s.box[2]) / 2 / w:.6f} "
            f"{(s.box[1] + s.box[3]) / 2 / h:.6f} {(s.box[2] - s.box[0]) / w:.6f} {(s.box[3] - s.box[1]) / h:.6f}"
            for s in objs
        ]
        (folder / "labels" / name.replace(".png", ".txt")).write_text("\n".join(lines) + "\n")
    (folder / "data.yaml").write_text(
        f"path: {folder}\ntrain: images\nval: images\nnames:\n" + "".join(f"  {k}: {n}\n" for k, n in enumerate(names))
    )
    return str(folder / "data.yaml")


def _write_voc(folder, known):
    (folder / "Annotations").mkdir(parents=True)
    for name, (w, h, objs) in known.items():
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = "photos"
        ET.SubElement(root, "filename").text = name
        size = ET.SubElement(root, "size")
        for tag, value in (("width", w), ("height", h), ("depth", 3)):
            ET.SubElement(size, tag).text = str(value)
        for s in objs:
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = f"{s.color} {s.shape}"
            ET.SubElement(obj, "difficult").text = "0"
            box = ET.SubElement(obj, "bndbox")
            x1, y1, x2, y2 = s.box  # VOC: 1-based, inclusive
            for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
                ET.SubElement(box, tag).text = str(value)
        ET.ElementTree(root).write(folder / "Annotations" / name.replace(".png", ".xml"))
    return str(folder)


def _coco_directly(scenes, cat_ids=None):
    """pycocotools on the truth file and the results' boxes, gathered here: the phrase "a red circle" is the class
    "red circle"; every box clipped to its image."""
    with open(scenes["coco"]) as f:
        truth = json.load(f)
    ids = {image["file_name"]: image["id"] for image in truth["images"]}
    cats = {c["name"]: c["id"] for c in truth["categories"]}
    detections = []
    for row in read_records(scenes["results"]):
        name = row["path"].rsplit("/", 1)[-1]
        for entity in row["entities"]:
            phrase = entity["phrase"].lower().removeprefix("a ").removeprefix("an ").strip(" .")
            if phrase not in cats:
                continue
            for (x1, y1, x2, y2), score in zip(entity["boxes_px"], entity["scores"]):
                x1, x2 = max(0, min(x1, row["width"])), max(0, min(x2, row["width"]))
                y1, y2 = max(0, min(y1, row["height"])), max(0, min(y2, row["height"]))
                if x2 > x1 and y2 > y1:
                    detections.append(
                        {"image_id": ids[name], "category_id": cats[phrase], "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "score": score}
                    )  # fmt: skip
    gt = COCO(scenes["coco"])
    run = COCOeval(gt, gt.loadRes(detections), "bbox")
    if cat_ids is not None:
        run.params.catIds = cat_ids
    run.evaluate()
    run.accumulate()
    run.summarize()
    return run.stats


def test_the_figures_are_what_pycocotools_computes(scenes):
    report = eval_results(scenes["results"], scenes["coco"])
    stats = _coco_directly(scenes)
    assert report.overall.ap50 is not None and report.overall.ap50 > 0.2  # the checkpoint does find shapes
    assert (report.overall.ap, report.overall.ap50, report.overall.ap75) == pytest.approx(tuple(stats[:3]))
    for k, c in enumerate(report.classes):  # per class: COCOeval run on that class alone
        alone = _coco_directly(scenes, cat_ids=[k + 1])
        assert (c.ap, c.ap50, c.ap75) == pytest.approx(tuple(None if v < 0 else v for v in alone[:3]))
    assert [c.name for c in report.classes] == scenes["names"]
    assert report.overall.truth_boxes == sum(len(objs) for _, _, objs in scenes["truth"].values())
    assert report.images == N_SCENES and not report.missing and not report.unlabelled


def test_coco_yolo_and_voc_truth_give_the_same_figures(scenes):
    reports = {fmt: eval_results(scenes["results"], scenes[fmt]).as_dict() for fmt in ("coco", "yolo", "voc")}
    for fmt, report in reports.items():
        assert report["format"] == fmt and f"--to {fmt} " in report["command"]
        for key in ("results", "truth", "format", "command"):
            report.pop(key)
        report["classes"].sort(key=lambda c: c["name"])  # VOC names no order: its classes come as first met
    coco = reports.pop("coco")
    assert coco["overall"]["ap50"] > 0.2
    for report in reports.values():
        _same(report, coco)  # YOLO's boxes are 0-1 with 6 decimals: the same figures, to rounding


def _same(a, b, where="report"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, abs=1e-9), where
    else:
        assert a == b, where


def test_the_command_line_shows_tables_and_ends_with_the_export_line(scenes, tmp_path):
    result = kosmos("eval", scenes["results"], "--truth", scenes["coco"], "--plot", str(tmp_path / "pr.png"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    report = eval_results(scenes["results"], scenes["coco"])
    assert lines[-1] == report.command and shlex.split(lines[-1])[:4] == ["kosmos", "export", scenes["results"], "--to"]
    assert f"--min-score {report.best.min_score:g}" in lines[-1]
    assert any(line.split("│")[1].strip() == "red circle" for line in lines if line.count("│") > 8)
    assert f"best F1 {report.best.f1:.3f} at --min-score {report.best.min_score:g}" in result.stdout
    with Image.open(tmp_path / "pr.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 300


@pytest.mark.parametrize("ending", ["png", "svg"])
def test_plot_replaces_only_a_picture_eval_drew(scenes, tmp_path, ending):
    """--plot names a photo, a results file, anything kosmos did not draw: refused, the file as it was."""
    photo = tmp_path / f"holiday.{ending}"
    photo.write_bytes(b"the user's own picture")
    refused = kosmos("eval", scenes["results"], "--truth", scenes["coco"], "--plot", str(photo))
    assert refused.exit_code == 2 and "is not a picture kosmos eval drew" in refused.stderr, refused.output
    assert photo.read_bytes() == b"the user's own picture"
    drawn = tmp_path / f"pr.{ending}"
    for _ in range(2):  # its own picture is redrawn by the same command run again
        again = kosmos("eval", scenes["results"], "--truth", scenes["coco"], "--plot", str(drawn))
        assert again.exit_code == 0, again.output


def test_json_is_the_whole_report_as_one_object(scenes):
    result = kosmos("eval", scenes["results"], "--truth", scenes["yolo"], "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data == json.loads(json.dumps(eval_results(scenes["results"], scenes["yolo"]).as_dict()))
    assert len(data["sweep"]) == 101 and data["best"]["min_score"] in [s["min_score"] for s in data["sweep"]]
    assert {"ap", "ap50", "ap75", "truth_boxes", "predictions", "curve"} <= set(data["classes"][0])
    assert data["images"]["paired"] == N_SCENES


def test_root_pairs_images_by_their_path_below_it(scenes, tmp_path):
    truth = json.loads(open(scenes["coco"]).read())
    for image in truth["images"]:
        image["file_name"] = "elsewhere/" + image["file_name"]  # a prefix the recorded paths do not have
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(truth))
    result = kosmos("eval", scenes["results"], "--truth", str(moved))
    one_error_line(result, 2, "pass --root FOLDER")
    report = eval_results(scenes["results"], str(moved), root=str(scenes["folder"] / "photos"))
    assert (
        report.images == N_SCENES
        and report.overall.ap50 == eval_results(scenes["results"], scenes["coco"]).overall.ap50
    )
    assert f"--root {scenes['folder'] / 'photos'}" in report.command


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "notes.txt", "is not one of the formats"),
        (lambda d: d / "broken.json", "is not JSON"),
        (lambda d: d / "outside.json", "is outside its image"),
        (lambda d: d / "nothing-in-common.json", "no image of truth"),
        (lambda d: d / "missing.json", "truth not found"),
    ],
)
def test_bad_truth_is_one_line_and_exit_2(scenes, tmp_path, make, message):
    (tmp_path / "notes.txt").write_text("dog 1 2 3 4\n")
    (tmp_path / "broken.json").write_text('{"images": [')
    truth = json.loads(open(scenes["coco"]).read())
    truth["annotations"][0]["bbox"][0] = 1000
    (tmp_path / "outside.json").write_text(json.dumps(truth))
    truth = json.loads(open(scenes["coco"]).read())
    for image in truth["images"]:
        image["file_name"] = "other_" + image["file_name"]
    (tmp_path / "nothing-in-common.json").write_text(json.dumps(truth))
    one_error_line(kosmos("eval", scenes["results"], "--truth", str(make(tmp_path))), 2, message)


def test_no_class_in_common_is_one_line_and_exit_2(scenes):
    result = kosmos("eval", scenes["results"], "--truth", scenes["voc"], "--classes", "dog,cat")
    one_error_line(result, 2, "has no class in common with --classes (dog, cat)")


def test_find_results_count_each_phrase_as_its_class(scenes, shapes_engine, tmp_path):
    asked = ["red circle", "blue square"]
    found = tmp_path / "found.parquet"
    find([str(scenes["folder"] / "photos")], str(found), phrases=[f"a {n}" for n in asked], engine=shapes_engine)
    report = eval_results(str(found), scenes["coco"], classes=",".join(asked))
    assert [c.name for c in report.classes] == asked
    assert set(report.truth_left_out) == set(scenes["names"]) - set(asked)  # truth classes not asked: left out
    # pycocotools directly: the truth of the two classes, and find's boxes, each of the class its phrase names
    truth = json.loads(open(scenes["coco"]).read())
    keep = {c["id"]: asked.index(c["name"]) + 1 for c in truth["categories"] if c["name"] in asked}
    truth["categories"] = [{"id": k + 1, "name": n} for k, n in enumerate(asked)]
    truth["annotations"] = [
        dict(a, category_id=keep[a["category_id"]]) for a in truth["annotations"] if a["category_id"] in keep
    ]
    (tmp_path / "two.json").write_text(json.dumps(truth))
    ids = {image["file_name"]: image["id"] for image in truth["images"]}
    detections = [
        {"image_id": ids[row["path"].rsplit("/", 1)[-1]], "category_id": asked.index(row["phrase"][2:]) + 1,
         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
        for row in read_records(str(found))
        for (x1, y1, x2, y2), score in zip(row["boxes_px"], row["scores"])
    ]  # fmt: skip
    gt = COCO(str(tmp_path / "two.json"))
    run = COCOeval(gt, gt.loadRes(detections), "bbox")
    run.evaluate()
    run.accumulate()
    run.summarize()
    assert report.overall.ap50 == pytest.approx(run.stats[1]) and report.overall.ap == pytest.approx(run.stats[0])
    assert report.overall.predictions == len(detections)


@pytest.mark.parametrize("to, truth", [("coco", "export.json"), ("yolo", "yolo/"), ("voc", "voc/")])
def test_results_measured_against_their_own_export_score_a_perfect_1(scenes, tmp_path, to, truth):
    """What kosmos export writes is truth kosmos eval reads (the recipe: correct an export by hand, measure)."""
    export(scenes["results"], to, str(tmp_path / truth))
    report = eval_results(scenes["results"], str(tmp_path / truth))
    assert report.images == N_SCENES and not report.missing and not report.unlabelled
    assert (report.overall.ap, report.overall.ap50, report.overall.ap75) == pytest.approx((1.0, 1.0, 1.0))
    assert (
        report.best is not None
        and report.best.f1 == 1.0
        and report.best.min_score
        <= min(s for row in read_records(scenes["results"]) for e in row["entities"] for s in e["scores"])
    )
