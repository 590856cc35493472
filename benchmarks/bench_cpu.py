"""int8 against float32 on the CPU: `ground` on the full-size architecture at batch 8, each in a process of its own.

    python benchmarks/bench_cpu.py [-n 8] [--batch-size 8] [--max-new-tokens 32]

- **Speed and memory**: a checkpoint of the real architecture (`Kosmos2Config()`, 1.66 B parameters, random
  weights, tools/tiny_checkpoint's processor) is written to a temporary folder; then `kosmos_cli.ground` runs over
  -n images, once in float32 and once with `quantize="int8"`, each in a fresh
  subprocess, which reports its images/s (model loading not counted), its peak resident memory (its own ru_maxrss:
  loading included; int8 reads each float32 layer, quantizes it and frees it before the next, so the float32 model
  never exists whole) and its resident memory once loaded. The checkpoint is written by a process of its own too.
  Both ratios are printed: int8's throughput over float32's (target >= 2) and int8's peak over float32's (<= 0.5).
- **Agreement, full-size**: the tokens each image generated (captured as the engine returns them), int8 against
  float32: equal or not.
- **Agreement, shapes**: the committed shapes checkpoint (tests/fixtures/kosmos2-shapes, a model that really grounds)
  over 30 generated scenes, in float32 and int8: captions equal, and boxes at IoU >= 0.9 with float32's.

Random weights say nothing of the real checkpoint's agreement: it is not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tools")]


def write_checkpoint(folder: str) -> str:
    """The full-size architecture with random weights (seed 0), and a processor, saved as a checkpoint."""
    import torch
    from tiny_checkpoint import build_processor
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

    processor = build_processor()
    config = Kosmos2Config()
    config.text_config.vocab_size = max(config.text_config.vocab_size, len(processor.tokenizer))
    torch.manual_seed(0)
    model = Kosmos2ForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def images(folder: str, n: int) -> list[str]:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        path = os.path.join(folder, f"{i:03d}.jpg")
        img = Image.new("RGB", (640, 480), (37 * i % 255, 90, 200))
        img.paste((200, 30 * i % 255, 40), (80 + 7 * i, 60, 300, 260))
        img.save(path, quality=90)
        paths.append(path)
    return paths


def child(args) -> None:
    """One configuration, in this process: load, ground the images; a JSON line of what it measured."""
    import torch

    from kosmos_cli import ground, load_engine

    started = time.perf_counter()
    engine = load_engine(args.model, max_new_tokens=args.max_new_tokens, quantize=args.quantize)
    loaded = time.perf_counter() - started
    tokens: dict[str, list[int]] = {}
    answer = engine.forward_scored_safe

    def keeping(batch, stop_at=None):  # the tokens of each image, as the engine returns them
        out = answer(batch, stop_at)
        tokens.update({p.image_key: list(g.ids) for p, g in zip(batch, out)})
        return out

    engine.forward_scored_safe = keeping  # type: ignore[method-assign]
    paths = args.images.split(os.pathsep)
    resident = _resident_mb()
    started = time.perf_counter()
    summary = ground(paths, os.path.join(args.out, "r.jsonl"), engine=engine, batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "rate": summary.done / seconds,
        "seconds": seconds,
        "load": loaded,
        "peak_mb": peak,
        "resident_mb": resident,
        "threads": torch.get_num_threads(),
        "decoding": engine.decoding,
        "tokens": [tokens[p] for p in paths],
    }
    print(json.dumps(report))


def _resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_child(model: str, paths: list[str], out: str, quantize: str | None, args) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", "--model", model, "--out", out]
    command += ["--images", os.pathsep.join(paths), "--batch-size", str(args.batch_size)]
    command += ["--max-new-tokens", str(args.max_new_tokens)] + (["--quantize", quantize] if quantize else [])
    os.makedirs(out, exist_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    if done.returncode:
        sys.exit(f"the {quantize or 'float32'} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def shapes_agreement(n: int = 30) -> tuple[int, int, int, int]:
    """(captions equal, scenes, boxes at IoU >= 0.9 with float32's, float32 boxes) on the shapes checkpoint."""
    import shapes

    from kosmos_cli import ground, load_engine
    from kosmos_cli.output.reader import read_records

    model = os.path.join(ROOT, "tests", "fixtures", "kosmos2-shapes")
    with tempfile.TemporaryDirectory() as tmp:
        rng = random.Random(2024)
        paths = []
        for i in range(n):
            width, height = shapes.CLI_SIZES[i % len(shapes.CLI_SIZES)]
            path = os.path.join(tmp, f"s{i:02d}.png")
            shapes.make_scene(rng, width, height)[0].save(path)
            paths.append(path)
        rows = {}
        for mode in (None, "int8"):
            out = os.path.join(tmp, f"{mode}.jsonl")
            ground(paths, out, engine=load_engine(model, max_new_tokens=48, quantize=mode), batch_size=8)
            rows[mode] = list(read_records(out))
    same = sum(a["caption"] == b["caption"] for a, b in zip(rows[None], rows["int8"]))
    kept = total = 0
    for a, b in zip(rows[None], rows["int8"]):
        theirs = [box for e in b["entities"] for box in e["boxes_px"]]
        for box in (box for e in a["entities"] for box in e["boxes_px"]):
            total += 1
            kept += any(shapes.iou(box, other) >= 0.9 for other in theirs)
    return same, n, kept, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=8, help="images")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--no-shapes", action="store_true", help="skip the shapes checkpoint's agreement")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--write", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--quantize", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.write:
        write_checkpoint(args.write)
        return

    if not args.no_shapes:
        same, scenes, kept, boxes = shapes_agreement()
        print(f"shapes checkpoint, {scenes} scenes: captions equal {same}/{scenes}, boxes at IoU >= 0.9 {kept}/{boxes}")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        model = os.path.join(tmp, "full")  # written by a process of its own: this one stays small
        subprocess.run([sys.executable, os.path.abspath(__file__), "--write", model], check=True)
        print(f"full-size random checkpoint written in {time.perf_counter() - started:.0f} s", flush=True)
        paths = images(os.path.join(tmp, "images"), args.n)
        runs = {
            mode: run_child(model, paths, os.path.join(tmp, mode or "float32"), mode, args) for mode in (None, "int8")
        }
    base, int8 = runs[None], runs["int8"]
    equal = sum(a == b for a, b in zip(base["tokens"], int8["tokens"]))
    print(
        f"\nfull-size architecture (random weights), {args.n} images, batch {args.batch_size}, "
        f"{args.max_new_tokens} new tokens, {base['threads']} torch threads, kosmos_cli.ground in a process each"
    )
    print("| weights | images/s | ground s | load s | peak RSS MB | RSS once loaded MB | decoding |")
    print("|---|---|---|---|---|---|---|")
    for name, r in (("float32", base), ("int8", int8)):
        print(
            f"| {name} | {r['rate']:.3f} | {r['seconds']:.1f} | {r['load']:.1f} | {r['peak_mb']:.0f} | "
            f"{r['resident_mb']:.0f} | {r['decoding']} |"
        )
    print(f"\nint8 / float32 throughput: {int8['rate'] / base['rate']:.2f}x (target >= 2.0)")
    print(f"int8 / float32 peak RSS: {int8['peak_mb'] / base['peak_mb']:.2f} (target <= 0.5)")
    print(f"tokens equal to float32's: {equal}/{args.n} images")


if __name__ == "__main__":
    main()
