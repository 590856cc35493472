"""Peak memory of `kosmos ground` for 100 and for 10,000 inputs: it must stay flat.

Each size runs in a fresh process (so peaks do not mix) on the same tiny checkpoint (built offline), writing
Parquet; the script prints each process's peak RSS and the ratio of the large run to the small one.

    python benchmarks/bench_memory.py                 # 100 and 10000 images
    python benchmarks/bench_memory.py --sizes 100 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {tests!r})
from kosmos_cli import ground, load_engine
engine = load_engine({model!r}, max_new_tokens=1)
started = time.perf_counter()
summary = ground([{folder!r}], {out!r}, engine=engine, batch_size=8)
print(json.dumps({{"done": summary.done, "seconds": time.perf_counter() - started,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def make_folder(folder: str, n: int) -> None:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    img = Image.new("RGB", (64, 48), (10, 120, 200))
    for i in range(n):
        sub = os.path.join(folder, f"{i // 1000:03d}")
        os.makedirs(sub, exist_ok=True)
        img.save(os.path.join(sub, f"img_{i:06d}.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10000])
    args = parser.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from tiny_checkpoint import build_tiny

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny(os.path.join(tmp, "model"))
        for n in args.sizes:
            folder, out = os.path.join(tmp, f"in{n}"), os.path.join(tmp, f"out{n}.parquet")
            make_folder(folder, n)
            code = CHILD.format(tests=os.path.join(ROOT, "tools"), model=model, folder=folder, out=out)
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                sys.exit(proc.stderr)
            results[n] = json.loads(proc.stdout.strip().splitlines()[-1])
            r = results[n]
            print(
                f"{n:>6} images: peak RSS {r['peak_rss_mb']:7.1f} MB, {r['done']} done in {r['seconds']:.1f}s "
                f"({r['done'] / r['seconds']:.1f} images/s; process {time.perf_counter() - started:.1f}s)"
            )
    small, large = min(results), max(results)
    ratio = results[large]["peak_rss_mb"] / results[small]["peak_rss_mb"]
    print(f"peak RSS {large} / {small} images: {ratio:.3f}  (flat: target <= 1.10)")


if __name__ == "__main__":
    main()
