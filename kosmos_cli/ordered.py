"""An ordered, bounded thread pool: work runs ahead on threads, results come back in the order of the input.

Loading images for the model (pipeline.py) and drawing them (drawing/background.py) both want this: the slow part
on several threads, what follows in order, and memory bounded however long the input.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def ordered_map(
    fn: Callable[[In], Out], items: Iterable[In], workers: int, ahead: int, name: str = "kosmos"
) -> Generator[Out, None, None]:
    """`fn(item)` for each item on `workers` threads, yielded in the order of `items`.

    Items are pulled lazily (on the caller's thread) so that at most `ahead` of them are in flight: submitted and
    not yet yielded. The next ones are pulled when the caller asks for the next result, so the one it holds is
    done with. An exception from `fn` comes out where its result would have. On an exception, or when the
    caller closes the iterator early (`contextlib.closing`), what has not started is cancelled and what is
    running is waited for: no thread outlives the iteration.
    """
    if ahead < 1:
        raise ValueError("ahead must be at least 1")
    items = iter(items)
    waiting: deque[Future[Out]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        try:
            while True:
                for item in itertools.islice(items, ahead - len(waiting)):
                    waiting.append(pool.submit(fn, item))
                if not waiting:
                    return
                yield waiting.popleft().result()
        finally:
            for future in waiting:
                future.cancel()
