"""`kosmos view` over a large results file: time to the first page, per-page latency, and the server's memory.

    python benchmarks/bench_view.py [-n 100000] [--pages 40] [--starts 3] [--jsonl]

Synthesises n ground records (1 to 4 boxes each, phrases from a small vocabulary, 5% error records) as Parquet in
row groups of 4096 (as the store writes them), over 64 real 1600x1200 JPEGs named in turn. The viewer runs as
`python -m kosmos_cli view` in a process of its own, so the first figure is what a person waits for: from the
command to the first page of cards (interpreter, imports, the first row group), the median of a few fresh starts;
then until every record is indexed (what a filter or sort waits for). Then:
pages in the order written; the first page of a query (filter and sort computed over every record) and the pages
after it (the query's order kept); images cold (decoded, shrunk) and warm (from the cache); the server's memory
(resident, and its peak). `--jsonl` does the same over the records as JSONL.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

COLORS = ["red", "green", "blue", "yellow", "black", "white", "brown", "grey"]
THINGS = ["dog", "cat", "car", "traffic light", "person", "bicycle", "cup", "chair", "bird", "tree"]


def synthesise(path: str, n: int, images: list[str], seed: int = 0) -> None:
    """n ground records as Parquet (or JSONL when `path` ends so), naming `images` in turn."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kosmos_cli.tasks import Ground

    rng = random.Random(seed)
    schema = Ground.schema()
    rows = []
    jsonl = path.endswith(".jsonl")
    out = open(path, "w") if jsonl else None
    writer = None if jsonl else pq.ParquetWriter(path, schema)
    for i in range(n):
        image = images[i % len(images)]
        if rng.random() < 0.05:
            row = {"path": image, "task": "ground", "status": "error", "error": "cannot decode image: truncated"}
        else:
            phrases = [f"a {rng.choice(COLORS)} {rng.choice(THINGS)}" for _ in range(rng.randint(1, 4))]
            caption = "An image of " + " and ".join(phrases) + "."
            entities, at = [], len("An image of ")
            for phrase in phrases:
                x1, y1 = rng.randint(0, 1200), rng.randint(0, 900)
                box = [x1, y1, x1 + rng.randint(40, 400), y1 + rng.randint(40, 300)]
                entities.append(
                    {
                        "phrase": phrase,
                        "start": at,
                        "end": at + len(phrase),
                        "boxes": [[box[0] / 1600, box[1] / 1200, box[2] / 1600, box[3] / 1200]],
                        "boxes_px": [box],
                        "scores": [round(rng.random(), 4)],
                    }
                )
                at += len(phrase) + len(" and ")
            row = {
                "path": image,
                "task": "ground",
                "width": 1600,
                "height": 1200,
                "status": "ok",
                "prompt": "<grounding>An image of",
                "model": "microsoft/kosmos-2-patch14-224",
                "decoding": "greedy",
                "seconds": 0.1,
                "caption": caption,
                "entities": entities,
            }
        if out is not None:
            out.write(json.dumps(row) + "\n")
            continue
        rows.append(row)
        if len(rows) == 4096:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            rows = []
    if writer is not None:
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        writer.close()
    if out is not None:
        out.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return answer.read()


def timed(url: str) -> float:
    started = time.perf_counter()
    get(url)
    return (time.perf_counter() - started) * 1000


def memory(pid: int) -> tuple[float, float]:
    """(resident, peak resident) of a process, in MB."""
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) / 1024
    return found.get("VmRSS", 0.0), found.get("VmHWM", 0.0)


def launch(results: str) -> tuple[subprocess.Popen, str, float, float]:
    """Start the viewer: (process, its address, seconds to the first page, seconds until every record is indexed),
    both from the command."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kosmos_cli", "view", results, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    while True:
        try:
            get(f"{base}/api/records?limit=60")
            break
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the viewer ended ({proc.returncode})") from None
            time.sleep(0.01)
    first = time.perf_counter() - started
    get(f"{base}/api/facets")  # answered once the index over every record is built
    return proc, base, first, time.perf_counter() - started


def bench(results: str, n: int, pages: int, starts: int) -> None:
    print(f"{os.path.basename(results)}: {n} records, {os.path.getsize(results) / 2**20:.1f} MB")
    firsts, indexed = [], []
    for number in range(starts):
        proc, base, first, ready = launch(results)
        firsts.append(first)
        indexed.append(ready)
        if number + 1 < starts:
            proc.terminate()
            proc.wait()
    print(
        f"  first page (60 cards), from the command:  median {statistics.median(firsts):.2f} s of {starts} starts "
        f"({', '.join(f'{f:.2f}' for f in firsts)}); every record indexed: median {statistics.median(indexed):.2f} s"
    )
    try:

        def pages_of(query: str) -> tuple[float, list[float]]:
            cold = timed(f"{base}/api/records?{query}&offset=0&limit=60")
            warm = [timed(f"{base}/api/records?{query}&offset={60 * (k + 1)}&limit=60") for k in range(pages)]
            return cold, warm

        for label, query in (
            ("as written", "sort=file"),
            ("text 'traffic' sorted by best score", "text=traffic&sort=best"),
            ("classes dog,cat min score 0.5 by boxes", "classes=dog,cat&min_score=0.5&sort=boxes"),
            ("errors only, by path", "status=error&sort=path"),
        ):
            cold, warm = pages_of(query)
            print(
                f"  {label:<42} first page {cold:7.1f} ms; next {pages} pages median "
                f"{statistics.median(warm):5.1f} ms, max {max(warm):5.1f} ms"
            )
        timed(f"{base}/api/record/12345")
        record = [timed(f"{base}/api/record/{r}") for r in range(20000, 20020)]
        print(f"  a whole record (detail view): median {statistics.median(record):.1f} ms")
        cold = [timed(f"{base}/image/{i}?size=512") for i in range(16)]
        warm = [timed(f"{base}/image/{i}?size=512") for i in range(16)]
        print(
            f"  images 1600x1200 JPEG -> 512: cold median {statistics.median(cold):.0f} ms, "
            f"cached median {statistics.median(warm):.1f} ms"
        )
        rss, peak = memory(proc.pid)
        print(f"  server memory: {rss:.0f} MB resident now, {peak:.0f} MB peak")
    finally:
        proc.terminate()
        proc.wait()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--pages", type=int, default=40, help="pages timed after each query's first")
    parser.add_argument("--jsonl", action="store_true", help="also over the same records as JSONL")
    parser.add_argument("--starts", type=int, default=3, help="fresh starts timed to the first page (median)")
    args = parser.parse_args(argv)

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        rng = random.Random(1)
        images = []
        for i in range(64):
            path = os.path.join(tmp, f"img_{i:02d}.jpg")
            noise = Image.effect_noise((1600, 1200), rng.randint(20, 80))  # a photo's worth of detail to decode
            Image.merge("RGB", (noise, noise.rotate(90, expand=False), noise.transpose(0))).save(path, quality=90)
            images.append(path)
        for ending in (".parquet", ".jsonl") if args.jsonl else (".parquet",):
            results = os.path.join(tmp, f"results{ending}")
            started = time.perf_counter()
            synthesise(results, args.n, images)
            print(f"(synthesised in {time.perf_counter() - started:.1f} s)")
            bench(results, args.n, args.pages, args.starts)


if __name__ == "__main__":
    main()
