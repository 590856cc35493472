"""`kosmos ground` against the seed's loop, on the same images and checkpoint, in the same run.

The seed loop is what a user writes by hand: for each image, processor -> generate -> batch_decode ->
post_process_generation, one image at a time. We also time bare batched `generate` on the same batches
(preprocessing done beforehand, untimed), to show how much of ground's time is the model itself.

    python benchmarks/bench_ground.py --arch tiny            # seconds
    python benchmarks/bench_ground.py --arch full -n 16      # the real shapes: Kosmos2Config(), random weights

Random weights never emit end-of-sequence, so every image generates exactly --max-new-tokens tokens on every
path: the work compared is the same.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))


def build(arch: str, dtype):
    import torch
    from tiny_checkpoint import build_processor
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

    processor = build_processor()
    if arch == "full":
        config = Kosmos2Config()  # the real architecture: 1.66 B parameters
        config.text_config.vocab_size = max(config.text_config.vocab_size, len(processor.tokenizer))
    else:
        config = Kosmos2Config(
            text_config=dict(
                vocab_size=len(processor.tokenizer),
                embed_dim=64,
                layers=2,
                attention_heads=2,
                ffn_dim=128,
                max_position_embeddings=512,
            ),
            vision_config=dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=224,
                patch_size=28,
            ),
            latent_query_num=64,
        )
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = Kosmos2ForConditionalGeneration(config).to(dtype).eval()
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 1
    return model, processor


def images(folder: str, n: int) -> list[str]:
    from PIL import Image

    sizes = [(640, 480), (480, 640), (1024, 768), (300, 300)]
    paths = []
    for i in range(n):
        path = os.path.join(folder, f"img_{i:03d}.jpg")
        Image.new("RGB", sizes[i % 4], ((37 * i) % 255, (91 * i) % 255, 128)).save(path, quality=90)
        paths.append(path)
    return paths


def seed_loop(model, processor, paths, prompt, gen):
    """One image at a time, the way the model card shows it."""
    import torch
    from PIL import Image

    out = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        inputs = processor(text=prompt, images=image, return_tensors="pt")
        with torch.inference_mode():
            ids = model.generate(
                pixel_values=inputs["pixel_values"].to(model.dtype),
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                image_embeds_position_mask=inputs["image_embeds_position_mask"],
                **gen,
            )
        text = processor.batch_decode(ids, skip_special_tokens=False)[0]
        out.append(processor.post_process_generation(text))
    return out


def bare_generate(model, processor, paths, prompt, gen, batch):
    """Only model.generate on batches of `batch`, inputs prepared beforehand: the floor for ground's time."""
    import torch
    from PIL import Image

    batches = []
    for i in range(0, len(paths), batch):
        imgs = [Image.open(p).convert("RGB") for p in paths[i : i + batch]]
        batches.append(processor(text=[prompt] * len(imgs), images=imgs, return_tensors="pt"))
    started = time.perf_counter()
    with torch.inference_mode():
        for inputs in batches:
            model.generate(
                pixel_values=inputs["pixel_values"].to(model.dtype),
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                image_embeds_position_mask=inputs["image_embeds_position_mask"],
                **gen,
            )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["tiny", "full"], default="tiny")
    parser.add_argument("-n", type=int, default=None, help="images (default: 64 tiny, 16 full)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--dtype",
        default="float32",
        help="float32 (default: this AVX2-only CPU runs bfloat16 matmuls ~200x slower) or bfloat16",
    )
    args = parser.parse_args()

    import torch

    from kosmos_cli.model.engine import Engine, GenerationOptions
    from kosmos_cli.model.prompts import PRESETS
    from kosmos_cli.run.runner import RunOptions, run
    from kosmos_cli.tasks import Ground

    n = args.n or (16 if args.arch == "full" else 64)
    dtype = getattr(torch, args.dtype)
    model, processor = build(args.arch, dtype)
    params = sum(p.numel() for p in model.parameters()) / 1e9
    gen = {"max_new_tokens": args.max_new_tokens, "do_sample": False, "num_beams": 1}
    prompt = PRESETS["brief"]
    with tempfile.TemporaryDirectory() as tmp:
        paths = images(tmp, n)
        seed_loop(model, processor, paths[:1], prompt, gen)  # warm-up, untimed

        started = time.perf_counter()
        seed_loop(model, processor, paths, prompt, gen)
        seed = time.perf_counter() - started

        bare = bare_generate(model, processor, paths, prompt, gen, args.batch_size)

        engine = Engine.from_model(model, processor, GenerationOptions(max_new_tokens=args.max_new_tokens))
        out = os.path.join(tmp, "results.parquet")
        started = time.perf_counter()
        summary = run(Ground(), [tmp], engine, RunOptions(out=out, batch_size=args.batch_size))
        ours = time.perf_counter() - started
        assert summary.done == n, summary.line()

    print(
        f"arch={args.arch} params={params:.2f}B dtype={str(dtype).split('.')[-1]} images={n} "
        f"batch={args.batch_size} max_new_tokens={args.max_new_tokens} threads={torch.get_num_threads()}"
    )
    print(f"seed loop (batch 1):       {n / seed:8.3f} images/s  ({seed:.1f} s)")
    print(f"bare batched generate:     {n / bare:8.3f} images/s  ({bare:.1f} s)")
    print(f"kosmos ground:             {n / ours:8.3f} images/s  ({ours:.1f} s, to Parquet)")
    print(f"ground / seed loop speed-up:      {seed / ours:.2f}x   (target >= 4x on full)")
    print(f"ground time / bare generate time: {ours / bare:.3f}    (target <= 1.10 on full)")


if __name__ == "__main__":
    main()
