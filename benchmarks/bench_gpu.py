"""The GPU half of benchmarks/gpu.sh: full-size Kosmos-2 (`Kosmos2Config()`, random weights) in bfloat16, 64 new
tokens, end-of-sequence suppressed (an id no token has), so every path does the same work. Measures, in one run:

- the seed loop: one image at a time, processor -> generate -> batch_decode -> post_process_generation;
- batched generate alone (inputs prepared beforehand, untimed) at batch 64;
- ground through the library (what `kosmos ground` runs, without the process start) with --decoder hf and fast at
  batch 64, 128 and 256, writing Parquet, and with the batch size left to the engine (what it chooses is recorded);
- the fast decoder alone (engine.forward_scored on prepared requests) at batch 64 and 256, with and without CUDA
  graphs, and with the math attention kernel forced;
- the attention of one decode step alone, SDPA with our explicit float mask, per kernel (efficient, cudnn, flash,
  math: the ones that refuse a mask are recorded as errors);
- the vision encoder alone (get_image_features) at batch 256;
- the loader alone (images.load_image with the pipeline's draft size, then the processor's pixels) on 12 MP JPEGs,
  one thread and 16;
- on the shapes model (tests/fixtures/kosmos2-shapes): fast against hf on the card in float32 and bfloat16 (the share
  of captions that agree), and the card's float32 captions against the CPU's.

Each part that fails is recorded with its error and the rest goes on. Writes OUT/gpu.json and OUT/gpu.md.

    python benchmarks/bench_gpu.py --out DIR            # on a CUDA machine (gpu.sh runs this)
    python benchmarks/bench_gpu.py --out DIR --smoke    # every part on the CPU, tiny model and counts: no crash
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import tiny_checkpoint  # noqa: E402

NEW_TOKENS, DTYPE = 64, "bfloat16"
DEVICE = "cuda"
BATCHES = (64, 128, 256)  # ground's batch sizes
DECODER_BATCHES = (64, 256)  # the decoder alone, graphs on and off
SCALE = 1  # the other request counts are divided by this in --smoke


def sync():
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn):
    sync()
    started = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - started, out


def dtype():
    import torch

    return getattr(torch, DTYPE)


def full_model(folder: str):
    import torch
    from transformers import AutoProcessor, Kosmos2Config, Kosmos2ForConditionalGeneration

    if DEVICE == "cpu":  # --smoke: the tiny random checkpoint
        path = tiny_checkpoint.build_tiny(os.path.join(folder, "tiny"))
        model = Kosmos2ForConditionalGeneration.from_pretrained(path).eval()
        return model, AutoProcessor.from_pretrained(path)
    torch.manual_seed(0)
    model = Kosmos2ForConditionalGeneration(Kosmos2Config()).to(DEVICE, dtype()).eval()
    return model, tiny_checkpoint.build_processor()


def engine_for(model, processor, decoder: str, new_tokens: int = NEW_TOKENS, eos_off: bool = True):
    from kosmos_cli.model.engine import Engine, GenerationOptions

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


def prepared_requests(engine, count: int):
    from PIL import Image

    return [
        engine.prepare(Image.new("RGB", (224, 224), (i % 255, 9, 9)), _caption(), image_key=i) for i in range(count)
    ]


def seed_loop(model, processor, paths, results):
    import torch
    from PIL import Image

    impossible = model.config.text_config.vocab_size + 1

    def run():
        for path in paths:
            inputs = processor(text="<grounding> An image of", images=Image.open(path), return_tensors="pt").to(DEVICE)
            with torch.inference_mode():
                out = model.generate(
                    pixel_values=inputs["pixel_values"].to(model.dtype),
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

    batch //= SCALE
    engine = engine_for(model, processor, "hf")
    prepared = prepared_requests(engine, batch)
    pixels = engine.collate(prepared).on_device(DEVICE, model.dtype)  # uint8 collated, normalised on the card
    ids = torch.tensor([p.input_ids for p in prepared], device=DEVICE)
    mask = torch.tensor([p.image_mask for p in prepared], device=DEVICE)

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
    from kosmos_cli.model.prompts import caption_prompt

    return caption_prompt()


def grounds(model, processor, paths, folder, results):
    from kosmos_cli import ground

    rows = results.setdefault("ground", [])
    runs = [(b, d) for b in BATCHES for d in ("hf", "fast")] + [(None, "fast")]  # None: the engine chooses
    for batch, decoder in runs:
        engine = engine_for(model, processor, decoder)
        out = os.path.join(folder, f"ground-{decoder}-{batch}.jsonl")  # JSONL: pyarrow may not be on the card
        try:
            seconds, summary = timed(
                lambda out=out, engine=engine, batch=batch: ground(
                    paths, out, engine=engine, batch_size=batch, overwrite=True
                )
            )
            rows.append(
                {
                    "decoder": decoder,
                    "batch": batch if batch is not None else f"auto ({engine.batch_size()})",
                    "images": summary.done,
                    "seconds": seconds,
                    "images_per_s": summary.done / seconds,
                    "failed": summary.failed,
                    "fits": engine.fits,  # set when an out-of-memory error halved the batch
                    "graphs": getattr(engine.decoder, "captured", None),
                }
            )
        except Exception as exc:  # noqa: BLE001 - an OOM at 256 is a result too
            rows.append({"decoder": decoder, "batch": batch, "error": f"{type(exc).__name__}: {exc}"[:300]})
        print(rows[-1], flush=True)
        if DEVICE == "cuda":
            import torch

            del engine
            torch.cuda.empty_cache()


def decoder_alone(model, processor, results, rounds=2):
    """engine.forward_scored (image features, then the fast decoder) on prepared requests: graphs on, off, and on
    with the math attention kernel forced. The first batch of each is a warm-up (captures), untimed."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kosmos_cli.model.decoder import Decoder

    rows = results.setdefault("decoder_alone", [])
    for batch in DECODER_BATCHES:
        engine = engine_for(model, processor, "fast")
        prepared = prepared_requests(engine, batch)
        for variant in ("graphs", "eager", "graphs, math attention"):
            graphs = variant != "eager" and DEVICE == "cuda"
            engine.decoder = Decoder(  # the same done check (every 8 steps) with graphs and without
                model,
                NEW_TOKENS,
                engine._pad,
                graphs=graphs,
                buckets=True,
                keep=True,
                check_every=8,  # noqa: SLF001
            )
            try:
                with sdpa_kernel([SDPBackend.MATH]) if "math" in variant else nullcontext():
                    engine.forward_scored(prepared)  # warm-up: allocation and captures
                    seconds, _ = timed(lambda e=engine, p=prepared: [e.forward_scored(p) for _ in range(rounds)])
                rows.append(
                    {
                        "variant": variant,
                        "batch": batch,
                        "images_per_s": batch * rounds / seconds,
                        "tokens_per_s": batch * rounds * NEW_TOKENS / seconds,
                        "captured": engine.decoder.captured,
                        "graphs_kept": engine.decoder.graphs,  # False: a capture failed, it ran eagerly
                    }
                )
            except Exception as exc:  # noqa: BLE001
                rows.append({"variant": variant, "batch": batch, "error": f"{type(exc).__name__}: {exc}"[:300]})
            print(rows[-1], flush=True)
            engine.decoder.reset()
        if DEVICE == "cuda":
            torch.cuda.empty_cache()


def attention_kernels(model, results, batch=256, length=192, rounds=200):
    """One decode step's attention alone, the shapes the fast decoder gives SDPA: (batch, heads, 1, head_dim) against
    the whole cache span with a float mask, per SDPA kernel."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    batch //= SCALE
    attn = model.text_model.model.layers[0].self_attn
    heads, width = attn.num_heads, attn.head_dim
    q = torch.randn(batch, heads, 1, width, device=DEVICE, dtype=model.dtype)
    k = torch.randn(batch, heads, length, width, device=DEVICE, dtype=model.dtype)
    v = torch.randn_like(k)
    allowed = torch.arange(length, device=DEVICE)[None, :] <= torch.randint(64, length, (batch, 1), device=DEVICE)
    low = torch.finfo(model.dtype).min
    mask = torch.where(allowed, 0.0, low).to(model.dtype)[:, None, None, :]
    out = {}
    with torch.inference_mode(), sdpa_kernel([SDPBackend.MATH]):
        reference = sdpa(q.float(), k.float(), v.float(), attn_mask=mask.float())  # the math kernel, in float32
    for name in ("EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "FLASH_ATTENTION", "MATH"):
        try:
            with torch.inference_mode(), sdpa_kernel([getattr(SDPBackend, name)]):
                got = sdpa(q, k, v, attn_mask=mask)
                seconds, _ = timed(lambda: [sdpa(q, k, v, attn_mask=mask) for _ in range(rounds)])
            error = (got.float() - reference).abs().max().item()
            out[name.lower()] = {"microseconds_per_call": 1e6 * seconds / rounds, "max_error_vs_math_fp32": error}
        except Exception as exc:  # noqa: BLE001 - a kernel that refuses the mask is a result
            out[name.lower()] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    results["attention_kernels"] = {"batch": batch, "heads": heads, "head_dim": width, "length": length, **out}


def vision(model, results, batch=256, rounds=4):
    import torch

    batch //= SCALE
    pixels = torch.randn(batch, 3, 224, 224, device=DEVICE, dtype=model.dtype)
    with torch.inference_mode():
        model.get_image_features(pixels[:8], return_dict=True)
        seconds, _ = timed(lambda: [model.get_image_features(pixels, return_dict=True) for _ in range(rounds)])
    results["vision_encoder"] = {"batch": batch, "images": batch * rounds, "images_per_s": batch * rounds / seconds}


def loader(processor, folder, results, count=48, side=(4000, 3000)):
    """The loader alone: what each of the pipeline's workers does per image (decode at the draft size, then the
    processor's pixels), on 12 MP JPEGs, on one thread and on 16."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image

    from kosmos_cli.inputs.images import MODEL_SIDE, load_image

    count = max(4, count // SCALE)
    w, h = side if SCALE == 1 else (800, 600)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)).resize((w, h))
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"{i:03d}.jpg")
        base.rotate(i % 4 * 90, expand=False).save(path, quality=90)
        paths.append(path)

    def one(path):
        loaded = load_image(path, draft=2 * MODEL_SIDE)
        return processor.image_processor(images=[loaded.image], return_tensors="np")["pixel_values"][0]

    out = {"images": count, "megapixels": w * h / 1e6}
    for threads in (1, 16):
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, paths))
        out[f"threads_{threads}_images_per_s"] = count / (time.perf_counter() - started)
    results["loader"] = out


def full_size_agreement(model, processor, results, batch=32, new_tokens=32):
    """On the full-size architecture (random weights), the fast decoder's token ids against generate's, request for
    request, in bfloat16 and then float32 (the same weights, cast), end-of-sequence left on."""
    import torch

    batch //= SCALE
    out = {}
    for name in (DTYPE, "float32"):
        model.to(getattr(torch, name))
        hf = engine_for(model, processor, "hf", new_tokens=new_tokens, eos_off=False)
        fast = engine_for(model, processor, "fast", new_tokens=new_tokens, eos_off=False)
        prepared = prepared_requests(hf, batch)  # one prompt: one length, as generate needs
        with torch.inference_mode():
            expected = [g.ids for g in hf.forward_scored(prepared)]
            got = [g.ids for g in fast.forward_scored(prepared)]
        same = sum(a == b for a, b in zip(expected, got))
        first = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None) for a, b in zip(expected, got)]
        out[name] = {
            "requests": batch,
            "same_ids": same,
            "first_difference_at": [f for f in first if f is not None][:8],
            "graphs": fast.decoder.captured if fast.decoder is not None else None,
        }
        del hf, fast
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    model.to(getattr(torch, DTYPE))
    results["full_size_agreement"] = out


def agreement(results, count=64):
    """On the shapes model: fast against hf on the card (float32 and bfloat16), and the card's float32 answers
    (fast) against the CPU's."""
    import random

    import shapes
    import torch
    from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

    from kosmos_cli.model.prompts import caption_prompt, find_prompt

    count //= SCALE
    path = str(ROOT / "tests" / "fixtures" / "kosmos2-shapes")
    processor = AutoProcessor.from_pretrained(path)
    rng = random.Random(7)
    scenes = [shapes.make_scene(rng, 224, 224)[0] for _ in range(count)]
    prompts = [caption_prompt(), find_prompt("a red square"), find_prompt("the big blue circle on the left")]

    def answers(device, name, decoder):
        model = Kosmos2ForConditionalGeneration.from_pretrained(path, dtype=getattr(torch, name)).to(device).eval()
        engine = engine_for(model, processor, decoder, new_tokens=48, eos_off=False)
        batch = [engine.prepare(s, prompts[i % 3], image_key=i) for i, s in enumerate(scenes)]
        if decoder == "fast":
            return [t.split("</s>")[0] for t in engine.forward(batch)]
        got = []
        for length in sorted({len(p.input_ids) for p in batch}):  # generate needs one prompt length per batch
            group = [i for i, p in enumerate(batch) if len(p.input_ids) == length]
            got.extend(zip(group, engine.forward([batch[i] for i in group])))
        return [t.split("</s>")[0] for _, t in sorted(got)]

    out: dict = {}
    card = {}
    for name in ("float32", "bfloat16"):
        card[name] = {decoder: answers(DEVICE, name, decoder) for decoder in ("hf", "fast")}
        same = sum(a == b for a, b in zip(card[name]["hf"], card[name]["fast"]))
        out[f"fast_vs_hf_{name}"] = {"requests": count, "same_text": same, "share": same / count}
    cpu = answers("cpu", "float32", "fast")
    same = sum(a == b for a, b in zip(cpu, card["float32"]["fast"]))
    out["card_vs_cpu_float32"] = {"requests": count, "same_text": same, "share": same / count}
    results["shapes_agreement"] = out


def pixel_handoff(results) -> None:
    """224x224 pixels to the device: normalised float32 from the CPU against uint8 normalised on the card."""
    import torch
    from bench_stages import pixel_handoff as measure  # benchmarks/bench_stages.py

    results["pixel_handoff"] = measure(DEVICE, n=max(16, 256 // SCALE), dtype=getattr(torch, DTYPE))


def ratios(results) -> list[str]:
    """The speed-ups the figures above give, each between two rows measured in this run on this card."""

    def rate(rows, **where):
        for row in rows:
            if all(row.get(k) == v for k, v in where.items()) and "images_per_s" in row:
                return row["images_per_s"]
        return None

    ground, alone = results.get("ground", []), results.get("decoder_alone", [])
    seed = results.get("seed_loop", {}).get("images_per_s")
    bare = results.get("bare_generate", {})
    pairs = []
    for batch in BATCHES:
        pairs.append(
            (
                f"ground fast / hf, batch {batch}",
                rate(ground, decoder="fast", batch=batch),
                rate(ground, decoder="hf", batch=batch),
            )
        )
    autos = [r for r in ground if str(r.get("batch")).startswith("auto") and "images_per_s" in r]
    auto = autos[0]["images_per_s"] if autos else None
    pairs.append(("ground fast, auto batch / the seed's one-image loop", auto, seed))
    for batch in DECODER_BATCHES:
        pairs.append(
            (
                f"decoder alone, graphs / eager, batch {batch}",
                rate(alone, variant="graphs", batch=batch),
                rate(alone, variant="eager", batch=batch),
            )
        )
    if bare:
        pairs.append(
            (
                f"decoder alone with graphs / bare generate, batch {bare['batch']}",
                rate(alone, variant="graphs", batch=bare["batch"]),
                bare.get("images_per_s"),
            )
        )
    lines = ["", "| ratio | x |", "|---|---|"]
    for name, a, b in pairs:
        lines.append(f"| {name} | {a / b:.2f} |" if a and b else f"| {name} | - |")
    return lines


def markdown(results) -> str:
    lines = [
        f"# GPU run: {results.get('gpu', '?')}",
        "",
        f"full-size Kosmos-2, random weights, {DTYPE}, {NEW_TOKENS} new tokens, end-of-sequence suppressed; every "
        f"figure below from this card ({results.get('gpu', '?')}), torch {results.get('torch', '?')}, "
        f"NVIDIA_TF32_OVERRIDE={os.environ.get('NVIDIA_TF32_OVERRIDE', 'unset')}",
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
    for row in results.get("decoder_alone", []):
        rate = f"{row['images_per_s']:.2f}" if "images_per_s" in row else row.get("error", "")
        lines.append(f"| fast decoder alone, {row['variant']} | {row['batch']} | {rate} |")
    if "vision_encoder" in results:
        lines.append(
            f"| vision encoder alone | {results['vision_encoder']['batch']} | "
            f"{results['vision_encoder']['images_per_s']:.2f} |"
        )
    if "loader" in results:
        lo = results["loader"]
        lines.append(f"| loader, {lo['megapixels']:.1f} MP JPEG, 1 thread | - | {lo['threads_1_images_per_s']:.2f} |")
        lines.append(
            f"| loader, {lo['megapixels']:.1f} MP JPEG, 16 threads | - | {lo['threads_16_images_per_s']:.2f} |"
        )
    handoff = results.get("pixel_handoff")
    if handoff:
        for way in ("float32_from_cpu", "uint8_to_device"):
            lines.append(
                f"\npixels to the card, {way}: {handoff[way]['host_ms']:.2f} ms CPU + "
                f"{handoff[way]['device_ms']:.3f} ms hand-over per image (same values: {handoff['same']})"
            )
    kernels = results.get("attention_kernels", {})
    for name, row in kernels.items():
        if isinstance(row, dict):
            value = (
                f"{row['microseconds_per_call']:.1f} us, max error against math (fp32) "
                f"{row['max_error_vs_math_fp32']:.2e}"
                if "microseconds_per_call" in row
                else row["error"]
            )
            lines.append(f"\nattention of one decode step, batch {kernels['batch']}, {name}: {value}")
    lines.extend(ratios(results))
    for name, a in results.get("full_size_agreement", {}).items():
        lines.append(
            f"\nfull-size architecture, {name}: fast decoder's token ids equal generate's for {a['same_ids']}/"
            f"{a['requests']} requests (first differences at steps {a['first_difference_at']})"
        )
    for name, a in results.get("shapes_agreement", {}).items():
        lines.append(f"\nshapes model, {name}: {a['same_text']}/{a['requests']} texts the same")
    for name, error in results.get("errors", {}).items():
        lines.append(f"\n{name} failed: {error}")
    return "\n".join(lines) + "\n"


def main() -> None:
    global DEVICE, DTYPE, BATCHES, DECODER_BATCHES, SCALE, NEW_TOKENS
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--smoke", action="store_true", help="every part on the CPU, tiny model, tiny counts")
    args = parser.parse_args()
    if args.smoke:
        DEVICE, DTYPE, BATCHES, DECODER_BATCHES, SCALE, NEW_TOKENS = "cpu", "float32", (2, 4), (2, 4), 16, 8
        args.images = min(args.images, 8)
    torch.set_grad_enabled(False)
    gpu = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "none (--smoke, CPU)"
    results: dict = {"gpu": gpu, "torch": torch.__version__, "errors": {}}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        model, processor = full_model(folder)
        paths = images(os.path.join(folder, "images"), args.images)
        parts = [
            ("seed_loop", lambda: seed_loop(model, processor, paths[: max(2, 24 // SCALE)], results)),
            ("bare_generate", lambda: bare_generate(model, processor, results)),
            ("ground", lambda: grounds(model, processor, paths, folder, results)),
            ("decoder_alone", lambda: decoder_alone(model, processor, results)),
            ("attention_kernels", lambda: attention_kernels(model, results)),
            ("vision_encoder", lambda: vision(model, results)),
            ("loader", lambda: loader(processor, os.path.join(folder, "jpegs"), results)),
            ("pixel_handoff", lambda: pixel_handoff(results)),
            ("full_size_agreement", lambda: full_size_agreement(model, processor, results)),
        ]
        for name, part in parts:
            started = time.perf_counter()
            try:
                part()
            except Exception:  # noqa: BLE001 - record it, go on with the others
                results["errors"][name] = traceback.format_exc()[-1500:]
            print(name, f"done in {time.perf_counter() - started:.1f} s", flush=True)
            Path(args.out, "gpu.json").write_text(json.dumps(results, indent=2))
    model.to("cpu")  # the card's memory for the shapes model
    if DEVICE == "cuda":
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
