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
`pixels` through transformers' image processor (what Engine.pixels did before ClipPixels). The prompt's
encoding without its cache is printed for reference.

`pixel_handoff(device)` measures handing uint8 pixels to the device and normalising there against float32
normalised on the CPU; benchmarks/bench_gpu.py can call it with "cuda".
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
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


def old_pixels(engine, image):
    """How engine.pixels computed pixels before: the whole transformers image processor."""
    return engine.processor.image_processor(images=[image], return_tensors="np")["pixel_values"][0]


def old_prepare(engine, image, prompt, pixels):
    """How a prompt was encoded before its cache: the processor on a blank image, for every request."""
    from PIL import Image

    enc = engine.processor(images=Image.new("RGB", (8, 8)), text=prompt.text, bboxes=prompt.processor_bboxes)
    return tuple(enc["input_ids"]), tuple(enc["image_embeds_position_mask"]), pixels


def pixel_handoff(device: str = "cpu", n: int = 256, batch: int = 64, repeat: int = 3, dtype=None) -> dict:
    """ms per image of getting 224x224 pixels onto `device` as the model's input, two ways:

    - `float32_from_cpu`: normalised on the CPU (what Prepared.pixel_values holds: ClipPixels), stacked, copied over
      and cast to `dtype`;
    - `uint8_to_device`: only resized on the CPU, the uint8 stacked and copied over, normalised there with the same
      table (so the same values) and cast.

    For each: `host_ms`, the CPU time of what the image loaders would do per image (resize, and the lookup for
    float32); `device_ms`, the wall time per image of stacking, copying, normalising and casting a batch (synchronised
    on CUDA). Both start from 640x480 images (the size a loader hands on is 448 to 895 px a side). From
    benchmarks/bench_gpu.py: `bench_stages.pixel_handoff("cuda", dtype=torch.bfloat16)`.
    """
    import numpy as np
    import torch

    from kosmos_cli.model.pixels import ClipPixels

    dtype = dtype or torch.float32
    clip = ClipPixels.default()
    images = [photo(640, 480, i) for i in range(8)]
    images = [images[i % len(images)] for i in range(n)]
    table = torch.from_numpy(clip.table).to(device).flatten()  # (3 * 256,) float32
    channel = torch.arange(3, device=device).view(1, 3, 1, 1) * 256

    def sync():
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    def on_device_float(arrays):
        return torch.from_numpy(np.stack(arrays)).to(device, dtype)

    def on_device_uint8(arrays):
        raw = torch.from_numpy(np.stack(arrays)).to(device, non_blocking=False)  # (B, 224, 224, 3) uint8
        return table[raw.permute(0, 3, 1, 2).long() + channel].to(dtype)

    paths = {"float32_from_cpu": (clip, on_device_float), "uint8_to_device": (clip.resized, on_device_uint8)}
    same = torch.equal(
        on_device_uint8([clip.resized(images[0])]).float().cpu(), on_device_float([clip(images[0])]).float().cpu()
    )
    out: dict = {"device": str(device), "dtype": str(dtype).split(".")[-1], "images": n, "batch": batch, "same": same}
    for name, (host, to_device) in paths.items():
        prepared = [host(im) for im in images]
        to_device(prepared[:batch]), sync()  # warm-up
        host_ms = cpu_ms(lambda host=host: [host(im) for im in images], n, repeat)
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            for i in range(0, n, batch):
                to_device(prepared[i : i + batch])
            sync()
            best = min(best, time.perf_counter() - started)
        out[name] = {"host_ms": host_ms, "device_ms": 1000 * best / n}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=64, help="images of each size (default 64)")
    parser.add_argument("--batch-size", type=int, default=64, help="records a write takes (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each stage; the least is kept (default 3)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from tiny_checkpoint import build_tiny

    from kosmos_cli import load_engine
    from kosmos_cli.inputs.images import load_image
    from kosmos_cli.inputs.sources import Item, iter_items
    from kosmos_cli.output.formats import JsonlSink, ParquetPartSink, dumps
    from kosmos_cli.run.pipeline import DRAFT_SIDE, Progress, RunOptions, Summary, _todo
    from kosmos_cli.tasks import Ground
    from kosmos_cli.tasks.records import Record
    from kosmos_cli.tasks.scores import Generation

    n, rep = args.n, args.repeat
    task = Ground()

    def todo(folder):  # what the model's thread does per input before a loader takes it
        return _todo(iter_items([folder]), task, engine, {}, RunOptions(), Summary(), Progress())

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
                    "pixels",
                    cpu_ms(lambda ims=ims: [engine.pixels(im) for im in ims], n, rep),
                    cpu_ms(lambda ims=ims: [old_pixels(engine, im) for im in ims], n, rep),
                ),
            ]
        image = load_image(photos[(1024, 768)][0]).image
        pixels = engine.pixels(image)
        prompt = task.prompt(None, 1024, 768)  # type: ignore[arg-type]
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
            ("list, stat, resume check (model's thread)", cpu_ms(lambda: list(todo(folder)), found, rep), None)
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
        for i in range(n):
            unit = task.units(Item(f"/data/photos/img_{i:05d}.jpg", {"id": i}), engine.options.label)[0]
            unit.record.width, unit.record.height, unit.record.decoding = 1024, 768, engine.decoding
            unit.record.file_size, unit.record.file_mtime, unit.record.seconds = 123456, 1.7e9, 0.01
            unit.generated = generation
            batch.append(unit)
        common.append(
            (
                "parse -> record (task.finish)",
                cpu_ms(lambda: [task.finish(u, generation.text) for u in batch], n, rep),
                None,
            )
        )
        finished: list[Record] = [u.record for u in batch]
        assert finished[0].entities, "the generation grounds two phrases"  # type: ignore[attr-defined]
        common.append(("record -> JSON line", cpu_ms(lambda: [dumps(r.to_dict()) for r in finished], n, rep), None))
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
        handoff = pixel_handoff("cpu", n=max(n, 64), batch=size, repeat=rep)

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
    f32, u8 = handoff["float32_from_cpu"], handoff["uint8_to_device"]
    print(
        f"pixels onto the model's device ({handoff['device']}, batch {handoff['batch']}, "
        f"same values: {handoff['same']}), ms per image: loader's CPU + stack, copy, normalise, cast"
    )
    print(f"  float32 from the CPU:          {f32['host_ms']:.3f} + {f32['device_ms']:.3f}")
    print(f"  uint8, normalised on device:   {u8['host_ms']:.3f} + {u8['device_ms']:.3f}")


if __name__ == "__main__":
    main()
