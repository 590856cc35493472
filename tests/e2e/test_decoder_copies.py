"""The fast decoder's exchanges between the host and the device, counted on the CPU (each is a copy, and a copy to the
host a wait for the device, on CUDA): a batch's prompt inputs go over in one copy, each look at the done flags brings
one vector back, and the tokens and probabilities come back in one copy, whatever the batch's size and lengths."""

import sys

import torch
from torch.overrides import TorchFunctionMode

from kosmos_cli.model.decoder import Decoder
from tests.e2e.test_decoder import PROMPTS, assert_same, batch_of, engines, scenes


class Exchanges(TorchFunctionMode):
    """Counts the calls made by kosmos_cli's own code that move data between the host and a CUDA device."""

    def __init__(self):
        super().__init__()
        self.to_host, self.to_device = [], []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        where = sys._getframe(1).f_code
        if "kosmos_cli" in where.co_filename:
            if name in ("tolist", "item", "cpu", "nonzero"):
                self.to_host.append(where.co_name)
            elif name in ("tensor", "to") and (
                "device" in kwargs or any(isinstance(a, (str, torch.device)) for a in args[1:])
            ):
                self.to_device.append(where.co_name)
            elif name == "__getitem__" and any(
                isinstance(i, list) for i in (args[1] if isinstance(args[1], tuple) else (args[1],))
            ):
                self.to_device.append(where.co_name)
        return func(*args, **kwargs)


def test_a_batch_costs_one_copy_over_one_back_per_look_and_one_for_the_answers(shapes_model):
    hf, fast = engines(shapes_model, 40)
    decoder = Decoder(fast.model, 40, fast._pad, graphs=False, buckets=True, check_every=8, keep=True, shrink=False)
    fast.decoder = decoder
    batch = batch_of(hf, scenes(6), PROMPTS[:6])  # mixed lengths, padded to a bucket of 8
    embeds = fast._image_embeds(fast.collate(batch))
    stops = [fast._eos]
    with Exchanges() as seen:
        out = decoder(embeds, [p.input_ids for p in batch], [p.image_mask for p in batch], stops)
    looks = seen.to_host.count("_greedy")
    assert 1 <= looks <= 40 // 8 + 1  # a look every 8 steps, until every row is done
    assert seen.to_device == ["prompt_inputs"]  # ids, image masks, lengths and stop ids: one copy
    assert sorted(seen.to_host) == sorted(["_greedy"] * looks + ["read"])  # and the answers back in one
    assert len(out.tokens) == 6


def test_moving_rows_to_a_smaller_bucket_costs_one_copy_each_way(shapes_model):
    hf, fast = engines(shapes_model, 40)
    decoder = Decoder(fast.model, 40, fast._pad, graphs=False, buckets=True, check_every=2, keep=True)
    fast.decoder = decoder
    batch = batch_of(hf, scenes(8), PROMPTS)
    with Exchanges() as seen:
        assert_same(hf, fast, batch, "</object>")
    assert decoder.shrunk >= 1
    assert seen.to_device.count("_shrink") == decoder.shrunk  # the rows picked
    assert seen.to_host.count("read") <= 1 + decoder.shrunk  # the finished rows' answers, then the rest at the end
