"""`--on ray`: the model on a Ray cluster, as a pool of actors this process drives; this process lists and writes.

    this process (the driver)                              a pool of model actors on the cluster
    the pipeline lists the inputs and skips what the   ->  each loads the Engine once; for each chunk it is sent, it
    output holds, as for a local run; the rest goes        loads the images on threads (`batching.load`), answers
    out in chunks, DEPTH chunks per actor in flight        them in batches (`batching.bucketed`) and finishes them
    the records of each chunk, in the order sent, are  <-  into records (`Answered.finish`)
    written through the store, as a local run's are

Sizing (`Sizing.of`): on a cluster with GPUs, an actor per GPU, reserving its share of its node's CPUs (its image
loaders); on a cluster without GPUs (or with --device cpu), an actor per node, reserving the CPUs of the smallest
node: Ray sets OMP_NUM_THREADS to what an actor reserves, so torch computes on all of them, as a local run does.

Chunks: each actor's first chunk is one batch; later chunks are about CHUNK_SECONDS of an actor's work at the rate
measured so far (at most CHUNK_UNITS units and CHUNK_BYTES of image bytes), so records come back and the progress
bar moves every second or so, while a fast cluster costs this process one Ray call per many images. An actor runs
two calls at once (`max_concurrency`): one loads its images while the other holds the model.

Exactly once: a chunk is one actor call, whose result comes back once. An actor whose process dies is started again
by Ray and its calls are run again (MAX_RESTARTS times at most); a pool that cannot be restarted ends the run in
one line, with what came back written. The model loads when the pool starts, before the output is opened (a local
run loads its engine first too): a model that cannot load is one line, and no output file.

`ray` is imported here only, inside the functions that need it: without the extra, `--on ray` is refused before
anything loads (options.RunOptions).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ClusterError, KosmosError, ModelError, UsageError
from ..model.engine import AUTO_BATCH_SIZES, DEFAULT_BATCH_SIZE, Engine
from ..options import GenerationOptions, ModelOptions, RunOptions
from ..tasks import Task
from ..tasks.records import Record, one_line
from .batching import MAX_WORKERS, Answered, Pending, bucketed, load
from .threads import ordered_map

log = logging.getLogger("kosmos_cli")

DEPTH = 2  # calls in flight per actor, run at once: one loads its images while the other holds the model
CHUNK_SECONDS = 1.0  # an actor's work per chunk, once its rate is known
CHUNK_UNITS = 2048  # units per chunk at most (what is in flight stays bounded however fast the cluster is)
CHUNK_BYTES = 16 << 20  # image bytes per chunk at most (WebDataset samples and Parquet image rows carry theirs)
MAX_RESTARTS = 4  # times Ray starts a model actor whose process died again, each time running its calls again
CONNECT_TIMEOUT = 10.0  # seconds to reach the cluster's address before saying it cannot be reached
POLL = 0.5  # seconds between Ctrl-C checks while waiting for the cluster


# -- joining the cluster -----------------------------------------------------------------------------------------------
def join() -> None:
    """Join the Ray cluster the way Ray does: the one this process is already in, $RAY_ADDRESS (set by `ray job
    submit`), or, with neither, a cluster started on this machine (what `ray.init()` does). One line when the
    address cannot be reached. Ray's own logs stay in its log files: the actors' errors come back as results."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    if address not in (None, "auto", "local"):
        _reachable(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {address} ($RAY_ADDRESS)" if address else "on this machine"
        raise ClusterError(
            f"cannot join the Ray cluster {where} ({one_line(str(exc))}): start one (ray start --head, ray up, "
            "KubeRay) or unset RAY_ADDRESS to start one here"
        ) from None


def _reachable(address: str) -> None:
    """Refuse an address nothing answers at, in seconds: ray.init would wait for it for minutes, silently."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT):
            return
    except ValueError:
        reason = "no port in it: give host:port, or ray://host:port for Ray Client"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    raise ClusterError(
        f"cannot reach the Ray cluster at {address} ($RAY_ADDRESS): {reason}; check that it is up and the address "
        "(ray status on its head node), or unset RAY_ADDRESS to start one on this machine"
    )


# -- the pool's size -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizing:
    """How many model actors, and what each reserves: `gpus` GPUs (0: on the CPU) and `cpus` CPUs."""

    actors: int
    cpus: float  # a share of one CPU where a node has more GPUs than CPUs
    gpus: int

    @classmethod
    def of(cls, nodes: list[dict[str, float]], on_gpus: bool) -> Sizing:
        """From the resources of the cluster's live nodes. `on_gpus`: an actor per GPU, with an equal share of its
        node's CPUs. Otherwise as many actors of the smallest node's CPUs as the nodes hold (one per node when they
        are alike). With no such node yet, one actor, which waits for the node an autoscaler adds."""
        if on_gpus:
            with_gpus = [n for n in nodes if n.get("GPU", 0) >= 1]
            if not with_gpus:
                return cls(1, 1, 1)
            share = min(n.get("CPU", 0) / n["GPU"] for n in with_gpus)
            return cls(sum(int(n["GPU"]) for n in with_gpus), int(share) if share >= 1 else share, 1)
        with_cpus = [int(n.get("CPU", 0)) for n in nodes if n.get("CPU", 0) >= 1]
        if not with_cpus:
            return cls(1, 1, 0)
        smallest = min(with_cpus)
        return cls(sum(c // smallest for c in with_cpus), smallest, 0)


# -- the model actors --------------------------------------------------------------------------------------------------
class ModelActor:
    """The model, loaded once per actor (on its GPU, or the CPUs it reserves), answering chunks of what is to do
    with the engine, decoder and batch rules of a local run. Two calls at once: one loads while the other answers."""

    def __init__(self, model: ModelOptions, generation: GenerationOptions, loaders: int):
        self.loaders, self.lock, self.error = loaders, threading.Lock(), None
        try:
            self.engine = Engine(model, generation).load()
        except KosmosError as exc:  # said by `ready`, on the driver, in one line
            self.error = exc
        except Exception as exc:  # noqa: BLE001 - out of memory loading the weights: said the same way
            if type(exc).__name__ != "OutOfMemoryError":
                raise
            self.error = ModelError(
                f"out of GPU memory loading {model.name} on {socket.gethostname()}: use --dtype float16 or "
                "bfloat16, or GPUs with more memory"
            )

    def ready(self) -> tuple[KosmosError | None, int]:
        """(why the model did not load, or None; the threads torch computes on here)."""
        import torch

        return self.error, torch.get_num_threads()

    def answer(self, chunk: list, work: tuple[Task, RunOptions]) -> list[Record]:
        """The records of a chunk of (item, units): images loaded on threads, then the model's batches."""
        task, options = work
        threads = max(1, min(len(chunk), options.workers or self.loaders))
        loaded = list(
            ordered_map(
                lambda job: load(job[0], job[1], task, self.engine, options), chunk, threads, 2 * threads, "kosmos-load"
            )
        )
        with self.lock:
            answered = list(bucketed(loaded, task, self.engine, self.engine.batch_size(options.batch_size)))
        return [record for batch in answered for record in batch.finish(task)]


# -- the strategy the pipeline runs ------------------------------------------------------------------------------------
@dataclass
class RayData:
    """pipeline.Model on a Ray cluster: a pool of `actor`s (ModelActor, or a test's stand-in), sized by `sizing`."""

    options: ModelOptions
    generation: GenerationOptions
    sizing: Sizing
    actor: type
    actors: list = field(default_factory=list)  # their handles, once `start`ed

    @classmethod
    def on_cluster(cls, model: ModelOptions, generation: GenerationOptions) -> RayData:
        """Join the cluster (`join`), size the pool from it and start it: the model loads in every actor now."""
        if model.device.startswith("cuda:"):
            raise UsageError(
                "{param} " + model.device + " names a GPU of this machine; on Ray every model actor gets a GPU of "
                "its own: use --device auto or cuda",
                param="device",
            )
        join()
        import ray

        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        sizing = Sizing.of(nodes, on_gpus=model.device != "cpu" and (model.device != "auto" or _any_gpu(nodes)))
        if sizing.gpus and not _any_gpu(nodes):
            log.warning("the Ray cluster has no GPU yet: the model actors wait for one (an autoscaler adds it)")
        if not sizing.gpus:
            model = replace(model, device="cpu")
        return cls(model, generation, sizing, ModelActor).start()

    def start(self) -> RayData:
        """The pool's actors, each with its model loaded; the first that cannot load it says why, in one line."""
        import ray

        remote: Any = ray.remote(self.actor).options(
            num_cpus=self.sizing.cpus,
            num_gpus=self.sizing.gpus,
            max_concurrency=DEPTH,
            max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_RESTARTS,
        )
        loaders = max(1, min(MAX_WORKERS, int(self.sizing.cpus)))
        self.actors = [remote.remote(self.options, self.generation, loaders) for _ in range(self.sizing.actors)]
        try:
            for error, _ in _get([a.ready.remote() for a in self.actors]):
                if error is not None:
                    raise error
        except ray.exceptions.RayError as exc:  # kosmos missing on the workers, a class they cannot import
            self.stop()
            raise ClusterError(
                f"the Ray cluster cannot start kosmos's model actors ({_last_line(exc)}): install kosmos-ground[ray], "
                "the same version, on every node (or give it in the job's runtime_env)"
            ) from None
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        import ray

        for handle in self.actors:
            ray.kill(handle)
        self.actors = []

    @property
    def decoding(self) -> str:
        """What records name as their decoding: the generation's label, and int8 weights when asked for (the actors
        load them so, or refuse; with int8-or-float32 an actor that falls back to float32 warns)."""
        return self.generation.label + (" quantize=int8" if self.options.quantize else "")

    def batch_size(self, given: int | None = None) -> int:
        """Units per batch: `given`, else 8 on the CPU and the largest automatic size on a GPU (each actor's engine
        splits a chunk into batches of its own size, chosen from its card's free memory)."""
        return given or (AUTO_BATCH_SIZES[1] if self.sizing.gpus else DEFAULT_BATCH_SIZE)

    def answered(self, pending: Pending, task: Task, options: RunOptions) -> Iterator[Answered]:
        """Chunks of `pending` out to the actors as it is listed, DEPTH per actor at most; each chunk's records
        back, in the order sent. The actors are ended once idle (or on any way out)."""
        import ray

        try:
            work = ray.put((task, options))
            first = self.batch_size(options.batch_size)
            chunks = _Chunks(pending, first, len(self.actors))
            flying: deque = deque()  # (a call's result, its units), in the order sent
            sent = 0
            while True:
                while len(flying) < DEPTH * len(self.actors) and (chunk := chunks.next()):
                    actor = self.actors[sent % len(self.actors)]  # in turn: the one whose oldest call came back
                    flying.append((actor.answer.remote(chunk, work), sum(len(units) for _, units in chunk)))
                    sent += 1
                if not flying:
                    return
                result, units = flying.popleft()
                records = _get([result])[0]
                chunks.answered(units)
                yield Answered(records=records)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, KosmosError):
                raise exc.cause from None
            raise
        except (ray.exceptions.ActorDiedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError) as exc:
            raise ClusterError(
                f"the Ray cluster lost the run ({_last_line(exc)}); what came back is written: run the same command "
                "again to finish"
            ) from None
        finally:
            self.stop()


class _Chunks:
    """What is to do, in chunks: a batch each at first, then about CHUNK_SECONDS of an actor's work each at the
    rate the pool has answered at so far."""

    def __init__(self, pending: Pending, batch: int, actors: int):
        self.pending, self.batch, self.actors = iter(pending), batch, actors
        self.size, self.done, self.started = batch, 0, time.perf_counter()

    def next(self) -> list:
        chunk: list = []
        units = data = 0
        for item, todo in self.pending:
            chunk.append((item, todo))
            units += len(todo)
            data += len(item.data or b"")
            if units >= self.size or data >= CHUNK_BYTES:
                break
        return chunk

    def answered(self, units: int) -> None:
        self.done += units
        per_actor = self.done / max(time.perf_counter() - self.started, 1e-6) / self.actors
        self.size = min(CHUNK_UNITS, max(self.batch, int(per_actor * CHUNK_SECONDS) // self.batch * self.batch))


def _get(results: list) -> list:
    """ray.get, in short waits, so Ctrl-C gets through."""
    import ray

    waiting = list(results)
    while waiting:
        _, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=POLL)
    return ray.get(results)


def _last_line(exc: BaseException) -> str:
    """What a Ray error says in its last line (its first are where it was raised)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return one_line(lines[-1] if lines else type(exc).__name__)


def _any_gpu(nodes: list[dict[str, float]]) -> bool:
    return any(n.get("GPU", 0) >= 1 for n in nodes)
