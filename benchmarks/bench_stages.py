"""CPU milliseconds per image of every stage around the model, each timed alone on one thread.

What a GPU leaves to the CPU, per image: the loader threads decode the image, compute its 224x224 pixels and
encode its prompt; the writing thread decodes the generated token ids into text (off the model's thread), parses the
text into a record (caption, entities, boxes, scores), serialises it and writes it (JSONL, or Parquet), a batch at a
time. At 500 images/s on 16 cores each image may cost at most 16 / 500 s = 32 CPU ms, summed over the stages.

    python benchmarks/bench_stages.py                 # 64 images of each size, batch 64
    python benchmarks/bench_stages.py -n 32 --repeat 5

The stages use the tiny checkpoint's processor (tools/tiny_checkpoint.py: the real Kosmos-2 image processor
settings and tags) and a realistic generation (a caption with two grounded phrases). Where the pipeline has a
faster path than the one it had before, the old one is timed beside it in the same run ("before"):
the loaders' `pixels` as uint8 at the model's size (now) against ClipPixels' float32 (before), and the model's
thread collating a batch and putting it on the device normalised (now: uint8 collated, copied, normalised there;
before: float32 stacked, copied, cast). The prompt's encoding without its cache is printed for reference.

`pixel_handoff(device)` measures the hand-over alone, per batch, both ways with their ratios (`--collate float32`
or `uint8` times one of them); benchmarks/bench_gpu.py calls it with "cuda".
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))

SIZES = ((640, 480), (1024, 768), (1920, 1080), (4000, 3000))
GENERATED = (
    "<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863></object> warming"
    " himself by<phrase> a fire</phrase><object><patch_index_0005><patch_index_0911><patch_index_0005>"
    "<patch_index_0911></object>.</s>"
)


def photo(width: int, height: int, seed: int):
    """A JPEG-like scene: smooth gradients and blobs plus sensor noise (compresses as photos do, unlike flat colour)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 64, 2), max(width // 64, 2), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    noise = rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def make_photos(folder: str, n: int) -> dict[tuple[int, int], list[str]]:
    out: dict[tuple[int, int], list[str]] = {}
    for w, h in SIZES:
        paths = []
        for i in range(min(n, 8)):  # a few distinct files a size, read again as needed (the OS caches them)
            path = os.path.join(folder, f"photo_{w}x{h}_{i}.jpg")
            photo(w, h, i).save(path, quality=90)
            paths.append(path)
        out[(w, h)] = [paths[i % len(paths)] for i in range(n)]
    return out


def cpu_ms(fn: Callable[[], object], count: int, repeat: int) -> float:
    """CPU ms per item of `fn()` (which does `count` items) on this thread: the least of `repeat` runs."""
    best = float("inf")
    for _ in range(repeat):
        started = time.thread_time()
        fn()
        best = min(best, time.thread_time() - started)
    return 1000 * best / count


def old_prepare(engine, image, prompt, pixels):
    """How a prompt was encoded before its cache: the processor on a blank image, for every request."""
    from PIL import Image

    enc = engine.processor(images=Image.new("RGB", (8, 8)), text=prompt.text, bboxes=prompt.processor_bboxes)
    return tuple(enc["input_ids"]), tuple(enc["image_embeds_position_mask"]), pixels


def old_collate(arrays, device, dtype):
    """How a batch's pixels reached the device before (`--collate float32`): float32 normalised on the loaders,
    stacked on the model's thread, copied (synchronously, from pageable memory) and cast there."""
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays))).to(device, dtype)


def pixel_handoff(
    device: str = "cpu", n: int = 256, batch: int = 64, repeat: int = 3, dtype=None, ways=("float32", "uint8")
) -> dict:
    """ms per image of getting 224x224 pixels onto `device` as the model's input, the old way and the new:

    - `float32_from_cpu` (before): the loader normalises (ClipPixels: resize and lookup), the model's thread stacks
      the float32, copies it over and casts it (`old_collate`);
    - `uint8_to_device` (now): the loader only resizes (`ClipPixels.chw`); `pixels.collate` stacks the uint8 into one
      host tensor (pinned on CUDA; any thread may do it, `Engine.collate`) and `Collated.on_device` copies it with
      non_blocking=True and normalises it there in `dtype`, through the same table (so the same values, checked).

    For each: `host_ms`, the CPU time of what the image loaders do per image; `batch_host_ms`, the model's thread's
    CPU time per batch (collate, copy, normalise, cast; synchronised on CUDA, which is waited for, not counted);
    `device_ms`, the wall time per image of that part. All from 640x480 images (a loader hands on 448 to 895 px a
    side). From benchmarks/bench_gpu.py: `bench_stages.pixel_handoff("cuda", dtype=torch.bfloat16)`.
    """
    import torch

    from kosmos_cli.model.engine import Prepared
    from kosmos_cli.model.pixels import ClipPixels, collate

    dtype = dtype or torch.float32
    clip = ClipPixels.default()
    cuda = str(device).startswith("cuda")
    images = [photo(640, 480, i) for i in range(8)]
    images = [images[i % len(images)] for i in range(n)]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def feed(arrays):  # now: on the feeding thread, a batch ahead of the model's
        return collate([Prepared(i, a, (), ()) for i, a in enumerate(arrays)], clip, pin=cuda)

    def new_collate(arrays):
        return feed(arrays).on_device(device, dtype)

    paths = {
        "float32": ("float32_from_cpu", clip),
        "uint8": ("uint8_to_device", clip.chw),
        "ahead": ("float32_collated_ahead", clip),  # the model on the CPU: loaders normalise, collated ahead
    }
    first = images[0]
    same = torch.equal(
        new_collate([clip.chw(first)]).float().cpu(), old_collate([clip(first)], device, dtype).float().cpu()
    )
    out: dict = {"device": str(device), "dtype": str(dtype).split(".")[-1], "images": n, "batch": batch, "same": same}
    for way in ways:
        name, host = paths[way]
        if way in ("uint8", "ahead"):  # collated on the feeding thread; copied (and normalised) on the model's
            fed, onto = feed, (lambda collated: collated.on_device(device, dtype))
        else:  # before: the model's thread stacked, copied and cast
            fed, onto = (lambda arrays: arrays), (lambda arrays: old_collate(arrays, device, dtype))
        prepared = [host(im) for im in images]
        onto(fed(prepared[:batch])), sync()  # warm-up
        host_ms = cpu_ms(lambda host=host: [host(im) for im in images], n, repeat)
        wall, cpu, feeding = float("inf"), float("inf"), float("inf")
        for _ in range(repeat):
            thread = time.thread_time()
            batches_fed = [fed(prepared[i : i + batch]) for i in range(0, n, batch)]
            feeding = min(feeding, time.thread_time() - thread)
            started, thread = time.perf_counter(), time.thread_time()
            for one in batches_fed:
                onto(one)
            cpu = min(cpu, time.thread_time() - thread)
            sync()
            wall = min(wall, time.perf_counter() - started)
        batches = -(-n // batch)
        out[name] = {
            "host_ms": host_ms,
            "loader_batch_ms": host_ms * batch,
            "feed_batch_ms": 1000 * feeding / batches,
            "batch_host_ms": 1000 * cpu / batches,
            "device_ms": 1000 * wall / n,
            "bytes_per_image": prepared[0].nbytes,
        }
    return out


def show_handoff(handoff: dict) -> None:
    """The hand-over's figures, per batch, before and after, with their ratios."""
    f32, u8 = handoff.get("float32_from_cpu"), handoff.get("uint8_to_device")
    print(
        f"pixels onto the model's device ({handoff['device']}, {handoff['dtype']}, batch {handoff['batch']}, "
        f"same values: {handoff['same']}), ms per batch of {handoff['batch']}:"
    )
    print(f"  {'':<34} {'loaders CPU':>12} {'feeding CPU':>12} {'model thread CPU':>17} {'wall':>8} {'bytes/img':>10}")
    rows = (
        ("float32 on the CPU (before)", f32),
        ("uint8, normalised on device (now)", u8),
        ("float32, collated ahead (CPU, now)", handoff.get("float32_collated_ahead")),
    )
    for label, row in rows:
        if row:
            wall = row["device_ms"] * handoff["batch"]
            print(
                f"  {label:<34} {row['loader_batch_ms']:12.2f} {row['feed_batch_ms']:12.2f} "
                f"{row['batch_host_ms']:17.2f} {wall:8.2f} {row['bytes_per_image']:10,}"
            )
    if f32 and u8:
        total = [r["loader_batch_ms"] + r["feed_batch_ms"] + r["batch_host_ms"] for r in (u8, f32)]
        print(
            f"  now / before: loaders {u8['loader_batch_ms'] / f32['loader_batch_ms']:.2f}x, model thread "
            f"{u8['batch_host_ms'] / f32['batch_host_ms']:.2f}x, all threads {total[0] / total[1]:.2f}x, "
            f"bytes {u8['bytes_per_image'] / f32['bytes_per_image']:.2f}x"
        )


def decoder_transfers(batch: int = 8, new_tokens: int = 48, repeat: int = 3) -> dict:
    """What the fast decoder exchanges between the host and the device per batch, counted on the CPU: a torch
    function mode sees each call that is a copy or a wait on CUDA (`tolist`, `item`, `cpu`, `nonzero`: device to
    host, each waiting for the device; `torch.tensor(device=...)`, `.to(device)` and indexing with a Python list:
    host to device; made by the decoder's own code, not inside the model's modules), and the model's thread's CPU
    ms per batch. A batch of `batch` prompts of mixed lengths on the
    tiny checkpoint, decoded as on CUDA (buckets, a look every 8 steps, rows moved to smaller buckets; graphs off).
    It uses only `Decoder`'s constructor and call, so the same function measures an older checkout of kosmos_cli
    (PYTHONPATH) for a before-and-after in one session."""
    import torch
    from tiny_checkpoint import build_tiny
    from torch.overrides import TorchFunctionMode
    from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

    from kosmos_cli.model.decoder import Decoder

    counts: dict[str, int] = {}

    class Counting(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            ours = "kosmos_cli" in sys._getframe(1).f_code.co_filename  # the model's own casts and moves are no-ops
            if not ours:
                pass
            elif name in ("tolist", "item", "cpu", "nonzero"):
                counts["to_host"] = counts.get("to_host", 0) + 1
            elif (name == "tensor" and kwargs.get("device") is not None) or (
                name == "to" and any(isinstance(a, (str, torch.device)) for a in (*args[1:], kwargs.get("device")))
            ):
                counts["to_device"] = counts.get("to_device", 0) + 1
            elif name == "__getitem__" and any(isinstance(i, list) for i in _flat(args[1])):
                counts["to_device"] = counts.get("to_device", 0) + 1
            return func(*args, **kwargs)

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as folder:
        path = build_tiny(folder)
        model = Kosmos2ForConditionalGeneration.from_pretrained(path).eval()
        processor = AutoProcessor.from_pretrained(path)
    texts = ["<grounding> An image of", "<grounding> Describe this image in detail:", "<grounding> A photo of a"]
    encoded = [processor(images=photo(64, 64, 0), text=texts[i % 3]) for i in range(batch)]
    prompts = [list(e["input_ids"]) for e in encoded]
    masks = [list(e["image_embeds_position_mask"]) for e in encoded]
    pixels = torch.stack([torch.as_tensor(e["pixel_values"][0]) for e in encoded])
    embeds = model.get_image_features(pixels, return_dict=True).pooler_output
    stops = [processor.tokenizer.eos_token_id, processor.tokenizer.convert_tokens_to_ids("</object>")]
    decoder = Decoder(model, new_tokens, processor.tokenizer.pad_token_id, graphs=False, buckets=True, keep=True)
    decoder.check_every = 8
    decoder(embeds, prompts, masks, stops)  # warm-up: the storage made
    with Counting():
        decoder(embeds, prompts, masks, stops)
    best = float("inf")
    for _ in range(repeat):
        started = time.thread_time()
        decoder(embeds, prompts, masks, stops)
        best = min(best, time.thread_time() - started)
    return {"batch": batch, "new_tokens": new_tokens, **counts, "batch_cpu_ms": 1000 * best}


def _flat(index) -> list:
    return list(index) if isinstance(index, tuple) else [index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=64, help="images of each size (default 64)")
    parser.add_argument("--batch-size", type=int, default=64, help="records a write takes (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each stage; the least is kept (default 3)")
    parser.add_argument(
        "--decoder-only", action="store_true", help="only the decoder's host-device exchanges per batch"
    )
    parser.add_argument(
        "--collate",
        choices=("both", "uint8", "float32", "ahead"),
        default="both",
        help="how pixels reach the device: uint8 normalised there (now, on a GPU), float32 normalised on the "
        "loaders and collated ahead (now, on the CPU), float32 stacked on the model's thread (before), or all of them "
        "in this run with their ratios (default: both)",
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    exchanges = decoder_transfers(repeat=args.repeat)
    if args.decoder_only:
        print(exchanges)
        return
    from tiny_checkpoint import build_tiny

    from kosmos_cli import load_engine
    from kosmos_cli.inputs.images import load_image
    from kosmos_cli.inputs.sources import Item, iter_items
    from kosmos_cli.output.formats import JsonlSink, ParquetPartSink, dumps, record_line
    from kosmos_cli.run.batching import DRAFT_SIDE
    from kosmos_cli.run.pipeline import Progress, RunOptions, Summary, _todo
    from kosmos_cli.tasks import Ground, Settings
    from kosmos_cli.tasks.records import Record
    from kosmos_cli.tasks.scores import Generation

    n, rep = args.n, args.repeat
    task = Ground()

    def todo(folder):  # what the feeding thread does per input before a loader takes it (it was the model's)
        return _todo(iter_items([folder]), task, engine, {}, RunOptions(), Summary(), Progress(), threading.Lock())

    per_size: dict[tuple[int, int], list[tuple[str, float, float | None]]] = {}  # (stage, now, before)
    common: list[tuple[str, float, float | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = load_engine(build_tiny(os.path.join(tmp, "tiny")), max_new_tokens=64)
        photos = make_photos(tmp, n)
        for size, paths in photos.items():
            ims = [load_image(p, draft=DRAFT_SIDE).image for p in paths]
            w, h = ims[0].size
            per_size[size] = [
                (
                    f"decode (to {w}x{h})",
                    cpu_ms(lambda paths=paths: [load_image(p, draft=DRAFT_SIDE) for p in paths], n, rep),
                    None,
                ),
                (
                    "pixels (loader)",
                    cpu_ms(lambda ims=ims: [engine.pixels(im) for im in ims], n, rep),
                    cpu_ms(lambda ims=ims: [engine.clip_pixels(im) for im in ims], n, rep),
                ),
            ]
        image = load_image(photos[(1024, 768)][0]).image
        pixels = engine.pixels(image)
        prompt = task.prompt(None)  # type: ignore[arg-type]
        common.append(
            (
                "prompt encoding (prepare)",
                cpu_ms(lambda: [engine.prepare(image, prompt, "k", pixels) for _ in range(n)], n, rep),
                None,
            )
        )
        uncached = cpu_ms(lambda: [old_prepare(engine, image, prompt, pixels) for _ in range(n)], n, rep)
        folder = os.path.dirname(photos[(640, 480)][0])
        found = len(list(iter_items([folder])))
        common.append(
            ("list, stat, resume check (feeding thread)", cpu_ms(lambda: list(todo(folder)), found, rep), None)
        )

        tokenizer = engine.processor.tokenizer
        ids = tuple(tokenizer(GENERATED, add_special_tokens=False).input_ids)
        common.append(
            (
                "token ids -> text (writing thread; was the model's)",
                cpu_ms(lambda: [tokenizer.decode(ids) for _ in range(n)], n, rep),
                None,
            )
        )
        requests = [engine.prepare(image, prompt, f"k{i}", pixels) for i in range(8)]
        answered = cpu_ms(lambda: engine.forward_scored(requests), 8, rep)  # the model's thread: text decoded later
        inline = cpu_ms(lambda: [g.text for g in engine.forward_scored(requests)], 8, rep)  # as it was: decoded there
        given = len(tokenizer(prompt.text, add_special_tokens=False).input_ids)
        generation = Generation(
            tokenizer.decode(ids), ids, (None,) * given + (0.5,) * (len(ids) - given), engine._markup
        )

        batch = []
        settings = Settings(engine.options.label, engine.decoding)
        for i in range(n):
            item = Item(f"/data/photos/img_{i:05d}.jpg", {"id": i}, stat=(123456, 1.7e9))
            unit = task.units(item, settings)[0]
            batch.append(dataclasses.replace(unit, size=(1024, 768), seconds=0.01, generated=generation))
        common.append(
            (
                "parse -> record (task.record)",
                cpu_ms(lambda: [task.record(u) for u in batch], n, rep),
                None,
            )
        )
        finished: list[Record] = [task.record(u) for u in batch]
        assert finished[0].entities, "the generation grounds two phrases"  # type: ignore[attr-defined]
        common.append(
            (
                "record -> JSON line",
                cpu_ms(lambda: [record_line(r) for r in finished], n, rep),
                cpu_ms(lambda: [dumps(r.to_dict()) for r in finished], n, rep),
            )
        )
        size = min(args.batch_size, n)
        sink = JsonlSink(os.path.join(tmp, "r.jsonl"))
        common.append(
            (
                f"write JSONL ({size} a batch, fsync)",
                cpu_ms(lambda: [sink.write(finished[i : i + size]) for i in range(0, n, size)], n, rep),
                None,
            )
        )
        sink.close()
        os.makedirs(os.path.join(tmp, "parts"))
        parts = ParquetPartSink(os.path.join(tmp, "parts"), Ground, 0)
        common.append(
            (
                f"write Parquet ({size} a batch)",
                cpu_ms(lambda: [parts.write(finished[i : i + size]) for i in range(0, n, size)], n, rep),
                None,
            )
        )
        ways = ("float32", "uint8", "ahead") if args.collate == "both" else (args.collate,)
        handoff = pixel_handoff("cpu", n=max(n, 64), batch=size, repeat=rep, ways=ways)
        f32, u8 = handoff.get("float32_from_cpu"), handoff.get("uint8_to_device")
        now, before = (handoff.get("float32_collated_ahead") or u8 or f32), (f32 or u8)  # the model here is the CPU's
        common.append(  # a batch ahead of the model, on the feeding thread (before: nothing; the model's did it)
            ("collate (feeding thread; was the model's)", now["feed_batch_ms"] / size, None)  # type: ignore[index]
        )
        common.append(  # on the model's thread: what the model's device would do is the CPU's here
            (
                "copy, normalise (model's thread; before: collate too)",
                now["batch_host_ms"] / size,  # type: ignore[index]
                before["batch_host_ms"] / size,  # type: ignore[index]
            )
        )

    print(f"CPU ms per image, one thread, least of {rep} runs, {n} images a size; {os.cpu_count()} CPUs here")
    print(f"{'stage':<50} {'now':>8} {'before':>8}")

    def show(stage, now, before):
        print(f"{stage:<50} {now:8.3f} {'' if before is None else f'{before:8.3f}':>8}")

    for (w, h), rows in per_size.items():
        for stage, now, before in rows:
            show(f"{w}x{h} JPEG: {stage}", now, before)
    for row in common:
        show(*row)
    print(f"(prompt encoding without its cache, for reference: {uncached:.3f})")
    print(
        f"the model's thread, a batch of 8 on the tiny model, ms per image: {answered:.3f} now (its text decoded on "
        f"the writing thread), {inline:.3f} before (decoded there), {inline - answered:+.3f} moved off it"
    )
    rest = [r for r in common if not r[0].startswith("write JSONL")]  # to Parquet: the heavier writer
    print("sum over the stages, to Parquet, and what 16 cores could feed at that cost:")
    for (w, h), rows in per_size.items():
        now = sum(r[1] for r in rows + rest)
        before = sum(r[2] if r[2] is not None else r[1] for r in rows + rest)
        show(f"{w}x{h} JPEG ({16000 / now:,.0f} img/s now, {16000 / before:,.0f} before)", now, before)
    show_handoff(handoff)
    print(
        f"the fast decoder, a batch of {exchanges['batch']} to {exchanges['new_tokens']} new tokens (tiny model, as on "
        f"CUDA: a look every 8 steps): {exchanges.get('to_device', 0)} copies to the device, "
        f"{exchanges.get('to_host', 0)} to the host (each a wait), {exchanges['batch_cpu_ms']:.1f} CPU ms"
    )


if __name__ == "__main__":
    main()
