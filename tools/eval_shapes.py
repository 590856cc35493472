"""Measure a shapes checkpoint through kosmos_cli's own ground, refer and find on fresh scenes.

    python tools/eval_shapes.py [--model tests/fixtures/kosmos2-shapes] [-n 240] [--seed 31337]

Scenes come from tools/shapes.py with a seed the training never used: PNGs at the four CLI sizes, and every third
scene a JPEG stored rotated with EXIF orientation 6 or 8 (truth is in the displayed frame). Prints one line per
kind of image and a JSON line with every figure, the way tests/fixtures/kosmos2-shapes/README.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes  # noqa: E402

from kosmos_cli import find, ground, load_engine, refer  # noqa: E402
from kosmos_cli.output.reader import read_records  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def write_scenes(folder: Path, n: int, seed: int) -> dict[str, tuple[str, list[shapes.Shape]]]:
    """path -> (kind, true shapes)."""
    rng, truth = random.Random(seed), {}
    for i in range(n):
        width, height = shapes.CLI_SIZES[i % len(shapes.CLI_SIZES)]
        img, objs = shapes.make_scene(rng, width, height)
        if i % 3 == 2:
            orientation = 6 if i % 2 else 8
            path = folder / f"scene_{i:04d}_exif{orientation}.jpg"
            shapes.save_rotated_jpeg(img, path, orientation)
            kind = f"jpeg exif {orientation}"
        else:
            path = folder / f"scene_{i:04d}.png"
            img.save(path)
            kind = f"png {width}x{height}"
        truth[str(path)] = (kind, objs)
    return truth


def measure_ground(rows: dict, truth: dict) -> dict[str, dict[str, float]]:
    tally = defaultdict(lambda: {"images": 0, "right": 0, "objects": 0, "hits": 0, "iou": 0.0})
    for path, (kind, objs) in truth.items():
        found = [(shapes.colour_in(e["phrase"]), b) for e in rows[path]["entities"] for b in e["boxes_px"]]
        for key in (kind, "all"):
            t = tally[key]
            t["images"] += 1
            t["right"] += sorted(c for c, _ in found) == sorted(o.color for o in objs)
            for obj in objs:
                best = max((shapes.iou(b, obj.box) for c, b in found if c == obj.color), default=0.0)
                t["objects"] += 1
                t["hits"] += best >= 0.5
                t["iou"] += best
    return {
        key: {
            "images": t["images"],
            "colours_and_count": t["right"] / t["images"],
            "objects": t["objects"],
            "iou_ge_0.5": t["hits"] / t["objects"],
            "mean_iou": t["iou"] / t["objects"],
        }
        for key, t in sorted(tally.items())
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "tests" / "fixtures" / "kosmos2-shapes"))
    parser.add_argument("-n", type=int, default=240, help="scenes to generate")
    parser.add_argument("--seed", type=int, default=31337)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    engine = load_engine(args.model, device="cpu", dtype="float32")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        truth = write_scenes(folder, args.n, args.seed)

        ground([str(folder)], str(folder / "ground.jsonl"), engine=engine, batch_size=args.batch_size)
        rows = {r["path"]: r for r in read_records(str(folder / "ground.jsonl"))}
        figures = {"ground": measure_ground(rows, truth)}

        regions = [
            {"path": p, "x1": o.box[0], "y1": o.box[1], "x2": o.box[2], "y2": o.box[3], "truth": o.color}
            for p, (_, objs) in truth.items()
            for o in objs
        ]
        (folder / "regions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in regions))
        refer([str(folder / "regions.jsonl")], str(folder / "refer.jsonl"), engine=engine, batch_size=args.batch_size)
        said = [shapes.colour_in(r["description"]) == r["truth"] for r in read_records(str(folder / "refer.jsonl"))]
        figures["refer"] = {"regions": len(said), "colour_right": sum(said) / len(said)}

        queries = [{"path": p, "phrase": objs[-1].phrase, "box": objs[-1].box} for p, (_, objs) in truth.items()]
        (folder / "queries.jsonl").write_text(
            "".join(json.dumps({"path": q["path"], "phrase": q["phrase"]}) + "\n" for q in queries)
        )
        find([str(folder / "queries.jsonl")], str(folder / "find.jsonl"), engine=engine, batch_size=args.batch_size)
        found = {r["path"]: r for r in read_records(str(folder / "find.jsonl"))}
        ious = [max((shapes.iou(b, q["box"]) for b in found[q["path"]]["boxes_px"]), default=0.0) for q in queries]
        figures["find"] = {
            "phrases": len(ious),
            "iou_ge_0.5": sum(i >= 0.5 for i in ious) / len(ious),
            "mean_iou": sum(ious) / len(ious),
        }

    for kind, f in figures["ground"].items():
        print(
            f"ground  {kind:<18} images {f['images']:>4}  colours+count {f['colours_and_count']:.3f}  "
            f"objects {f['objects']:>4}  IoU>=0.5 {f['iou_ge_0.5']:.3f}  mean IoU {f['mean_iou']:.3f}"
        )
    print(f"refer   regions {figures['refer']['regions']}  colour named {figures['refer']['colour_right']:.3f}")
    print(
        f"find    phrases {figures['find']['phrases']}  IoU>=0.5 {figures['find']['iou_ge_0.5']:.3f}  "
        f"mean IoU {figures['find']['mean_iou']:.3f}"
    )
    print(json.dumps({"model": args.model, "n": args.n, "seed": args.seed, **figures}))


if __name__ == "__main__":
    main()
