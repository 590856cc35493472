"""Finishing and writing behind the model (ordered.FinishBehind, pipeline.FINISH_AHEAD): the next batch goes through the
model while the last is turned into records and written, with every guarantee of writing in line kept.

No sleeps: threads wait on events, so the tests say the same on a loaded machine.
"""

import json
import os
import threading

import pytest

from kosmos_cli import ground
from kosmos_cli.output.reader import read_records
from kosmos_cli.output.store import Output
from kosmos_cli.run import batching, pipeline
from kosmos_cli.run.threads import FinishBehind
from kosmos_cli.tasks import Ground
from tests.helpers import make_images

WAIT = 60  # seconds before a test that would hang fails instead (a loaded 2-core machine takes 10 for 3 batches)


# -- FinishBehind ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_results_come_back_in_order_on_the_callers_thread(depth):
    caller, seen = threading.get_ident(), []
    ran_on = set()

    def work(i):
        ran_on.add(threading.get_ident())
        return i * 10

    def then(result):
        assert threading.get_ident() == caller
        seen.append(result)

    with FinishBehind(work, then, depth) as behind:
        for i in range(7):
            behind.put(i)
    assert seen == [i * 10 for i in range(7)]
    assert (caller in ran_on) == (depth == 0)  # depth 0: in line, no thread


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_the_caller_runs_ahead_by_depth_items_and_no_more(depth):
    handed = 0  # items whose put has returned
    room = threading.Condition()
    in_flight = []

    def work(i):
        with room:  # the caller can hand over up to item i + depth - 1 while this one is in flight: wait for that
            assert room.wait_for(lambda: handed >= min(i + depth, 8), WAIT), f"the caller did not run ahead of {i}"
            in_flight.append(handed - i)  # handed over and not done: i and those after it
        return i

    with FinishBehind(work, lambda _: None, depth) as behind:
        for i in range(8):
            behind.put(i)
            with room:
                handed += 1
                room.notify_all()
    assert max(in_flight) == depth


def test_an_exception_in_the_worker_is_raised_by_the_next_put_and_later_items_are_dropped():
    failed, ran, seen = threading.Event(), [], []

    def work(i):
        ran.append(i)
        if i == 1:
            failed.set()
            raise RuntimeError("item 1")
        return i

    with pytest.raises(RuntimeError, match="item 1"):
        with FinishBehind(work, seen.append, 1) as behind:
            behind.put(0)
            behind.put(1)
            assert failed.wait(WAIT)
            behind.put(2)
            pytest.fail("put after a failure must raise")
    assert ran == [0, 1] and seen == [0]


def test_an_exception_in_the_worker_after_the_last_put_is_raised_on_leaving():
    def work(i):
        if i == 2:
            raise OSError("disk full")
        return i

    seen = []
    with pytest.raises(OSError, match="disk full"):
        with FinishBehind(work, seen.append, 2) as behind:
            for i in range(3):
                behind.put(i)
    assert seen == [0, 1]
    assert not any(t.name == "kosmos" and t.is_alive() for t in threading.enumerate())


def test_an_interrupt_in_the_body_still_finishes_what_was_handed_over():
    gate, seen = threading.Event(), []

    def work(i):
        assert gate.wait(WAIT)
        return i

    with pytest.raises(KeyboardInterrupt):
        with FinishBehind(work, seen.append, 2) as behind:
            behind.put(0)
            behind.put(1)
            gate.set()
            raise KeyboardInterrupt
    assert seen == [0, 1]  # what was handed over is done and its `then` ran, then the interrupt goes on


def test_depth_must_not_be_negative():
    with pytest.raises(ValueError, match="depth"):
        FinishBehind(lambda i: i, lambda _: None, -1)


# -- the pipeline ---------------------------------------------------------------------------------------------
@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    make_images(str(folder), sizes=[(40 + 3 * i, 48 + i) for i in range(12)])
    return folder


def _rows(path):
    rows = []
    for row in read_records(str(path)):
        row.pop("seconds")  # the model's time per image: the only field that differs between two runs
        rows.append(row)
    return rows


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_records_are_the_same_and_in_the_same_order_with_writing_in_line_or_behind(
    tiny_engine, photos, tmp_path, monkeypatch, fmt
):
    runs = {}
    for ahead in (0, 2):
        monkeypatch.setattr(pipeline, "FINISH_AHEAD", ahead)
        out = tmp_path / f"ahead{ahead}.{fmt}"
        summary = ground([str(photos)], str(out), engine=tiny_engine, batch_size=2, workers=2)
        assert (summary.done, summary.failed) == (12, 0)
        runs[ahead] = _rows(out)
    assert [r["path"] for r in runs[2]] == [r["path"] for r in runs[0]]
    assert json.dumps(runs[2], sort_keys=True) == json.dumps(runs[0], sort_keys=True)


def test_the_model_runs_ahead_of_writing_by_finish_ahead_batches_and_no_more(
    tiny_engine, photos, tmp_path, monkeypatch
):
    ahead = pipeline.FINISH_AHEAD
    assert ahead >= 1
    forward, write = batching._forward, Output.write
    state = threading.Condition()
    counts = {"answered": 0, "written": 0}
    seen_ahead = []

    def counted_forward(*args, **kwargs):
        answered = forward(*args, **kwargs)
        with state:
            counts["answered"] += 1
            state.notify_all()
        return answered

    def slow_write(self, records):  # write k waits until the model has answered batch k + ahead (or the last one)
        with state:
            k = counts["written"] + 1
            assert state.wait_for(lambda: counts["answered"] >= min(k + ahead, 6), WAIT), "the model waited"
            seen_ahead.append(counts["answered"] - k)
        kept = write(self, records)
        with state:
            counts["written"] += 1
        return kept

    monkeypatch.setattr(batching, "_forward", counted_forward)
    monkeypatch.setattr(Output, "write", slow_write)
    summary = ground([str(photos)], str(tmp_path / "r.jsonl"), engine=tiny_engine, batch_size=2, workers=1)
    assert summary.done == 12 and counts == {"answered": 6, "written": 6}
    assert max(seen_ahead) == ahead  # batches answered beyond the one being written: never more than FINISH_AHEAD
    assert not any(t.name == "kosmos-write" and t.is_alive() for t in threading.enumerate())


def test_an_exception_while_finishing_is_raised_by_the_run_and_only_written_records_count(
    tiny_engine, photos, tmp_path, monkeypatch
):
    record = Ground.record
    finished = []

    def record_then_fail(self, unit):
        if len(finished) == 4:  # the first record of the third batch
            raise RuntimeError("a bug in finishing")
        made = record(self, unit)
        finished.append(made.path)
        return made

    monkeypatch.setattr(Ground, "record", record_then_fail)
    out = tmp_path / "r.jsonl"
    with pytest.raises(RuntimeError, match="a bug in finishing"):
        ground([str(photos)], str(out), engine=tiny_engine, batch_size=2, workers=1)
    assert [r["path"] for r in read_records(str(out))] == finished  # two whole batches, nothing of the third
    monkeypatch.setattr(Ground, "record", record)
    again = ground([str(photos)], str(out), engine=tiny_engine, batch_size=2, workers=1)
    assert (again.done, again.skipped) == (8, 4)
    assert sorted(r["path"] for r in read_records(str(out))) == sorted(str(p) for p in photos.iterdir())


def test_a_write_error_is_raised_as_itself(tiny_engine, photos, tmp_path, monkeypatch):
    from kosmos_cli.errors import OutputError

    write = Output.write
    writes = []

    def full_disk(self, records):
        if writes:
            raise OutputError("cannot write r.jsonl: No space left on device")
        writes.append(len(records))
        return write(self, records)

    monkeypatch.setattr(Output, "write", full_disk)
    out = tmp_path / "r.jsonl"
    with pytest.raises(OutputError, match="No space left"):
        ground([str(photos)], str(out), engine=tiny_engine, batch_size=2, workers=1)
    assert len(list(read_records(str(out)))) == 2


def test_ctrl_c_while_the_model_works_still_writes_every_batch_it_answered(tiny_engine, photos, tmp_path, monkeypatch):
    forward, write = batching._forward, Output.write
    answered, gate = [], threading.Event()

    def interrupted_forward(failed, bucket, task, engine, *collated):
        if len(answered) == 6:  # three batches of two
            gate.set()  # the writes waiting behind may go on now
            raise KeyboardInterrupt
        out = forward(failed, bucket, task, engine, *collated)
        answered.extend(unit.path for unit in out.units if unit.error is None)
        return out

    def held_write(self, records):  # nothing is written before the interrupt: all three batches are in flight
        assert gate.wait(WAIT)
        return write(self, records)

    monkeypatch.setattr(pipeline, "FINISH_AHEAD", 3)
    monkeypatch.setattr(batching, "_forward", interrupted_forward)
    monkeypatch.setattr(Output, "write", held_write)
    out = tmp_path / "r.jsonl"
    with pytest.raises(KeyboardInterrupt):
        ground([str(photos)], str(out), engine=tiny_engine, batch_size=2, workers=1)
    assert [r["path"] for r in read_records(str(out))] == answered and len(answered) == 6


@pytest.mark.parametrize("cpus, workers", [(1, 1), (2, 2), (12, 12), (16, 16), (64, 16)])
def test_default_workers_one_per_cpu_up_to_sixteen(monkeypatch, cpus, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert batching.default_workers() == workers


@pytest.mark.parametrize("decoder", ["fast", "hf"])
def test_tokens_become_text_on_the_writing_thread_not_the_models(tiny_model, photos, tmp_path, monkeypatch, decoder):
    """The thread that drives the model only generates: each answer's ids are decoded to text when its record is
    finished, behind it (issue 28: token-to-text decoding off the main thread)."""
    from kosmos_cli import load_engine
    from kosmos_cli.model.engine import Engine

    engine = load_engine(tiny_model, max_new_tokens=6, decoder=decoder)
    decode, where = Engine._decode, []

    def noted(self, ids):
        where.append(threading.current_thread().name)
        return decode(self, ids)

    monkeypatch.setattr(Engine, "_decode", noted)
    out = tmp_path / "r.jsonl"
    summary = ground([str(photos)], str(out), engine=engine, batch_size=2, workers=1)
    assert summary.done == len(where) > 0
    assert threading.main_thread().name not in where and all(name.startswith("kosmos-write") for name in where)
    expected = [r["caption"] for r in read_records(str(out))]
    monkeypatch.setattr(Engine, "_decode", decode)
    again = tmp_path / "again.jsonl"
    ground([str(photos)], str(again), engine=engine, batch_size=1, workers=1)
    assert [r["caption"] for r in read_records(str(again))] == expected  # the same text, batched or alone


def test_the_model_thread_takes_batches_collated_ahead_on_the_feeding_thread(
    tiny_engine, photos, tmp_path, monkeypatch
):
    """Issue 28: the listing, the resume check, bucketing and each batch's collation (uint8 pixels into one host
    tensor, pinned on CUDA) run on a feeding thread a batch ahead; the model's thread gets each batch collated."""
    from kosmos_cli.model.engine import Engine
    from kosmos_cli.model.pixels import Collated

    collate, forward, listed = Engine.collate, Engine.forward_scored_safe, pipeline.standing_units
    collated_on, given, listed_on, forwarded_on = [], [], [], []

    def noted_collate(self, batch):
        if not isinstance(batch, Collated):  # a batch collated already comes back as it is
            collated_on.append(threading.current_thread().name)
        return collate(self, batch)

    def noted_forward(self, batch, stop_at=None):
        forwarded_on.append(threading.current_thread().name)
        given.append(type(batch))
        return forward(self, batch, stop_at)

    def noted_listing(*args, **kwargs):
        for entry in listed(*args, **kwargs):
            listed_on.append(threading.current_thread().name)
            yield entry

    monkeypatch.setattr(Engine, "collate", noted_collate)
    monkeypatch.setattr(Engine, "forward_scored_safe", noted_forward)
    monkeypatch.setattr(pipeline, "standing_units", noted_listing)
    summary = ground([str(photos)], str(tmp_path / "r.jsonl"), engine=tiny_engine, batch_size=2, workers=1)
    assert summary.done == len(listed_on) > 2
    main = threading.main_thread().name
    assert forwarded_on == [main] * len(forwarded_on) and given == [Collated] * len(forwarded_on)
    assert set(collated_on) == {"kosmos-feed"} and set(listed_on) == {"kosmos-feed"}
    again = ground([str(photos)], str(tmp_path / "r.jsonl"), engine=tiny_engine, batch_size=2, workers=1)
    assert (again.done, again.skipped) == (0, summary.done)  # counted on the feeding thread, reported as before
