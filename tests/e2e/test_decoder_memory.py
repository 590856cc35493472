"""What the engine and its decoder hold is let go: an engine dropped is freed (its model, KV cache and graphs with
it), the old cache storage is released before a larger one is made, and a failed batch's tensors before its halves
are tried."""

import gc
import weakref

import pytest

from kosmos_cli.model import decoder as decoder_module
from kosmos_cli.model.decoder import Decoder
from kosmos_cli.model.engine import Engine, GenerationOptions, ModelOptions
from tests.e2e.test_decoder import PROMPTS, assert_same, batch_of, engines, scenes


@pytest.mark.parametrize("decoder", ["fast", "hf"])
def test_an_engine_dropped_is_freed(tiny_model, decoder):
    engine = Engine(ModelOptions(model=tiny_model), GenerationOptions(6, decoder=decoder)).load()
    engine.forward(batch_of(engine, scenes(2), [PROMPTS[0]] * 2))
    assert engine._prompts  # prompts are kept on the engine...
    engine_ref, model_ref = weakref.ref(engine), weakref.ref(engine.model)
    del engine
    gc.collect()
    assert engine_ref() is None and model_ref() is None  # ...and go with it: nothing at class level keeps it alive


def test_the_old_storage_is_released_before_a_larger_one_is_made(shapes_model, monkeypatch):
    hf, fast = engines(shapes_model, 8)
    fast.decoder = Decoder(fast.model, 8, fast._pad, graphs=False, buckets=True, keep=True)
    images = scenes(8)
    assert_same(hf, fast, batch_of(hf, images[:2], PROMPTS[:2]))
    old = weakref.ref(fast.decoder._storage)
    alive_when_made = []

    class Watched(decoder_module.Storage):
        def __init__(self, *args, **kwargs):
            alive_when_made.append(old() is not None)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(decoder_module, "Storage", Watched)
    assert_same(hf, fast, batch_of(hf, images, PROMPTS))  # 8 rows: a larger storage
    assert alive_when_made == [False]
    assert fast.decoder._storage.rows == 8


def test_a_failed_batchs_tensors_are_released_before_it_is_retried(shapes_model, monkeypatch):
    import torch

    _, fast = engines(shapes_model, 6)
    real, free = fast.forward_scored, fast._free
    left: list = []  # a weak reference to a tensor the failed call held when it failed
    alive: list = []  # whether it was still alive when the cache was freed, and when the halves were tried

    def failing_once(batch, stop_at=None):
        alive.extend(ref() is not None for ref in left)
        if len(batch) == 4:
            held = torch.zeros(1024)  # the failed batch's activations
            left.append(weakref.ref(held))
            raise torch.OutOfMemoryError("CUDA out of memory (a fake)")
        return real(batch, stop_at)

    def freeing():
        alive.extend(ref() is not None for ref in left)
        free()

    monkeypatch.setattr(fast, "forward_scored", failing_once)
    monkeypatch.setattr(fast, "_free", freeing)  # torch.cuda.empty_cache can only give back what nothing holds
    out = fast.forward_scored_safe(batch_of(fast, scenes(4), PROMPTS[:4]))
    assert len(out) == 4 and fast.fits == 2
    assert len(alive) == 3 and not any(alive)  # at the free, and at each half
