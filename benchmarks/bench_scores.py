"""Does a box's score mean something? AUROC of the score for telling right boxes from wrong ones.

    python benchmarks/bench_scores.py [-n 240] [--seed 31337] [--model tests/fixtures/kosmos2-shapes]

Fresh shape scenes (tools/eval_shapes.py's: PNGs at the four CLI sizes, every third a JPEG stored rotated with EXIF
orientation 6 or 8; a seed the training never used) go through kosmos_cli's own `ground`, and `find` with the
rightmost shape's phrase. A ground box is right when its IoU with a true shape of the colour its phrase names is at
least 0.5 (also shown: with any true shape); a find box, when its IoU with the shape asked for is. AUROC is the
chance that a right box scores above a wrong one (ties count half), computed here from ranks, no sklearn; 0.5 is a
coin, 1.0 a perfect ranking. Also: how many boxes each --min-score keeps, and how many of those are right.

Then `kosmos eval` (kosmos_cli.eval_results) measures the same results against the scenes' own truth, written here
as a COCO file whose classes are what the phrases name ("red circle"): COCO AP, AP50 and AP75 from pycocotools and
the --min-score with the best F1 at IoU 0.5; for find, against a truth of the one shape asked for in each scene.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import eval_shapes  # noqa: E402
import shapes  # noqa: E402

from kosmos_cli import eval_results, find, ground, load_engine, read_records  # noqa: E402
from kosmos_cli.inputs.images import display_size  # noqa: E402


def auroc(scored: list[tuple[float, bool]]) -> float:
    """Mann-Whitney U over (score, right) pairs: P(score of a right box > score of a wrong one), ties half."""
    ordered = sorted(scored, key=lambda p: p[0])
    ranks, i = [0.0] * len(ordered), 0
    while i < len(ordered):  # average ranks over runs of equal scores
        j = i
        while j + 1 < len(ordered) and ordered[j + 1][0] == ordered[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    right = sum(1 for _, r in ordered if r)
    wrong = len(ordered) - right
    if not right or not wrong:
        return float("nan")
    rank_sum = sum(rank for rank, (_, r) in zip(ranks, ordered) if r)
    return (rank_sum - right * (right + 1) / 2) / (right * wrong)


def ground_boxes(rows: dict, truth: dict, same_colour: bool) -> list[tuple[float, bool]]:
    out = []
    for path, (_, objs) in truth.items():
        for entity in rows[path]["entities"]:
            colour = shapes.colour_in(entity["phrase"])
            for box, score in zip(entity["boxes_px"], entity["scores"]):
                best = max((shapes.iou(box, o.box) for o in objs if o.color == colour or not same_colour), default=0.0)
                out.append((score, best >= 0.5))
    return out


def summary(name: str, scored: list[tuple[float, bool]]) -> dict:
    right = [s for s, r in scored if r]
    wrong = [s for s, r in scored if not r]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    kept = {}
    for t in (0.0, 0.2, 0.25, 0.3, 0.35, 0.4):
        above = [r for s, r in scored if s >= t]
        kept[t] = {"boxes": len(above), "right": sum(above) / len(above) if above else float("nan")}
    return {
        "name": name,
        "boxes": len(scored),
        "right": len(right),
        "wrong": len(wrong),
        "auroc": auroc(scored),
        "mean_score_right": mean(right),
        "mean_score_wrong": mean(wrong),
        "min_score": kept,
    }


def write_truth(path: Path, truth: dict, only_last: bool = False) -> str:
    """The scenes' boxes as a COCO instances file, classes "<colour> <shape>" (the asked shape alone: `only_last`)."""
    names: list[str] = []
    images, annotations = [], []
    for image_id, (image, (_, objs)) in enumerate(truth.items(), 1):
        width, height = display_size(image)  # as displayed: the truth's frame (EXIF orientation applied)
        images.append({"id": image_id, "file_name": Path(image).name, "width": width, "height": height})
        for obj in objs[-1:] if only_last else objs:
            name = f"{obj.color} {obj.shape}"
            if name not in names:
                names.append(name)
            x1, y1, x2, y2 = obj.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": names.index(name) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(names)]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return str(path)


def measured(name: str, report) -> dict:
    b = report.best
    return {
        "name": name,
        "images": report.images,
        "truth_boxes": report.overall.truth_boxes,
        "predictions": report.overall.predictions,
        "ap": report.overall.ap,
        "ap50": report.overall.ap50,
        "ap75": report.overall.ap75,
        "best_min_score": b.min_score if b else None,
        "best_f1": b.f1 if b else None,
        "best_precision": b.precision if b else None,
        "best_recall": b.recall if b else None,
        "per_class_ap50": {c.name: c.ap50 for c in report.classes},
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
        truth = eval_shapes.write_scenes(folder, args.n, args.seed)
        ground([str(folder)], str(folder / "ground.parquet"), engine=engine, batch_size=args.batch_size)
        rows = {r["path"]: r for r in read_records(str(folder / "ground.parquet"))}
        queries = [{"path": p, "phrase": objs[-1].phrase, "box": objs[-1].box} for p, (_, objs) in truth.items()]
        (folder / "queries.jsonl").write_text(
            "".join(json.dumps({"path": q["path"], "phrase": q["phrase"]}) + "\n" for q in queries)
        )
        find([str(folder / "queries.jsonl")], str(folder / "find.parquet"), engine=engine, batch_size=args.batch_size)
        found = {r["path"]: r for r in read_records(str(folder / "find.parquet"))}
        evals = [
            measured(
                "ground vs every shape",
                eval_results(str(folder / "ground.parquet"), write_truth(folder / "truth.json", truth)),
            ),
            measured(
                "find vs the shape asked for",
                eval_results(str(folder / "find.parquet"), write_truth(folder / "asked.json", truth, only_last=True)),
            ),
        ]

    results = [
        summary("ground, right colour and IoU >= 0.5", ground_boxes(rows, truth, same_colour=True)),
        summary("ground, any shape at IoU >= 0.5", ground_boxes(rows, truth, same_colour=False)),
        summary(
            "find, the shape asked for at IoU >= 0.5",
            [
                (s, shapes.iou(b, q["box"]) >= 0.5)
                for q in queries
                for b, s in zip(found[q["path"]]["boxes_px"], found[q["path"]]["scores"])
            ],
        ),
    ]
    for r in results:
        print(
            f"{r['name']:<42} boxes {r['boxes']:>4} (right {r['right']:>4}, wrong {r['wrong']:>3})  "
            f"AUROC {r['auroc']:.3f}  mean score right {r['mean_score_right']:.3f} wrong {r['mean_score_wrong']:.3f}"
        )
        print(
            "    --min-score  "
            + "  ".join(f"{t:.2f}: {k['boxes']} kept, {k['right']:.1%} right" for t, k in r["min_score"].items())
        )
    for e in evals:
        print(
            f"kosmos eval, {e['name']:<28} images {e['images']}, truth {e['truth_boxes']}, predicted "
            f"{e['predictions']}: AP {e['ap']:.3f}  AP50 {e['ap50']:.3f}  AP75 {e['ap75']:.3f}  best F1 "
            f"{e['best_f1']:.3f} at --min-score {e['best_min_score']:g} (precision {e['best_precision']:.3f}, "
            f"recall {e['best_recall']:.3f})"
        )
    print(json.dumps({"model": args.model, "n": args.n, "seed": args.seed, "results": results, "eval": evals}))


if __name__ == "__main__":
    main()
