"""Peak memory of loading one very large PNG the way `kosmos ground` does: decode, then the processor's pixels.

Two fresh processes load the same image (9000 x 9000 by default): the baseline decodes it at full size (what every
non-JPEG image got before the memory bound, and what `kosmos draw` still does), the bounded one as the pipeline now
does (`load_image(path, draft=448)`: shrunk right after decoding). Each prints its peak RSS, and the part of it
above the process's RSS once everything was imported (the loader's own share); then the ratio.

    python benchmarks/bench_image_memory.py              # 9000 x 9000
    python benchmarks/bench_image_memory.py --side 6000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROCESSOR = os.path.join(ROOT, "tests", "fixtures", "kosmos2-shapes")  # the Kosmos-2 processor, 224 x 224

CHILD = r"""
import json, resource
from transformers import AutoProcessor
from kosmos_cli.inputs.images import load_image
processor = AutoProcessor.from_pretrained({processor!r}).image_processor
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
loaded = load_image({path!r}, draft={draft!r})
pixels = processor(images=[loaded.image], return_tensors="np")["pixel_values"][0]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"before_mb": before, "peak_mb": peak, "size": [loaded.width, loaded.height],
                  "decoded": list(loaded.image.size), "pixels": list(pixels.shape)}}))
"""


def make_png(path: str, side: int) -> None:
    """A smooth picture (a small random one blown up): compresses like a photo would, unlike noise or a flat fill."""
    import numpy as np
    from PIL import Image

    small = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(small).resize((side, side), Image.BILINEAR).save(path, compress_level=1)


def measure(path: str, draft: int | None) -> dict:
    code = CHILD.format(processor=PROCESSOR, path=path, draft=draft)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode:
        sys.exit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=9000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.png")
        make_png(path, args.side)
        print(f"{args.side} x {args.side} PNG, {os.path.getsize(path) / 2**20:.0f} MB on disk")
        results = {}
        for label, draft in (("full decode (baseline)", None), ("bounded (draft=448)", 448)):
            r = results[label] = measure(path, draft)
            print(
                f"{label:>24}: peak RSS {r['peak_mb']:7.1f} MB, loader's share {r['peak_mb'] - r['before_mb']:7.1f} MB "
                f"(decoded {r['decoded'][0]}x{r['decoded'][1]}, recorded size {r['size'][0]}x{r['size'][1]})"
            )
    full, bounded = results.values()
    share = (full["peak_mb"] - full["before_mb"]) / max(bounded["peak_mb"] - bounded["before_mb"], 1e-9)
    print(f"baseline / bounded: peak RSS {full['peak_mb'] / bounded['peak_mb']:.2f}x, loader's share {share:.2f}x")


if __name__ == "__main__":
    main()
