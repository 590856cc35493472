"""The static decode step (what CUDA graphs capture) gives generate's tokens on random checkpoints of several shapes,
with batches padded to a bucket, the cache kept between batches and the done check made only every few steps."""

import pytest

from kosmos_cli.model.decoder import SPAN, Decoder, bucket
from tests.e2e.test_decoder import PROMPTS, assert_same, batch_of, engines, scenes
from tests.helpers import build_tiny


@pytest.mark.parametrize(
    ("seed", "width", "layers", "heads", "latents"),
    [(4, 48, 2, 3, 16), (5, 64, 3, 4, 32), (6, 32, 1, 1, 8), (7, 128, 2, 8, 64)],
)
def test_static_step_equals_generate_on_checkpoints_of_other_shapes(tmp_path, seed, width, layers, heads, latents):
    path = build_tiny(
        str(tmp_path / "tiny"), seed=seed, width=width, layers=layers, heads=heads, latent_query_num=latents
    )
    hf, fast = engines(path, 10)
    assert fast.model.config.latent_query_num == latents
    batch = batch_of(hf, scenes(8), PROMPTS)
    assert sum(batch[0].image_mask) == latents  # prompts carry as many image tokens as the model has latent queries
    assert_same(hf, fast, batch)


def test_padded_rows_a_kept_cache_and_a_late_done_check_change_nothing(shapes_model):
    hf, fast = engines(shapes_model, 40)
    decoder = Decoder(fast.model, 40, fast._pad, graphs=False, buckets=True, check_every=8, keep=True, shrink=False)
    fast.decoder = decoder
    images = scenes(8)
    # 5 rows padded to 8; then 3 rows (bucket 4, a view of the same cache, stale columns in it); then 8 rows again
    for rows, prompts in ((5, PROMPTS[:5]), (3, PROMPTS[5:8]), (8, PROMPTS[::-1])):
        made = assert_same(hf, fast, batch_of(hf, images[:rows], prompts), "</object>")
        assert min(made) < max(made)  # rows finish at different steps
    assert decoder._storage is not None and decoder._storage.rows == 8  # one allocation, the largest bucket
    assert set(decoder._workspaces) == {8, 4}


@pytest.mark.parametrize("buckets", [False, True])
def test_rows_still_going_go_on_in_a_smaller_bucket_with_the_same_tokens(shapes_model, buckets):
    hf, fast = engines(shapes_model, 40)
    decoder = Decoder(fast.model, 40, fast._pad, graphs=False, buckets=buckets, keep=buckets)
    fast.decoder = decoder
    images = scenes(8)
    made = assert_same(hf, fast, batch_of(hf, images, PROMPTS), "</object>")
    assert len(set(made)) >= 3  # rows finish at several different steps...
    assert decoder.shrunk >= 1  # ...and the ones still going went on alone, token for token what generate gives
    if buckets:
        assert {8, 1} <= set(decoder._workspaces) and decoder._storage.rows == 8  # views of one allocation
    made = assert_same(hf, fast, batch_of(hf, images[:5], PROMPTS[3:]), "</object>")  # again, after shrinking
    assert len(set(made)) >= 2


def test_a_longer_batch_replaces_the_kept_cache(shapes_model):
    hf, fast = engines(shapes_model, 12)
    fast.decoder = Decoder(fast.model, 12, fast._pad, graphs=False, buckets=True, keep=True)
    images = scenes(4)
    assert_same(hf, fast, batch_of(hf, images[:2], PROMPTS[:2]))
    first = fast.decoder._storage.length
    long_prompt = [PROMPTS[0], PROMPTS[2]]
    from kosmos_cli.model.prompts import find_prompt

    long_prompt[1] = find_prompt("a " + " ".join(["big"] * (SPAN + 5)) + " blue circle")
    assert_same(hf, fast, batch_of(hf, images[2:4], long_prompt))
    assert fast.decoder._storage.length > first


@pytest.mark.parametrize(("rows", "expected"), [(1, 1), (2, 2), (3, 4), (5, 8), (64, 64), (65, 128), (200, 256)])
def test_buckets_are_powers_of_two(rows, expected):
    assert bucket(rows) == expected


def test_the_prompt_runs_over_the_real_rows_not_the_padded_bucket(shapes_model, monkeypatch):
    hf, fast = engines(shapes_model, 16)
    decoder = Decoder(fast.model, 16, fast._pad, graphs=False, buckets=True, keep=True)
    fast.decoder = decoder
    rows_run: list = []
    real_run = decoder._run

    def counting(hidden, mask, ws):
        rows_run.append((hidden.shape[0], hidden.shape[1]))
        return real_run(hidden, mask, ws)

    monkeypatch.setattr(decoder, "_run", counting)
    images = scenes(8)
    made = assert_same(hf, fast, batch_of(hf, images[:5], PROMPTS[:5]), "</object>")  # 5 rows in a bucket of 8
    assert min(made) < max(made)
    prefill, *steps = rows_run
    assert prefill[0] == 5 and prefill[1] > 1  # the prompt: 5 rows, all its columns
    assert steps and steps[0] == (8, 1)  # then the static step over the bucket
    assert_same(hf, fast, batch_of(hf, images[:3], PROMPTS[5:8]))  # stale filler rows from before change nothing
