"""`--dry-run` on a large folder: how long it takes to say what a run would do, against the bare listing.

A folder of N small image files (100,000 by default) and a Parquet results file recording half of them, as a run
records them (same model, prompt and decoding, each file's size and modification time). Measured in one run:
- **listing**: the folder listed as a run lists it (`iter_items`, with each file's stat): the floor;
- **dry run**: `ground(folder, out, dry_run=True)`: listing, the output read, every image placed.

    python benchmarks/bench_dry_run.py -n 100000
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from dataclasses import replace

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT]

MODEL = "microsoft/kosmos-2-patch14-224"


def make_folder(folder: str, n: int) -> list[str]:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (90, 120, 200)).save(buf, "PNG")
    data = buf.getvalue()
    paths = []
    for i in range(n):
        sub = os.path.join(folder, f"{i // 1000:03d}")
        if i % 1000 == 0:
            os.makedirs(sub, exist_ok=True)
        path = os.path.join(sub, f"img_{i:06d}.png")
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)
    return paths


def record_half(paths: list[str], out: str) -> None:
    """A results file of kosmos holding an ok record for every other image, as a run with the defaults writes it."""
    import pyarrow.parquet as pq

    from kosmos_cli.inputs.listing import Item
    from kosmos_cli.options import GenerationOptions, ModelOptions
    from kosmos_cli.output.formats import records_table
    from kosmos_cli.run.plan import decoding_of
    from kosmos_cli.tasks import Ground, Settings
    from kosmos_cli.tasks.scores import Generation

    task, decoding = Ground(), decoding_of(ModelOptions(), GenerationOptions())
    settings, answer = Settings(MODEL, decoding), Generation("An image of a square")
    records = []
    for path in paths[::2]:
        st = os.stat(path)
        (unit,) = task.units(Item(path, stat=(st.st_size, st.st_mtime)), settings)
        records.append(task.record(replace(unit, size=(32, 24), generated=answer)))
    pq.write_table(records_table(records, Ground), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100_000, help="images in the folder")
    args = parser.parse_args()

    from kosmos_cli import ground
    from kosmos_cli.inputs.locations import stat
    from kosmos_cli.inputs.sources import iter_items

    with tempfile.TemporaryDirectory() as tmp:
        folder, out = os.path.join(tmp, "photos"), os.path.join(tmp, "results.parquet")
        started = time.perf_counter()
        paths = make_folder(folder, args.n)
        record_half(paths, out)
        made = time.perf_counter() - started
        print(f"made {args.n} images and a results file of {(args.n + 1) // 2} records in {made:.1f}s")

        started = time.perf_counter()
        listed = sum(1 for item in iter_items([folder]) if (item.stat or stat(item.path)))
        listing = time.perf_counter() - started
        started = time.perf_counter()
        plan = ground(folder, out, model=MODEL, dry_run=True)
        dry = time.perf_counter() - started
        assert listed == args.n and plan.images == args.n and plan.recorded == (args.n + 1) // 2, plan.as_dict()
        print(f"listing alone: {listing:.2f}s ({args.n / listing:,.0f} images/s)")
        print(f"dry run:       {dry:.2f}s ({args.n / dry:,.0f} images/s), {dry / listing:.2f}x the listing")
        print(plan.line())


if __name__ == "__main__":
    main()
