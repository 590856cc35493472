"""run/threads.py: results in the order of the input, at most `ahead` in flight, errors and early closes handled.

No sleeps: threads wait on events, so the tests say the same on a loaded machine.
"""

import contextlib
import threading
import time

import pytest

from kosmos_cli.run import threads as ordered
from kosmos_cli.run.threads import ordered_map

WAIT = 10  # seconds before a test that would hang fails instead


def test_results_come_in_input_order_when_later_items_finish_first():
    finished = []
    last_done = threading.Event()

    def work(i):
        if i == 0:  # the first item finishes only after the last one has
            assert last_done.wait(WAIT)
        finished.append(i)
        if i == 3:
            last_done.set()
        return i * 10

    assert list(ordered_map(work, range(4), workers=4, ahead=4)) == [0, 10, 20, 30]
    assert finished[-1] == 0


def test_items_run_on_several_threads_at_once():
    here = [threading.Event(), threading.Event()]

    def work(i):  # each waits for the other to have started: only two threads get both done
        here[i].set()
        return here[1 - i].wait(WAIT)

    assert list(ordered_map(work, [0, 1], workers=2, ahead=2)) == [True, True]


@pytest.mark.parametrize("ahead", [1, 3, 8])
def test_items_are_pulled_lazily_and_at_most_ahead_are_in_flight(ahead):
    pulled = []

    def items():
        for i in range(6):
            pulled.append(i)
            yield i

    results = ordered_map(lambda i: i, items(), workers=2, ahead=ahead)
    assert pulled == []  # nothing happens before the first result is asked for
    for got in results:  # in flight: pulled and not yet handed back, the one in hand included
        assert len(pulled) == min(got + ahead, 6)


def test_an_exception_comes_out_where_its_result_would_have():
    def work(i):
        if i == 2:
            raise ValueError("item 2")
        return i

    results = ordered_map(work, range(5), workers=2, ahead=3)
    assert [next(results), next(results)] == [0, 1]
    with pytest.raises(ValueError, match="item 2"):
        next(results)
    assert list(results) == []


def test_closing_early_cancels_what_has_not_started_and_waits_for_what_has():
    started, ran = threading.Event(), []
    gate = threading.Event()

    def work(i):
        ran.append(i)
        if i == 1:
            started.set()
            assert gate.wait(WAIT)
        return i

    with contextlib.closing(ordered_map(work, range(10), workers=1, ahead=4, name="closing")) as results:
        assert next(results) == 0
        assert started.wait(WAIT)  # item 1 holds the only thread; 2 and 3 wait behind it
        threading.Timer(0.3, gate.set).start()  # the busy one finishes while close waits for it
    assert ran == [0, 1]
    assert not any(t.name.startswith("closing") and t.is_alive() for t in threading.enumerate())


def test_closing_leaves_behind_work_that_never_returns_within_seconds():
    """A read that never returns (a FIFO, a hung mount) cannot hold up the caller's Ctrl-C or SIGTERM."""
    started, never = threading.Event(), threading.Event()

    def work(i):
        if i == 1:
            started.set()
            never.wait(30)  # until the test ends (before the fix, close waited this long)
        return i

    results = ordered_map(work, range(10), workers=2, ahead=4, name="stuck")
    try:
        assert next(results) == 0
        assert started.wait(WAIT)
        began = time.monotonic()
        results.close()
        assert time.monotonic() - began < ordered.STOP_GRACE + 1
        stuck = [t for t in threading.enumerate() if t.name.startswith("stuck") and t.is_alive()]
        assert len(stuck) == 1 and stuck[0].daemon  # left behind: it cannot keep the process from exiting
    finally:
        never.set()


def test_ahead_must_be_positive():
    with pytest.raises(ValueError, match="ahead"):
        next(ordered_map(lambda i: i, range(3), workers=1, ahead=0))


def test_read_ahead_yields_in_order_and_stays_bounded():
    from kosmos_cli.run.threads import read_ahead

    pulled = []

    def items():
        for i in range(50):
            pulled.append(i)
            yield i

    got = []
    for i in read_ahead(items(), 3):
        assert len(pulled) - len(got) <= 3 + 2  # the queue, the one being handed over, the one the caller holds
        got.append(i)
    assert got == list(range(50))


def test_read_ahead_raises_where_the_next_item_would_be_and_stops_when_closed():
    from kosmos_cli.errors import InputError
    from kosmos_cli.run.threads import read_ahead

    def broken():
        yield 1
        yield 2
        raise InputError("manifest m.csv line 3: unclosed quote")

    got = []
    with pytest.raises(InputError, match="line 3"):
        for i in read_ahead(broken(), 4):
            got.append(i)
    assert got == [1, 2]

    endless = read_ahead(iter(range(10**9)), 2, name="test-read-ahead")
    assert next(endless) == 0
    (puller,) = [t for t in threading.enumerate() if t.name == "test-read-ahead"]
    endless.close()
    puller.join(WAIT)
    assert not puller.is_alive()
