"""The trained toy checkpoint through `kosmos ground`: boxes land on the shapes, in the displayed frame.

Fresh scenes (a seed the training never used), PNGs at four sizes and aspect ratios plus JPEGs stored rotated
with EXIF orientation 6 and 8. This is what catches a box scaled by the wrong size, an EXIF rotation applied
twice or not at all, two images swapped inside a batch, or a parser that drops an entity.
"""

import json
import os
import random
import re
import subprocess
import sys

import pytest
import shapes  # tools/shapes.py

from kosmos_cli import ground
from kosmos_cli.output.reader import read_records
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """path -> true shapes (boxes in the displayed frame)."""
    folder = tmp_path_factory.mktemp("scenes")
    rng = random.Random(987654)
    truth = {}
    for i in range(24):
        width, height = shapes.CLI_SIZES[i % len(shapes.CLI_SIZES)]
        img, objs = shapes.make_scene(rng, width, height)
        if i % 6 == 4:
            path = folder / f"scene_{i:02d}_exif6.jpg"
            shapes.save_rotated_jpeg(img, path, 6)
        elif i % 6 == 5:
            path = folder / f"scene_{i:02d}_exif8.jpg"
            shapes.save_rotated_jpeg(img, path, 8)
        else:
            path = folder / f"scene_{i:02d}.png"
            img.save(path)
        truth[str(path)] = (width, height, objs)
    return folder, truth


@pytest.fixture(scope="module")
def batched(shapes_engine, scenes, tmp_path_factory):
    folder, _ = scenes
    out = str(tmp_path_factory.mktemp("out") / "batched.parquet")
    ground([str(folder)], out, engine=shapes_engine, batch_size=8)
    return {r["path"]: r for r in read_records(out)}


def test_colours_count_and_boxes_are_right(batched, scenes):
    _, truth = scenes
    assert set(batched) == set(truth)
    right_images, hits, objects = 0, 0, 0
    for path, (width, height, objs) in truth.items():
        row = batched[path]
        assert row["status"] == "ok" and (row["width"], row["height"]) == (width, height)
        found = [(shapes.colour_in(e["phrase"]), e["boxes_px"]) for e in row["entities"]]
        if sorted(c for c, _ in found) == sorted(o.color for o in objs):
            right_images += 1
        for obj in objs:
            objects += 1
            boxes = [b for c, bs in found if c == obj.color for b in bs]
            if any(shapes.iou(b, obj.box) >= 0.5 for b in boxes):
                hits += 1
    assert right_images / len(truth) >= 0.9, f"colours and count right on {right_images}/{len(truth)} images"
    assert hits / objects >= 0.9, f"IoU >= 0.5 on {hits}/{objects} objects"


def test_rotated_jpegs_are_boxed_in_the_displayed_frame(batched, scenes):
    _, truth = scenes
    rotated = [p for p in truth if "exif" in p]
    hits = objects = 0
    for path in rotated:
        width, height, objs = truth[path]
        assert (batched[path]["width"], batched[path]["height"]) == (width, height)
        for obj in objs:
            objects += 1
            entities = batched[path]["entities"]
            boxes = [b for e in entities if shapes.colour_in(e["phrase"]) == obj.color for b in e["boxes_px"]]
            hits += any(shapes.iou(b, obj.box) >= 0.5 for b in boxes)
    assert objects and hits / objects >= 0.75, f"{hits}/{objects}"


def _comparable(rows):
    return {p: {k: v for k, v in r.items() if k != "seconds"} for p, r in rows.items()}


def test_a_batch_of_8_gives_exactly_the_records_of_one_at_a_time(shapes_engine, batched, scenes, tmp_path):
    folder, _ = scenes
    out = str(tmp_path / "single.jsonl")
    ground([str(folder)], out, engine=shapes_engine, batch_size=1)
    single = {r["path"]: r for r in read_records(out)}
    assert _comparable(single) == _comparable(batched)
    assert sum(len(r["entities"]) for r in single.values()) >= len(single)  # real entities were compared


def test_shuffling_the_input_order_changes_no_record(shapes_engine, batched, scenes, tmp_path):
    _, truth = scenes
    order = sorted(truth)
    random.Random(3).shuffle(order)
    manifest = tmp_path / "shuffled.txt"
    manifest.write_text("\n".join(order) + "\n")
    out = str(tmp_path / "shuffled.jsonl")
    ground([str(manifest)], out, engine=shapes_engine, batch_size=8)
    rows = list(read_records(out))
    assert [r["path"] for r in rows] == order
    assert _comparable({r["path"]: r for r in rows}) == _comparable(batched)


def test_the_readme_demo_runs_offline(shapes_model, tmp_path):
    """The README's offline demo, run as written: tools/shapes.py draws scenes, kosmos ground boxes them, kosmos
    draw annotates them. Run from a scratch folder that sees the repository's tools/ and tests/."""
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    command = next(b.strip() for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if "tools/shapes.py" in b)
    for name in ("tools", "tests"):
        (tmp_path / name).symlink_to(os.path.join(ROOT, name))
    env = dict(os.environ, HF_HUB_OFFLINE="1", PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]

    truth = {}
    for line in (tmp_path / "demo" / "truth.jsonl").read_text().splitlines():
        row = json.loads(line)
        truth[os.path.basename(row["path"])] = row["shapes"]
    rows = {os.path.basename(r["path"]): r for r in read_records(str(tmp_path / "demo.parquet"))}
    assert sorted(rows) == sorted(truth) and len(rows) == 8
    right = sum(
        sorted(shapes.colour_in(e["phrase"]) for e in rows[name]["entities"]) == sorted(s["color"] for s in shapes_)
        for name, shapes_ in truth.items()
    )
    assert right >= 6, f"colours right on {right}/8 demo images"
    assert len(list((tmp_path / "demo_drawn").rglob("*.png"))) == 8
