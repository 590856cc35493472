"""Ordered, bounded threads: work runs ahead of the caller (`ordered_map`) or behind it (`FinishBehind`), in order.

Loading images for the model (pipeline.py) and drawing them (drawing/background.py) want `ordered_map`: the slow part
on several threads, what follows in order, and memory bounded however long the input. Finishing and writing what
the model answered wants `FinishBehind`: one thread behind the model's, so the next batch starts while the last one is
turned into records and written.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future
from typing import Generic, TypeVar

_STOP = object()
In = TypeVar("In")
Out = TypeVar("Out")


STOP_GRACE = 1.5  # seconds a stopped ordered_map waits for the work still running before it leaves it behind


def ordered_map(
    fn: Callable[[In], Out],
    items: Iterable[In],
    workers: int,
    ahead: int,
    name: str = "kosmos",
    stop: threading.Event | None = None,
) -> Generator[Out, None, None]:
    """`fn(item)` for each item on `workers` threads, yielded in the order of `items`.

    Items are pulled lazily (on the caller's thread) so that at most `ahead` of them are in flight: submitted and
    not yet yielded. The next ones are pulled when the caller asks for the next result, so the one it holds is
    done with. An exception from `fn` comes out where its result would have. On an exception, or when the
    caller closes the iterator early (`contextlib.closing`), what has not started is cancelled and what is
    running is waited for, up to STOP_GRACE seconds: a read that never returns (a hung mount, a pipe) cannot hold
    up Ctrl-C or SIGTERM; its thread (a daemon) is left behind, its result unwanted. What is running may end early
    then: `current_stop()`, called inside `fn`, is an event set at that moment (a fetch in flight gives up on it:
    locations/http.py). `stop`: that event, given by a caller that consumes the results on a thread of its own and
    may have to stop them from another (batching.answered_here).
    """
    if ahead < 1:
        raise ValueError("ahead must be at least 1")
    items = iter(items)
    waiting: deque[Future[Out]] = deque()
    stop = stop if stop is not None else threading.Event()
    todo: queue.SimpleQueue = queue.SimpleQueue()
    threads: list[threading.Thread] = []

    def work() -> None:
        _worker.stop = stop
        while (job := todo.get()) is not _STOP:
            future, item = job
            if not future.set_running_or_notify_cancel():
                continue  # cancelled before it started
            try:
                future.set_result(fn(item))
            except BaseException as exc:  # noqa: BLE001 - raised where its result would have been
                future.set_exception(exc)

    def submit(item: In) -> Future[Out]:
        future: Future[Out] = Future()
        todo.put((future, item))
        if len(threads) < workers:
            thread = threading.Thread(target=work, name=f"{name}_{len(threads)}", daemon=True)
            thread.start()
            threads.append(thread)
        return future

    try:
        while True:
            for item in itertools.islice(items, ahead - len(waiting)):
                waiting.append(submit(item))
            if not waiting:
                return
            yield waiting.popleft().result()
    finally:
        stop.set()
        for future in waiting:
            future.cancel()
        for _ in threads:
            todo.put(_STOP)
        deadline = time.monotonic() + STOP_GRACE
        for thread in threads:
            while thread.is_alive() and (left := deadline - time.monotonic()) > 0:
                thread.join(min(left, 0.1))  # short waits: a second Ctrl-C still gets through


_worker = threading.local()


def current_stop() -> threading.Event | None:
    """On a worker of `ordered_map`: the event set once its results are no longer wanted (the caller stopped: an
    exception, Ctrl-C, SIGTERM), so long work in flight can give up instead of holding the caller up. None
    elsewhere."""
    return getattr(_worker, "stop", None)


class FinishBehind(Generic[In, Out]):
    """`fn(item)` for each item handed over with `put`, in order, on one thread behind the caller's; `then(result)`
    for each result, in order, back on the caller's thread.

    At most `depth` items are in flight (handed over and `fn` not yet returned): `put` waits for room, so the caller
    runs at most `depth` items ahead. `depth` 0 runs `fn` and `then` inside `put`, on the caller's thread (no thread).

    Used as a context manager. On leaving it, whatever was handed over is still done and its `then` called (after
    an exception or a KeyboardInterrupt too: what is done is kept), then the thread ends. An exception raised by
    `fn` ends the thread's work (later items are dropped, never done) and is raised on the caller's thread: by the
    next `put`, or on leaving the block, unless the block itself raised.
    """

    def __init__(self, fn: Callable[[In], Out], then: Callable[[Out], object], depth: int, name: str = "kosmos"):
        if depth < 0:
            raise ValueError("depth must be 0 or more")
        self._fn, self._then, self.depth = fn, then, depth
        self._room = threading.BoundedSemaphore(max(depth, 1))
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._raised = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True) if depth else None

    def __enter__(self) -> FinishBehind[In, Out]:
        if self._thread is not None:
            self._thread.start()
        return self

    def put(self, item: In) -> None:
        """Hand `item` over; first `then` for the results done so far. Raises what `fn` raised, if it did."""
        if self._thread is None:
            self._then(self._fn(item))
            return
        self._collect()
        self._room.acquire()  # interruptible (Ctrl-C) while it waits
        if self._error is not None:
            self._room.release()
            self._raise()
        self._todo.put(item)

    def __exit__(self, kind, exc, tb) -> None:
        if self._thread is None:
            return
        self._todo.put(_STOP)
        try:
            while self._thread.is_alive():
                self._thread.join(0.1)  # short waits: a second Ctrl-C still gets through
        except BaseException:
            self._error = self._error or _Abandoned()  # the wait was cut short: the thread stops after its item
            raise
        self._collect()
        if kind is None and not isinstance(self._error, _Abandoned):
            self._raise()

    def _collect(self) -> None:
        while True:
            try:
                result = self._done.get_nowait()
            except queue.Empty:
                return
            self._then(result)

    def _raise(self) -> None:
        if self._error is not None and not self._raised and not isinstance(self._error, _Abandoned):
            self._raised = True
            raise self._error

    def _work(self) -> None:
        while True:
            item = self._todo.get()
            if item is _STOP:
                return
            try:
                if self._error is None:
                    self._done.put(self._fn(item))
            except BaseException as exc:  # noqa: BLE001 - raised again on the caller's thread
                self._error = exc
            finally:
                self._room.release()


class _Abandoned(Exception):
    """The caller stopped waiting (a second Ctrl-C): the thread does nothing more."""


_END = object()


def read_ahead(items: Iterable[In], depth: int, name: str = "kosmos-list") -> Generator[In, None, None]:
    """`items`, pulled on a thread of its own up to `depth` ahead of the caller, yielded in order.

    For inputs whose listing is itself slow (a WebDataset shard streamed over the network, a bucket listed page by
    page): the caller's thread (the model's) never waits on it while enough is queued. An exception from `items`
    comes out where the next item would have. When the caller stops early (closes the generator), the thread stops
    at its next item."""
    handed: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def offer(entry) -> bool:  # False: the caller has gone
        while not stop.is_set():
            try:
                handed.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pull() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((_END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            offer((_END, exc))

    thread = threading.Thread(target=pull, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, exc = handed.get()
            if item is _END:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        close = getattr(items, "close", None)
        if close is not None and not thread.is_alive():
            close()
