"""`ground --draw` and `kosmos draw`: drawing on threads of their own against drawing in line, in the same run.

    python benchmarks/bench_draw.py [-n 32] [--size 1600x1200] [--batch-size 8]

Photo-sized JPEG scenes from tools/shapes.py, grounded by the trained toy checkpoint
(tests/fixtures/kosmos2-shapes), so every image gets real boxes drawn. Three runs, each on a fresh output:
ground alone, ground drawing each batch in line (how `--draw` worked before), and ground with the drawing thread
(how it works now). The figure that matters is each run's time over ground alone: the cost `--draw` adds.
Then `kosmos draw` of the same results file on 1 drawing thread (as before) and on the default (up to 4).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=32)
    parser.add_argument("--size", default="1600x1200")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default=os.path.join(ROOT, "tests", "fixtures", "kosmos2-shapes"))
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="CPU threads for the model (default 1: the rest of the CPU is free, as on a GPU run)",
    )
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))

    import shapes
    import torch

    from kosmos_cli import draw, ground, load_engine
    from kosmos_cli.drawing import Background, Drawer

    torch.set_num_threads(args.torch_threads)
    engine = load_engine(args.model, device="cpu", dtype="float32", max_new_tokens=48)
    with tempfile.TemporaryDirectory() as tmp:
        photos = os.path.join(tmp, "photos")
        os.makedirs(photos)
        rng = random.Random(1)
        for i in range(args.n):
            img, _ = shapes.make_scene(rng, width, height, noisy=True)
            img.save(os.path.join(photos, f"p{i:03d}.jpg"), quality=90)

        def run(name, drawing):
            out = os.path.join(tmp, f"{name}.jsonl")
            started = time.perf_counter()
            if drawing is None:
                summary = ground([photos], out, engine=engine, batch_size=args.batch_size)
            else:
                with drawing as d:
                    summary = ground([photos], out, engine=engine, batch_size=args.batch_size, on_write=d.add_records)
            seconds = time.perf_counter() - started
            assert summary.done == args.n
            drawn = drawing.summary.drawn if drawing is not None else 0
            return seconds, drawn

        ground([photos], os.path.join(tmp, "warm.jsonl"), engine=engine, batch_size=args.batch_size)  # warm-up
        alone, _ = run("alone", None)
        inline, drawn_inline = run("inline", Drawer(os.path.join(tmp, "inline"), photos, option="--draw"))
        background, drawn_bg = run("background", Background(Drawer(os.path.join(tmp, "bg"), photos, option="--draw")))
        assert drawn_inline == drawn_bg == args.n
        results = os.path.join(tmp, "alone.jsonl")
        one = draw(results, os.path.join(tmp, "draw1"), threads=1)
        default = draw(results, os.path.join(tmp, "draw_default"))
        assert one.drawn == default.drawn == args.n

    print(
        f"{args.n} images {width}x{height}, batch {args.batch_size}, {os.cpu_count()} CPUs, "
        f"toy checkpoint on {args.torch_threads} torch thread(s)"
    )
    print(f"ground alone                 {alone:7.2f} s  {args.n / alone:6.2f} img/s")
    print(f"ground --draw, in line       {inline:7.2f} s  {args.n / inline:6.2f} img/s  x{inline / alone:.2f} of alone")
    print(
        f"ground --draw, threads       {background:7.2f} s  {args.n / background:6.2f} img/s  "
        f"x{background / alone:.2f} of alone"
    )
    print(f"drawing threads vs in line: {inline / background:.2f}x faster")
    threads = min(4, os.cpu_count() or 1)
    print(f"kosmos draw, 1 thread        {one.seconds:7.2f} s  {args.n / one.seconds:6.2f} img/s")
    print(
        f"kosmos draw, {threads} threads       {default.seconds:7.2f} s  {args.n / default.seconds:6.2f} img/s  "
        f"{one.seconds / default.seconds:.2f}x faster"
    )


if __name__ == "__main__":
    main()
