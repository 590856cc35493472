"""The committed toy Kosmos-2 (tests/fixtures/kosmos2-shapes) really grounds, and the script that made it runs.

Only plain transformers here: processor -> generate -> batch_decode -> post_process_generation, on scenes the
model never saw (tools/shapes.py with a seed other than training's).
"""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import shapes  # tools/shapes.py

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "kosmos2-shapes"

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


def load(path):
    processor = transformers.AutoProcessor.from_pretrained(path)
    model = transformers.Kosmos2ForConditionalGeneration.from_pretrained(path).eval()
    return processor, model


def generate(processor, model, images, prompts, bboxes=None):
    inputs = processor(text=prompts, images=images, bboxes=bboxes, return_tensors="pt")
    with torch.inference_mode():
        ids = model.generate(**inputs, max_new_tokens=64, do_sample=False)
    return [processor.post_process_generation(t) for t in processor.batch_decode(ids, skip_special_tokens=True)]


@pytest.mark.parametrize("size", shapes.CLI_SIZES)
def test_scenes_keep_their_promises(size):
    rng = random.Random(7)
    for _ in range(20):
        img, objs = shapes.make_scene(rng, *size)
        assert img.size == size and 1 <= len(objs) <= 2
        assert [o.box[0] for o in objs] == sorted(o.box[0] for o in objs)
        assert len({o.color for o in objs}) == len(objs)
        if len(objs) == 2:
            assert shapes.iou(objs[0].box, objs[1].box) == 0.0
        for o in objs:
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]
            assert img.getpixel(((x1 + x2) // 2, (y1 + y2) // 2)) == shapes.COLORS[o.color]
    assert shapes.caption(objs).startswith("<grounding> An image of<phrase> a ")


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_rotated_jpeg_displays_as_the_scene(tmp_path, orientation):
    from PIL import Image, ImageOps

    img, objs = shapes.make_scene(random.Random(3), 320, 200, n=1, noisy=False)
    path = tmp_path / "r.jpg"
    shapes.save_rotated_jpeg(img, path, orientation)
    stored = Image.open(path)
    assert stored.getexif()[0x0112] == orientation
    shown = ImageOps.exif_transpose(stored)
    assert shown.size == (320, 200)
    x1, y1, x2, y2 = objs[0].box
    centre = shown.getpixel(((x1 + x2) // 2, (y1 + y2) // 2))
    assert max(abs(a - b) for a, b in zip(centre, shapes.COLORS[objs[0].color])) < 12


def test_cli_writes_images_and_truth(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "shapes.py"), str(tmp_path), "-n", "5", "--seed", "1"])
    assert done.returncode == 0
    rows = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert [(r["width"], r["height"]) for r in rows] == [*shapes.CLI_SIZES, shapes.CLI_SIZES[0]]
    assert all(Path(r["path"]).exists() and r["shapes"][0]["color"] in shapes.COLORS for r in rows)


@pytest.fixture(scope="module")
def toy():
    return load(FIXTURE)


@pytest.fixture(scope="module")
def scenes():
    rng = random.Random(20240611)
    out = []
    for i in range(20):
        width, height = shapes.CLI_SIZES[i % len(shapes.CLI_SIZES)]
        img, objs = shapes.make_scene(rng, width, height)
        out.append((img, objs, shapes.normalized_boxes(objs, width, height)))
    return out


def test_captions_name_and_box_every_shape(toy, scenes):
    processor, model = toy
    results = generate(processor, model, [s[0] for s in scenes], ["<grounding> An image of"] * len(scenes))
    right, ious = 0, []
    for (_, objs, boxes), (text, entities) in zip(scenes, results):
        assert text.startswith("An image of")
        right += [shapes.colour_in(name) for name, _, _ in entities] == [o.color for o in objs]
        found = {shapes.colour_in(name): bxs for name, _, bxs in entities}
        ious += [shapes.iou(found[o.color][0], box) if found.get(o.color) else 0.0 for o, box in zip(objs, boxes)]
    assert right >= 0.9 * len(scenes)
    assert sum(i >= 0.5 for i in ious) >= 0.9 * len(ious)


def test_refer_names_the_colour_in_a_box(toy, scenes):
    processor, model = toy
    picks = [random.Random(i).randrange(len(objs)) for i, (_, objs, _) in enumerate(scenes)]
    results = generate(
        processor,
        model,
        [s[0] for s in scenes],
        ["<grounding><phrase> It</phrase> is"] * len(scenes),
        [[boxes[k]] for (_, _, boxes), k in zip(scenes, picks)],
    )
    said = [shapes.colour_in(text.split(" is ")[-1]) for text, _ in results]
    assert sum(c == objs[k].color for c, (_, objs, _), k in zip(said, scenes, picks)) >= 0.8 * len(scenes)


def test_find_boxes_the_named_shape(toy, scenes):
    processor, model = toy
    targets = [(objs[-1], boxes[-1]) for _, objs, boxes in scenes]
    prompts = [f"<grounding><phrase> {obj.phrase}</phrase>" for obj, _ in targets]
    results = generate(processor, model, [s[0] for s in scenes], prompts)
    ious = [shapes.iou(ents[0][2][0], box) if ents else 0.0 for (_, ents), (_, box) in zip(results, targets)]
    assert sum(i >= 0.5 for i in ious) >= 0.8 * len(scenes)


def test_generation_stops_at_eos(toy, scenes):
    processor, model = toy
    inputs = processor(text=["<grounding> An image of"] * 4, images=[s[0] for s in scenes[:4]], return_tensors="pt")
    with torch.inference_mode():
        ids = model.generate(**inputs, max_new_tokens=64, do_sample=False)
    assert ids.shape[1] < inputs["input_ids"].shape[1] + 64
    assert all(processor.tokenizer.eos_token_id in row.tolist() for row in ids)


@pytest.mark.slow
def test_training_script_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "toy"
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "train_toy_model.py"),
        "--out",
        str(out),
        "--steps",
        "5",
        "--pool",
        "64",
        "--eval-images",
        "4",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "step     5" in done.stdout and "eval {" in done.stdout
    processor, model = load(out)
    assert model.config.latent_query_num == 64
    results = generate(
        processor, model, [shapes.make_scene(random.Random(0), 224, 224)[0]], ["<grounding> An image of"]
    )
    assert results[0][0].startswith("An image of")


@pytest.mark.slow
def test_training_is_deterministic_for_a_seed(tmp_path):
    def weights(folder, seed):
        cmd = [
            sys.executable,
            str(ROOT / "tools" / "train_toy_model.py"),
            "--out",
            str(folder),
            "--steps",
            "3",
            "--pool",
            "32",
            "--eval-images",
            "0",
            "--seed",
            str(seed),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return (folder / "model.safetensors").read_bytes()

    first = weights(tmp_path / "a", 0)
    assert weights(tmp_path / "b", 0) == first
    assert weights(tmp_path / "c", 1) != first
