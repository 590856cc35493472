"""`kosmos ground` on 1 rank against N ranks (torchrun, CPU, gloo), on the same images and checkpoint, in one run.

Each rank is one process with its own model copy; the figures are those the run prints on stderr: one line per rank
(its share and its images/s, from when the output was ready to its last record) and the total (every record, over
rank 0's time from start to merged output). "wall" is the whole command, launcher, imports and model load included.

    python benchmarks/bench_ranks.py                          # 1 vs 2 ranks, one CPU thread each
    python benchmarks/bench_ranks.py --ranks 1,2,4 -n 96 --width 128 --layers 4

The checkpoint is built offline (tools/tiny_checkpoint.build_tiny): random weights never emit end-of-sequence, so
every image generates exactly --max-new-tokens tokens and the work per image is the same everywhere.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))

RANK_LINE = re.compile(
    r"kosmos ground rank (\d+): (\d+) done, (\d+) failed, (\d+) skipped in ([\d.]+)s "
    r"\(([\d.]+) images/s\)"
)
TOTAL_LINE = re.compile(
    r"kosmos ground finished: (\d+) done, (\d+) failed, (\d+) skipped in ([\d.]+)s "
    r"\(([\d.]+) images/s\)"
)


def make_images(folder: str, n: int) -> None:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        w, h = (224, 224) if i % 3 == 0 else ((320, 240) if i % 3 == 1 else (240, 320))
        Image.new("RGB", (w, h), ((37 * i) % 255, 90, 200)).save(os.path.join(folder, f"img_{i:04d}.jpg"))


def run(ranks: int, args, model: str, photos: str, out: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(ranks),
        "-m",
        "kosmos_cli",
        "ground",
        photos,
        "--out",
        out,
        "--overwrite",
        "--model",
        model,
        "--max-new-tokens",
        str(args.max_new_tokens),
        "-b",
        str(args.batch_size),
        "--device",
        "cpu",
        "--workers",
        "1",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(args.threads))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{ranks} ranks failed:\n{proc.stderr[-3000:]}")
    total = TOTAL_LINE.search(proc.stderr)
    per_rank = {int(m[1]): (int(m[2]), float(m[5]), float(m[6])) for m in RANK_LINE.finditer(proc.stderr)}
    done, seconds, rate = int(total[1]), float(total[4]), float(total[5])
    if not per_rank:  # one process: its own line is the total
        per_rank = {0: (done, seconds, rate)}
    return {"ranks": ranks, "done": done, "seconds": seconds, "rate": rate, "wall": wall, "per_rank": per_rank}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="1,2", help="comma-separated process counts; the first is the baseline")
    parser.add_argument("-n", "--images", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("-b", "--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank (OMP_NUM_THREADS)")
    parser.add_argument("--width", type=int, default=64, help="hidden size of the built checkpoint")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="runs per rank count; the best total is kept")
    args = parser.parse_args()
    from tiny_checkpoint import build_tiny

    counts = [int(r) for r in args.ranks.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-ranks-") as tmp:
        model = build_tiny(os.path.join(tmp, "model"), width=args.width, layers=args.layers)
        photos = os.path.join(tmp, "photos")
        make_images(photos, args.images)
        print(
            f"{args.images} images, checkpoint width {args.width} x {args.layers} layers, "
            f"{args.max_new_tokens} new tokens, batch {args.batch_size}, {args.threads} thread(s) per rank, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        )
        results = []
        for ranks in counts:
            tries = [
                run(ranks, args, model, photos, os.path.join(tmp, f"out-{ranks}.jsonl")) for _ in range(args.repeat)
            ]
            results.append(max(tries, key=lambda r: r["rate"]))
    base = results[0]
    print(
        f"{'ranks':>5} {'per-rank images/s':>30} {'total images/s':>15} {'vs ' + str(base['ranks']):>7} "
        f"{'run s':>7} {'wall s':>7}"
    )
    for r in results:
        per_rank = " ".join(f"{r['per_rank'][k][2]:.2f}" for k in sorted(r["per_rank"]))
        print(
            f"{r['ranks']:>5} {per_rank:>30} {r['rate']:>15.2f} {r['rate'] / base['rate']:>6.2f}x "
            f"{r['seconds']:>7.1f} {r['wall']:>7.1f}"
        )
        assert r["done"] == args.images, r


if __name__ == "__main__":
    main()
