"""Reading images where they live: local files against the same images from a local HTTP server and from
WebDataset tar shards, in one run.

Two measures for each source, on the same JPEGs:
- **loader**: the items listed and every image read and decoded as `kosmos ground`'s loader workers do it (draft
  decode to >= 448 px), on --workers threads; images/s;
- **ground**: `kosmos ground` end to end (library call) on a tiny random checkpoint, writing Parquet; images/s.

The server is the test suite's (tests/helpers/serve.py, a threaded http.server on 127.0.0.1), so the HTTP figure
is the cost of our fetching (retries armed), not of a network.

Then the loader over HTTPS (a self-signed certificate made here, trusted through SSL_CERT_FILE) for --https small
images, in one run: before (a connection, so a TCP and TLS handshake, per fetch: urllib, as kosmos fetched
before, and httpx with no connection kept, `locations.http.KEPT = 0`) and after (kept connections).

    python benchmarks/bench_sources.py -n 256 --workers 4
    python benchmarks/bench_sources.py --https 1000 --skip-sources
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tools")]


def make_jpegs(n: int, side: int) -> list[bytes]:
    from PIL import Image

    out = []
    for i in range(n):
        img = Image.new("RGB", (side, side * 3 // 4), ((37 * i) % 255, (91 * i) % 255, 128))
        for x in range(0, img.width, 64):  # some detail, so the JPEG is not trivially small
            img.paste(((13 * x) % 255, 80, (7 * i) % 255), (x, 0, x + 16, img.height))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def loader_rate(inputs: list[str], workers: int) -> tuple[float, int]:
    """images/s of listing `inputs` and reading + decoding every image on `workers` threads, as ground's loaders do."""
    from kosmos_cli.inputs.locations import FetchOptions, open_image
    from kosmos_cli.inputs.sources import iter_items
    from kosmos_cli.run.batching import DRAFT_SIDE
    from kosmos_cli.run.threads import ordered_map

    fetch = FetchOptions()

    def load(item):
        return open_image(item.path, fetch, draft=DRAFT_SIDE, data=item.data)

    started = time.perf_counter()
    ok = 0
    for loaded in ordered_map(load, iter_items(inputs), workers, 4 * workers, "bench-load"):
        ok += loaded.error is None
    return ok / (time.perf_counter() - started), ok


def https_rates(n: int, workers: int, rounds: int) -> None:
    """The loader over a local HTTPS server for `n` small JPEGs: a connection per fetch against kept ones. The server
    runs in a process of its own, so its work does not share this one's interpreter lock."""
    import multiprocessing
    import urllib.request

    from kosmos_cli.inputs.locations import FetchOptions, http, open_image
    from kosmos_cli.run.batching import DRAFT_SIDE
    from kosmos_cli.run.threads import ordered_map
    from tests.helpers.serve import self_signed

    fetch = FetchOptions()

    def ours(url: str):
        return open_image(url, fetch, draft=DRAFT_SIDE)

    def urllib_fetch(url: str):  # how kosmos fetched before kept connections: urlopen, a connection each
        with urllib.request.urlopen(url, timeout=fetch.timeout) as answer:
            return open_image(url, fetch, draft=DRAFT_SIDE, data=answer.read())

    with tempfile.TemporaryDirectory() as tmp:
        cert, key = self_signed(tmp)
        os.environ["SSL_CERT_FILE"] = cert  # trusted by both urllib's and our TLS context
        spawn = multiprocessing.get_context("spawn")
        ask, answer = spawn.Pipe()
        server = spawn.Process(target=_serve_https, args=(n, cert, key, answer), daemon=True)
        server.start()
        base = ask.recv()
        urls = [f"{base}/s/{i:05d}.jpg" for i in range(n)]
        kept = http.KEPT
        ways = {
            "urllib, a connection per fetch (before)": (urllib_fetch, kept),
            "httpx, a connection per fetch (KEPT = 0)": (ours, 0),
            f"httpx, kept connections (KEPT = {kept})": (ours, kept),
        }
        best: dict[str, tuple[float, int, int]] = {}
        for _ in range(rounds):
            for name, (load, size) in ways.items():
                http.KEPT = size
                http._client_for.cache_clear()  # a new client each time: its connections are this round's
                ask.send("connections")
                before = ask.recv()
                started = time.perf_counter()
                ok = sum(loaded.error is None for loaded in ordered_map(load, urls, workers, 4 * workers))
                rate = ok / (time.perf_counter() - started)
                ask.send("connections")
                made = ask.recv() - before
                if name not in best or rate > best[name][0]:
                    best[name] = (rate, ok, made)
        http.KEPT = kept
        server.kill()
    print(f"\nloader over HTTPS (local server, a process of its own), {n} JPEGs of 64x48, {workers} threads, ", end="")
    print(f"best of {rounds}\n| fetching | images | connections | images/s | vs before |\n|---|---|---|---|---|")
    base_rate = next(iter(best.values()))[0]
    for name, (rate, ok, made) in best.items():
        print(f"| {name} | {ok} | {made} | {rate:.1f} | {rate / base_rate:.2f} |")


def _serve_https(n: int, cert: str, key: str, pipe) -> None:
    """The benchmark's HTTPS server, in a process of its own: its base URL, then its connection count when asked."""
    sys.path[:0] = [ROOT]
    from tests.helpers.serve import ImageServer

    with ImageServer(tls=(cert, key)) as server:
        for i, data in enumerate(make_jpegs(n, 64)):
            server.files[f"/s/{i:05d}.jpg"] = data
        pipe.send(server.url(""))
        while pipe.recv():
            pipe.send(server.connections)


def ground_rate(inputs: list[str], engine, out: str, workers: int, batch: int) -> tuple[float, int]:
    from kosmos_cli import ground

    started = time.perf_counter()
    summary = ground(inputs, out, engine=engine, batch_size=batch, workers=workers, overwrite=True)
    return summary.done / (time.perf_counter() - started), summary.done


def best_of(rounds: int, sources: dict, measure) -> dict[str, tuple[float, int]]:
    """Each source measured `rounds` times, the sources taken in turn (so a busy moment hits them all); the best."""
    best: dict[str, tuple[float, int]] = {}
    for _ in range(rounds):
        for name, inputs in sources.items():
            rate, n = measure(name, inputs)
            if name not in best or rate > best[name][0]:
                best[name] = (rate, n)
    return best


def show(title: str, rates: dict[str, tuple[float, int]]) -> None:
    """A markdown table of `rates`, each against local files' (the baseline of the same run)."""
    base = rates["local files"][0]
    print(f"\n{title}\n| source | images | images/s | vs local files |\n|---|---|---|---|")
    for name, (rate, ok) in rates.items():
        print(f"| {name} | {ok} | {rate:.1f} | {rate / base:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=256, help="images")
    parser.add_argument("--side", type=int, default=1024, help="image width in pixels (height 3/4 of it)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=64, help="samples per tar shard")
    parser.add_argument("--skip-ground", action="store_true", help="loader figures only")
    parser.add_argument("--skip-sources", action="store_true", help="the HTTPS comparison only")
    parser.add_argument("--https", type=int, default=1000, help="small images for the HTTPS comparison (0: none)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="each figure is the best of this many, sources taken in turn"
    )
    args = parser.parse_args()

    if args.https:
        https_rates(args.https, args.workers, args.rounds)
    if args.skip_sources:
        return
    from tests.helpers.serve import ImageServer

    jpegs = make_jpegs(args.n, args.side)
    with tempfile.TemporaryDirectory() as tmp, ImageServer() as server:
        folder = os.path.join(tmp, "local")
        os.makedirs(folder)
        for i, data in enumerate(jpegs):
            with open(os.path.join(folder, f"{i:06d}.jpg"), "wb") as f:
                f.write(data)
            server.files[f"/img/{i:06d}.jpg"] = data
        urls = os.path.join(tmp, "urls.txt")
        with open(urls, "w") as f:
            f.write("".join(server.url(f"/img/{i:06d}.jpg") + "\n" for i in range(args.n)))
        shards = 0
        for start in range(0, args.n, args.shard_size):
            with tarfile.open(os.path.join(tmp, f"shard-{shards:05d}.tar"), "w") as tar:
                for i in range(start, min(start + args.shard_size, args.n)):
                    info = tarfile.TarInfo(f"{i:06d}.jpg")
                    info.size = len(jpegs[i])
                    tar.addfile(info, io.BytesIO(jpegs[i]))
            shards += 1
        pattern = os.path.join(tmp, f"shard-{{00000..{shards - 1:05d}}}.tar")
        sources = {"local files": [folder], "HTTP (local server)": [urls], "tar shards": [pattern]}
        mb = sum(map(len, jpegs)) / 2**20
        print(
            f"best of {args.rounds} rounds; {args.n} JPEGs of {args.side}x{args.side * 3 // 4} ({mb:.1f} MB), "
            f"{args.workers} loader threads, {shards} shards of {args.shard_size}"
        )

        loader = best_of(args.rounds, sources, lambda name, inputs: loader_rate(inputs, args.workers))
        show("loader (list + read + decode), images/s", loader)

        if args.skip_ground:
            return
        import torch
        from bench_ground import build  # benchmarks/bench_ground.py: the same tiny random checkpoint

        from kosmos_cli.model.engine import Engine, GenerationOptions

        model, processor = build("tiny", torch.float32)
        engine = Engine.from_model(model, processor, GenerationOptions(max_new_tokens=16))
        ground_rate([folder], engine, os.path.join(tmp, "warm.parquet"), args.workers, args.batch_size)  # warm up
        grounded = best_of(
            args.rounds,
            sources,
            lambda name, inputs: ground_rate(
                inputs, engine, os.path.join(tmp, "r.parquet"), args.workers, args.batch_size
            ),
        )
        show("kosmos ground (tiny checkpoint, 16 new tokens), images/s", grounded)


if __name__ == "__main__":
    main()
