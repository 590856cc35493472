"""The decoder's CUDA-graph logic, on the CPU with a fake capture standing in for torch.cuda's (tests/e2e/test_gpu.py
has the real one): running out of memory during a capture halves the batch and keeps the graphs on; any other
failure to capture goes on eagerly, with the same tokens; one side stream and pool per decoder, whatever the
batches; the largest bucket captured first."""

import logging

from kosmos_cli.model.decoder import Decoder
from tests.e2e.test_decoder import PROMPTS, assert_same, batch_of, engines, scenes


class FakeGraph:
    def __init__(self, step):
        self.step = step

    def replay(self):
        self.step()  # a graph replays the static step it recorded, on the same tensors


class FakeCapture:
    """capture.Capture's interface: warm runs the step, capture records it (or fails as `fail` says)."""

    made = 0

    def __init__(self, fail=None):
        FakeCapture.made += 1
        self.fail = fail  # (bucket, span) -> exception to raise while capturing it
        self.tries: list = []

    def warm(self, step):
        step()

    def capture(self, step):
        key = self.key()
        self.tries.append(key)
        if self.fail:
            problem = self.fail(key)
            if problem is not None:
                raise problem
        return FakeGraph(step)

    key = None  # set per decoder: which (bucket, span) is being captured


def graphed(fast, max_new_tokens, fail=None):
    """The fast engine's decoder as it runs on CUDA (graphs, buckets, a kept cache, checks every 8 steps), its
    captures through a FakeCapture."""
    decoder = Decoder(fast.model, max_new_tokens, fast._pad, graphs=True)
    assert decoder.buckets and decoder.keep and decoder.check_every == 8
    capture = FakeCapture(fail)
    real_step = decoder._step
    current: dict = {}

    def step(ws, span):
        current["key"] = (ws.rows, span)
        real_step(ws, span)

    decoder._step = step
    capture.key = lambda: current["key"]
    decoder.cuda_graphs.capture = capture
    fast.decoder = decoder
    return decoder, capture


def oom():
    import torch

    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (a fake)")


def test_graphs_give_the_eager_steps_tokens(shapes_model):
    hf, fast = engines(shapes_model, 24)
    decoder, capture = graphed(fast, 24)
    images = scenes(8)
    assert_same(hf, fast, batch_of(hf, images, PROMPTS), "</object>")
    assert decoder.captured >= 1 and decoder.graphs
    assert_same(hf, fast, batch_of(hf, images[:6], PROMPTS[2:]), "</object>")  # replays the graphs captured above
    assert len(capture.tries) == decoder.captured


def test_running_out_of_memory_during_a_capture_halves_the_batch_and_keeps_graphs(shapes_model):
    hf, fast = engines(shapes_model, 24)
    decoder, capture = graphed(fast, 24, fail=lambda key: oom() if key[0] == 8 else None)
    made = FakeCapture.made
    images = scenes(8)
    batch = batch_of(hf, images, PROMPTS)
    got = fast.forward_scored_safe(batch, "</object>")
    assert fast.fits == 4  # halved, as any out-of-memory error does
    assert decoder.graphs and decoder.captured >= 1  # not taken for "graphs unavailable"
    assert all(rows <= 4 for rows, _ in decoder.cuda_graphs.order)
    assert FakeCapture.made == made  # the same side stream and pool after the reset
    expected = fast.forward_scored(batch[:4], "</object>") + fast.forward_scored(batch[4:], "</object>")
    assert [g.ids for g in got] == [g.ids for g in expected]


def test_an_out_of_memory_error_that_ending_the_capture_hid_is_one_still(shapes_model):
    hf, fast = engines(shapes_model, 12)

    def broken(key):
        try:
            raise oom()
        except Exception:
            try:
                raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
            except RuntimeError as ending:
                return ending  # what torch.cuda.graph's exit raises, the out-of-memory error as its context

    decoder, _ = graphed(fast, 12, fail=lambda key: broken(key) if key[0] == 4 else None)
    fast.forward_scored_safe(batch_of(hf, scenes(4), PROMPTS[:4]))
    assert fast.fits == 2 and decoder.graphs


def test_any_other_capture_failure_goes_on_eagerly_with_the_same_tokens(shapes_model, caplog):
    hf, fast = engines(shapes_model, 24)
    refused = RuntimeError("operation not permitted when stream is capturing")
    decoder, capture = graphed(fast, 24, fail=lambda key: refused)
    images = scenes(8)
    with caplog.at_level(logging.WARNING, logger="kosmos_cli"):
        assert_same(hf, fast, batch_of(hf, images, PROMPTS), "</object>")
        assert_same(hf, fast, batch_of(hf, images[:3], PROMPTS[:3]), "</object>")
    assert not decoder.graphs and decoder.captured == 0 and len(capture.tries) == 1
    warned = [r for r in caplog.records if "CUDA graph capture failed" in r.getMessage()]
    assert len(warned) == 1
    assert fast.fits is None  # no batch was halved


def test_the_largest_bucket_is_captured_first(shapes_model):
    hf, fast = engines(shapes_model, 40)
    decoder, capture = graphed(fast, 40)
    decoder.check_every = 2
    images = scenes(8)
    made = assert_same(hf, fast, batch_of(hf, images, PROMPTS), "</object>")
    assert len(set(made)) >= 3 and decoder.shrunk >= 1
    buckets = [rows for rows, _ in decoder.cuda_graphs.order]
    assert buckets[0] == 8 and buckets == sorted(buckets, reverse=True) and len(set(buckets)) >= 2


def test_no_capture_is_made_without_graphs(shapes_model):
    hf, fast = engines(shapes_model, 8)
    decoder = Decoder(fast.model, 8, fast._pad, graphs=False, buckets=True, keep=True)
    fast.decoder = decoder
    assert_same(hf, fast, batch_of(hf, scenes(4), PROMPTS[:4]))
    assert decoder.cuda_graphs.capture is None and decoder.cuda_graphs.order == []
