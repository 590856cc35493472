"""The GPU half of benchmarks/gpu.sh: full-size Kosmos-2 (`Kosmos2Config()`, random weights) in bfloat16, 64 new
tokens, end-of-sequence suppressed (an id no token has), so every path does the same work. Measures, in one run:

- the seed loop: one image at a time, processor -> generate -> batch_decode -> post_process_generation;
- batched generate alone (inputs prepared beforehand, untimed) at batch 64;
- ground through the library (what `kosmos ground` runs, without the process start) with --decoder hf and fast at
  batch 64, 128 and 256, writing Parquet;
- the vision encoder alone (get_image_features) at batch 256;
- fast against hf on the shapes model (tests/fixtures/kosmos2-shapes) on the card, float32 and bfloat16: the share
  of captions that agree.

Each part that fails is recorded with its error and the rest goes on. Writes OUT/gpu.json and OUT/gpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import tiny_checkpoint  # noqa: E402

NEW_TOKENS, DTYPE = 64, "bfloat16"


def sync():
    import torch

    torch.cuda.synchronize()


def timed(fn):
    sync()
    started = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - started, out


def full_model():
    import torch
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

    torch.manual_seed(0)
    model = Kosmos2ForConditionalGeneration(Kosmos2Config()).to("cuda", torch.bfloat16).eval()
    return model, tiny_checkpoint.build_processor()


def engine_for(model, processor, decoder: str, new_tokens: int = NEW_TOKENS, eos_off: bool = True):
    from kosmos_cli.engine import Engine, GenerationOptions

    engine = Engine.from_model(model, processor, GenerationOptions(new_tokens, decoder=decoder), "full-random")
    if eos_off:
        engine._eos = model.config.text_config.vocab_size + 1  # noqa: SLF001 - every row runs to new_tokens
    return engine


def images(folder: str, count: int) -> list[str]:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"{i:04d}.png")
        Image.new("RGB", (320, 240), (7 * i % 255, 90, 200 - i % 150)).save(path)
        paths.append(path)
    return paths


def seed_loop(model, processor, paths, results):
    import torch
    from PIL import Image

    impossible = model.config.text_config.vocab_size + 1

    def run():
        for path in paths:
            inputs = processor(text="<grounding> An image of", images=Image.open(path), return_tensors="pt").to("cuda")
            with torch.inference_mode():
                out = model.generate(
                    pixel_values=inputs["pixel_values"].to(torch.bfloat16),
                    input_ids=inputs["input_ids"],
                    attention_mask=inputs["attention_mask"],
                    image_embeds_position_mask=inputs["image_embeds_position_mask"],
                    max_new_tokens=NEW_TOKENS,
                    eos_token_id=impossible,
                    pad_token_id=1,
                )
            text = processor.batch_decode(out, skip_special_tokens=True)[0]
            processor.post_process_generation(text)

    seconds, _ = timed(run)
    results["seed_loop"] = {"images": len(paths), "seconds": seconds, "images_per_s": len(paths) / seconds}


def bare_generate(model, processor, results, batch=64, rounds=2):
    import torch

    engine = engine_for(model, processor, "hf")
    from PIL import Image

    prepared = [engine.prepare(Image.new("RGB", (224, 224), (i, 9, 9)), _caption(), image_key=i) for i in range(batch)]
    pixels = torch.stack([torch.from_numpy(p.pixel_values) for p in prepared]).to("cuda", torch.bfloat16)
    ids = torch.tensor([p.input_ids for p in prepared], device="cuda")
    mask = torch.tensor([p.image_mask for p in prepared], device="cuda")

    def run():
        with torch.inference_mode():
            for _ in range(rounds):
                model.generate(
                    pixel_values=pixels,
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    image_embeds_position_mask=mask,
                    max_new_tokens=NEW_TOKENS,
                    eos_token_id=engine._eos,  # noqa: SLF001
                    pad_token_id=1,
                )

    seconds, _ = timed(run)
    n = batch * rounds
    results["bare_generate"] = {"batch": batch, "images": n, "seconds": seconds, "images_per_s": n / seconds}


def _caption():
    from kosmos_cli.prompts import caption_prompt

    return caption_prompt()


def grounds(model, processor, paths, folder, results):
    from kosmos_cli import ground

    rows = results.setdefault("ground", [])
    for batch in (64, 128, 256):
        for decoder in ("hf", "fast"):
            engine = engine_for(model, processor, decoder)
            out = os.path.join(folder, f"ground-{decoder}-{batch}.parquet")
            try:
                seconds, summary = timed(
                    lambda out=out, engine=engine, batch=batch: ground(
                        paths, out, engine=engine, batch_size=batch, overwrite=True
                    )
                )
                rows.append(
                    {
                        "decoder": decoder,
                        "batch": batch,
                        "images": summary.done,
                        "seconds": seconds,
                        "images_per_s": summary.done / seconds,
                        "failed": summary.failed,
                    }
                )
            except Exception as exc:  # noqa: BLE001 - an OOM at 256 is a result too
                rows.append({"decoder": decoder, "batch": batch, "error": f"{type(exc).__name__}: {exc}"[:300]})
            print(rows[-1], flush=True)


def vision(model, results, batch=256, rounds=4):
    import torch

    pixels = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        model.get_image_features(pixels[:8], return_dict=True)
        seconds, _ = timed(lambda: [model.get_image_features(pixels, return_dict=True) for _ in range(rounds)])
    results["vision_encoder"] = {"batch": batch, "images": batch * rounds, "images_per_s": batch * rounds / seconds}


def agreement(results, count=64):
    import random

    import shapes
    import torch
    from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

    from kosmos_cli.prompts import caption_prompt, find_prompt

    path = str(ROOT / "tests" / "fixtures" / "kosmos2-shapes")
    processor = AutoProcessor.from_pretrained(path)
    rng = random.Random(7)
    scenes = [shapes.make_scene(rng, 224, 224)[0] for _ in range(count)]
    prompts = [caption_prompt(), find_prompt("a red square"), find_prompt("the big blue circle on the left")]
    out = {}
    for dtype in ("float32", "bfloat16"):
        model = Kosmos2ForConditionalGeneration.from_pretrained(path, dtype=getattr(torch, dtype)).to("cuda").eval()
        texts = {}
        for decoder in ("hf", "fast"):
            engine = engine_for(model, processor, decoder, new_tokens=48, eos_off=False)
            batch = [engine.prepare(s, prompts[i % 3], image_key=i) for i, s in enumerate(scenes)]
            answers = []
            if decoder == "hf":  # generate needs one prompt length per batch
                for length in sorted({len(p.input_ids) for p in batch}):
                    group = [i for i, p in enumerate(batch) if len(p.input_ids) == length]
                    got = engine.forward([batch[i] for i in group])
                    answers.extend(zip(group, got))
                texts[decoder] = [t.split("</s>")[0] for _, t in sorted(answers)]
            else:
                texts[decoder] = [t.split("</s>")[0] for t in engine.forward(batch)]
        same = sum(a == b for a, b in zip(texts["hf"], texts["fast"]))
        out[dtype] = {"requests": count, "same_text": same, "share": same / count}
    results["shapes_agreement"] = out


def markdown(results) -> str:
    lines = [
        f"# GPU run: {results.get('gpu', '?')}",
        "",
        f"full-size Kosmos-2, random weights, {DTYPE}, {NEW_TOKENS} new tokens, end-of-sequence suppressed",
        "",
        "| path | batch | images/s |",
        "|---|---|---|",
    ]
    if "seed_loop" in results:
        lines.append(f"| seed loop | 1 | {results['seed_loop']['images_per_s']:.2f} |")
    if "bare_generate" in results:
        lines.append(
            f"| bare batched generate | {results['bare_generate']['batch']} | "
            f"{results['bare_generate']['images_per_s']:.2f} |"
        )
    for row in results.get("ground", []):
        rate = f"{row['images_per_s']:.2f}" if "images_per_s" in row else row.get("error", "")
        lines.append(f"| ground --decoder {row['decoder']} | {row['batch']} | {rate} |")
    if "vision_encoder" in results:
        lines.append(
            f"| vision encoder alone | {results['vision_encoder']['batch']} | "
            f"{results['vision_encoder']['images_per_s']:.2f} |"
        )
    for dtype, a in results.get("shapes_agreement", {}).items():
        lines.append(f"\nshapes model, {dtype}: fast and hf agree on {a['same_text']}/{a['requests']} texts")
    for name, error in results.get("errors", {}).items():
        lines.append(f"\n{name} failed: {error}")
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=512)
    args = parser.parse_args()
    results: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    results["errors"] = {}
    model, processor = full_model()
    with tempfile.TemporaryDirectory() as folder:
        paths = images(os.path.join(folder, "images"), args.images)
        parts = [
            ("seed_loop", lambda: seed_loop(model, processor, paths[:24], results)),
            ("bare_generate", lambda: bare_generate(model, processor, results)),
            ("ground", lambda: grounds(model, processor, paths, folder, results)),
            ("vision_encoder", lambda: vision(model, results)),
        ]
        for name, part in parts:
            try:
                part()
            except Exception:  # noqa: BLE001 - record it, go on with the others
                results["errors"][name] = traceback.format_exc()[-1500:]
            print(name, "done", flush=True)
            Path(args.out, "gpu.json").write_text(json.dumps(results, indent=2))
    model.to("cpu")  # the card's memory for the shapes model
    torch.cuda.empty_cache()
    try:
        agreement(results)
    except Exception:  # noqa: BLE001
        results["errors"]["shapes_agreement"] = traceback.format_exc()[-1500:]
    Path(args.out, "gpu.json").write_text(json.dumps(results, indent=2))
    Path(args.out, "gpu.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
