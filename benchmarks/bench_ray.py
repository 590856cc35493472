"""`--on ray` against a local run on this machine, and what the driver costs per image.

    python benchmarks/bench_ray.py [-n 8] [--batch-size 4] [--max-new-tokens 16] [--repeat 2] [--checkpoint DIR]
                                   [--driver-images 20000] [--skip-model]

- **Ray against local**: a checkpoint of the real architecture (`Kosmos2Config()`, random weights, float32; built as
  benchmarks/bench_cpu.py builds it) grounds the same -n JPEGs twice, each in a process of its own: `on="local"`,
  then `on="ray"` on a Ray cluster that process starts on this machine (`ray.init()`: every CPU), `--repeat` times
  in turn. Each reports images/s over the run itself (`Summary.seconds`: the model load, here or in the actors, is
  not counted) and torch's threads where the model ran; then the ratio of all runs' images/s (target >= 0.8).
- **The driver's own work**: `--driver-images` empty files grounded `on="ray"` with the model actors replaced by a
  stand-in that answers at once (every record captioned "a stand-in"), so what is left is this process's work:
  listing, skipping, sending the chunks, receiving the records and writing them (JSONL). Reports µs per image of
  wall time and of this process's CPU time, and images/s (targets: <= 50 µs, >= 20,000 images/s); beside it the
  same with no Ray at all (a model in this process that answers at once): the pipeline's own floor, and so what
  sending to and receiving from the actors adds.
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
sys.path[:0] = [ROOT, HERE, os.path.join(ROOT, "tools")]


class StandIn:
    """In place of run/ray.py's ModelActor: every unit's record as it came, captioned, at once."""

    def __init__(self, model, generation, loaders):
        pass

    def ready(self):
        return None, 0

    def answer(self, chunk, work):
        from dataclasses import replace

        from kosmos_cli.tasks.scores import Generation

        task, _ = work
        stand_in = Generation("a stand-in")
        return [task.record(replace(unit, generated=stand_in)) for _, units in chunk for unit in units]


class Instant:
    """A model in this process that answers at once (the same records as StandIn): the pipeline's own floor."""

    def __init__(self, options, generation):
        self.options, self.generation, self.decoding = options, generation, generation.label

    def batch_size(self, given=None):
        return given or 8

    def answered(self, pending, task, options):
        from dataclasses import replace

        from kosmos_cli.run.batching import Answered
        from kosmos_cli.tasks.scores import Generation

        stand_in = Generation("a stand-in")
        chunk = []
        for _, units in pending:
            chunk.extend(task.record(replace(unit, generated=stand_in)) for unit in units)
            if len(chunk) >= 2048:
                yield Answered(records=chunk)
                chunk = []
        if chunk:
            yield Answered(records=chunk)


def driver(n: int, repeat: int = 3) -> dict[str, dict]:
    """The driver's work per image over `n` empty files, the best of `repeat` runs of each: on Ray with stand-in
    actors, and the pipeline alone with a model in this process that answers at once (runs taken in turn)."""
    import ray

    from kosmos_cli import ground
    from kosmos_cli.run import ray as on_ray
    from kosmos_cli.run import runner

    on_ray.ModelActor = StandIn  # type: ignore[misc]
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    local_model = runner._model
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        photos = os.path.join(tmp, "photos")
        os.makedirs(photos)
        for i in range(n):
            open(os.path.join(photos, f"{i:06d}.jpg"), "wb").close()
        for attempt in range(repeat):
            for on in ("ray", "local"):
                if on == "local":  # the pipeline's model is the Instant one
                    runner._model = lambda on, engine, model, generation: Instant(model, generation)  # type: ignore
                out = os.path.join(tmp, f"{on}{attempt}.jsonl")
                cpu = time.process_time()
                summary = ground([photos], out, on=on, model="stand-in", max_new_tokens=16, device="cpu")
                cpu = time.process_time() - cpu
                runner._model = local_model
                assert summary.done == n, summary.line()
                run = {"wall_us": 1e6 * summary.seconds / n, "cpu_us": 1e6 * cpu / n, "rate": n / summary.seconds}
                if on not in best or run["wall_us"] < best[on]["wall_us"]:
                    best[on] = run
    ray.shutdown()
    return best


def child(args) -> None:
    """One run over the images, in this process: a JSON line of what it measured."""
    from kosmos_cli import ground

    paths = args.images.split(os.pathsep)
    summary = ground(
        paths,
        os.path.join(args.out, f"{args.on}.jsonl"),
        on=args.on,
        model=args.model,
        dtype="float32",
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    threads = _threads(args.on)
    assert summary.done == len(paths), summary.line()
    print(json.dumps({"rate": summary.done / summary.seconds, "seconds": summary.seconds, "threads": threads}))


def _threads(on: str) -> int:
    """torch's threads where the model ran: here, or in a model actor like the run's."""
    import torch

    if on == "local":
        return torch.get_num_threads()
    import ray

    from kosmos_cli.run.ray import Sizing

    sizing = Sizing.of([n["Resources"] for n in ray.nodes() if n.get("Alive")], on_gpus=False)

    @ray.remote(num_cpus=sizing.cpus)
    def threads() -> int:
        import torch

        return torch.get_num_threads()

    return ray.get(threads.remote())


def side_by_side(model: str, paths: list[str], out: str, args) -> dict[str, dict]:
    """Local and Ray runs in turn, `args.repeat` of each (the machine's load moves between them): per kind of run,
    the images/s over all its runs and each run's."""
    runs: dict[str, dict] = {on: {"seconds": 0.0, "images": 0, "each": []} for on in ("local", "ray")}
    for attempt in range(args.repeat):
        for on in ("local", "ray"):
            folder = os.path.join(out, f"{on}-{attempt}")  # a fresh output each run: nothing to resume
            os.makedirs(folder)
            command = [sys.executable, os.path.abspath(__file__), "--child", "--on", on, "--model", model]
            command += ["--out", folder, "--images", os.pathsep.join(paths), "--batch-size", str(args.batch_size)]
            command += ["--max-new-tokens", str(args.max_new_tokens)]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
            if done.returncode:
                sys.exit(f"the {on} run failed:\n{done.stderr}")
            run = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{on}: {run['rate']:.4f} images/s ({run['seconds']:.1f} s)", flush=True)
            runs[on]["seconds"] += run["seconds"]
            runs[on]["images"] += len(paths)
            runs[on]["each"].append(run["rate"])
            runs[on]["threads"] = run["threads"]
    for r in runs.values():
        r["rate"] = r["images"] / r["seconds"]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=8, help="images for Ray against local")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--driver-images", type=int, default=20000, help="empty files for the driver's work")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, local and Ray in turn")
    parser.add_argument("--checkpoint", help="the full-size checkpoint's folder: written there once, then reused")
    parser.add_argument("--skip-model", action="store_true", help="measure the driver's work only")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--on", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    cpus = os.cpu_count()
    work = driver(args.driver_images)
    print(
        f"\nthe driver's own work, {args.driver_images} images, {cpus} CPUs, best of 3 "
        "(targets: <= 50 µs, >= 20,000 img/s)"
    )
    print("| | µs/image (wall) | images/s | µs/image of this process's CPU |")
    print("|---|---|---|---|")
    for on, name in (("ray", "--on ray, stand-in actors"), ("local", "the pipeline alone, an instant model here")):
        r = work[on]
        print(f"| {name} | {r['wall_us']:.1f} | {r['rate']:,.0f} | {r['cpu_us']:.1f} |")
    print(f"what Ray adds: {work['ray']['wall_us'] - work['local']['wall_us']:.1f} µs/image", flush=True)
    if args.skip_model:
        return
    from bench_cpu import images, write_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        model = args.checkpoint or os.path.join(tmp, "full")
        if not os.path.exists(os.path.join(model, "config.json")):
            started = time.perf_counter()
            write_checkpoint(model)
            print(f"full-size random checkpoint written in {time.perf_counter() - started:.0f} s", flush=True)
        paths = images(os.path.join(tmp, "images"), args.n)
        runs = side_by_side(model, paths, tmp, args)
    local, ray = runs["local"], runs["ray"]
    print(
        f"\nfull-size architecture (random weights), float32, {args.n} images, batch {args.batch_size}, "
        f"{args.max_new_tokens} new tokens, {cpus} CPUs, {args.repeat} runs of each in turn"
    )
    print("| run | images/s (all its runs) | each run | torch threads |")
    print("|---|---|---|---|")
    for name, r in (("local", local), ("--on ray", ray)):
        each = ", ".join(f"{rate:.4f}" for rate in r["each"])
        print(f"| {name} | {r['rate']:.4f} | {each} | {r['threads']} |")
    print(f"\n--on ray / local: {ray['rate'] / local['rate']:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
