"""The fast decoder (model/decoder.py) gives generate's tokens, token for token, and its probabilities within 1e-5."""

import pytest
from PIL import Image

from kosmos_cli import find, load_engine, read_records
from kosmos_cli.errors import UsageError
from kosmos_cli.model.engine import Engine, GenerationOptions
from kosmos_cli.model.prompts import caption_prompt, find_prompt, refer_prompt
from tests.helpers import build_tiny, kosmos

PROMPTS = [
    caption_prompt(),
    refer_prompt((0.1, 0.1, 0.5, 0.5)),
    find_prompt("a red square"),
    find_prompt("the big blue circle on the left"),
    caption_prompt("detailed"),
    refer_prompt((0.5, 0.2, 0.9, 0.95)),
    find_prompt("a green triangle"),
    caption_prompt("A picture of"),
]


def engines(path, max_new_tokens):
    """(hf, fast) engines over one loaded model: the fast decoder runs the model's own modules, no copy."""
    from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

    model = Kosmos2ForConditionalGeneration.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    hf = Engine.from_model(model, processor, GenerationOptions(max_new_tokens, decoder="hf"))
    fast = Engine.from_model(model, processor, GenerationOptions(max_new_tokens, decoder="fast"))
    assert fast.fast and not hf.fast
    return hf, fast


def scenes(count):
    """Images the shapes model answers differently: a coloured square or circle on grey, at different places."""
    from PIL import ImageDraw

    out = []
    for i in range(count):
        image = Image.new("RGB", (224, 224), (128, 128, 128))
        x, y = 20 + 23 * i % 120, 30 + 41 * i % 110
        colour = [(220, 30, 30), (30, 200, 40), (30, 60, 220)][i % 3]
        draw = ImageDraw.Draw(image)
        (draw.ellipse if i % 2 else draw.rectangle)((x, y, x + 80, y + 80), fill=colour)
        out.append(image)
    return out


def batch_of(engine, images, prompts):
    return [engine.prepare(image, prompt, image_key=i) for i, (image, prompt) in enumerate(zip(images, prompts))]


def hf_answers(hf, batch, stop_at):
    """What generate gives each request, run in batches of one prompt length (as the hf path needs), each row cut
    after the token that finished it (generate pads finished rows to the batch's longest)."""
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(batch):
        groups.setdefault(len(p.input_ids), []).append(i)
    answers: list = [None] * len(batch)
    stops = {hf._eos} | ({hf.processor.tokenizer.convert_tokens_to_ids(stop_at)} if stop_at else set())
    for rows in groups.values():
        for i, g in zip(rows, hf.forward_scored([batch[i] for i in rows], stop_at)):
            given = g.probs.index(next(p for p in g.probs if p is not None))  # the prompt's own tokens
            end = next((k + 1 for k in range(given, len(g.ids)) if g.ids[k] in stops), len(g.ids))
            answers[i] = (g.ids[:end], g.probs[:end])
    return answers


def assert_same(hf, fast, batch, stop_at=None):
    """Fast on the whole (mixed-length, left-padded) batch == generate; returns how many tokens each row made."""
    expected = hf_answers(hf, batch, stop_at)
    got = fast.forward_scored(batch, stop_at)
    made = []
    for (ids, probs), g in zip(expected, got):
        assert g.ids == ids  # token for token
        assert len(g.probs) == len(probs)
        for a, b in zip(g.probs, probs):
            assert (a is None) == (b is None)
            if a is not None:
                assert abs(a - b) <= 1e-5
        made.append(sum(p is not None for p in probs))
    return made


@pytest.fixture(scope="module")
def shapes_engines(shapes_model):
    return engines(shapes_model, 40)


@pytest.mark.parametrize("size", [1, 8])
@pytest.mark.parametrize("stop_at", [None, "</object>"])
def test_fast_equals_generate_on_the_shapes_model(shapes_engines, size, stop_at):
    hf, fast = shapes_engines
    batch = batch_of(hf, scenes(size), PROMPTS[:size])
    if size > 1:
        assert len({len(p.input_ids) for p in batch}) >= 4  # mixed prompt lengths, left padded together
    made = assert_same(hf, fast, batch, stop_at)
    if size > 1:
        assert min(made) < max(made) < 40  # rows finish at different steps, the batch runs on for the others


def test_rows_that_hit_max_new_tokens_beside_rows_that_stop(shapes_model):
    hf, fast = engines(shapes_model, 9)
    batch = batch_of(hf, scenes(8), PROMPTS)
    made = assert_same(hf, fast, batch, "</object>")
    assert 9 in made and min(made) < 9


def test_the_same_image_with_several_prompts_shares_its_features(shapes_engines):
    hf, fast = shapes_engines
    image = scenes(1)[0]
    batch = [hf.prepare(image, p, image_key="one") for p in PROMPTS[1:4]]
    assert_same(hf, fast, batch, "</object>")


@pytest.mark.parametrize(("seed", "width", "layers"), [(0, 64, 2), (1, 32, 1), (2, 96, 3), (3, 64, 4)])
def test_fast_equals_generate_on_random_checkpoints(tmp_path, seed, width, layers):
    hf, fast = engines(build_tiny(str(tmp_path / "tiny"), seed=seed, width=width, layers=layers), 10)
    batch = batch_of(hf, scenes(8), PROMPTS)
    assert_same(hf, fast, batch)
    # random weights rarely say </s>: stop rows early at a token row 0 makes at its 4th step
    made_by_row0 = hf.forward_scored(batch[:1])[0]
    given = sum(p is None for p in made_by_row0.probs)
    stop = hf.processor.tokenizer.convert_ids_to_tokens(made_by_row0.ids[given + 3])
    made = assert_same(hf, fast, batch, stop)
    assert min(made) <= 4


def test_auto_decodes_fast_where_it_applies_and_with_generate_otherwise():
    assert GenerationOptions().fast and GenerationOptions(decoder="fast").fast
    assert not GenerationOptions(decoder="hf").fast
    assert not GenerationOptions(num_beams=3).fast and not GenerationOptions(no_repeat_ngram_size=3).fast
    assert GenerationOptions(no_repeat_ngram_size=0).fast  # 0 is off


@pytest.mark.parametrize("extra", [{"num_beams": 2}, {"no_repeat_ngram_size": 3}])
def test_fast_with_beams_or_ngram_blocking_is_a_usage_error(extra):
    with pytest.raises(UsageError, match="decodes greedily only"):
        GenerationOptions(decoder="fast", **extra)


def test_an_unknown_decoder_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown decoder 'quick'"):
        GenerationOptions(decoder="quick")


def test_the_cli_says_fast_with_beams_in_one_line(image_dir):
    result = kosmos("ground", str(image_dir), "--decoder", "fast", "--num-beams", "2")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--decoder fast decodes greedily only" in lines[0]


def test_a_checkpoint_whose_generation_config_changes_decoding_goes_to_generate(tiny_model):
    engine = load_engine(tiny_model, max_new_tokens=2)
    assert engine.fast
    engine.model.generation_config.repetition_penalty = 1.3
    try:
        assert not Engine.from_model(engine.model, engine.processor, GenerationOptions(2)).fast
        with pytest.raises(UsageError, match="repetition_penalty"):
            Engine.from_model(engine.model, engine.processor, GenerationOptions(2, decoder="fast"))
    finally:
        engine.model.generation_config.repetition_penalty = 1.0


def test_find_with_fast_fills_batches_of_mixed_lengths_and_writes_what_hf_writes(shapes_model, tmp_path):
    images = scenes(3)
    for i, image in enumerate(images):
        image.save(tmp_path / f"{i}.png")
    phrases = ["a red square", "the big blue circle on the left", "a green circle"]
    batches: dict[str, list[int]] = {}

    def rows(decoder):
        engine = load_engine(shapes_model, max_new_tokens=24, decoder=decoder)
        sizes = batches.setdefault(decoder, [])
        forward = engine.forward_scored_safe

        def counted(batch, stop_at=None):
            sizes.append(len(batch))
            return forward(batch, stop_at)

        engine.forward_scored_safe = counted  # type: ignore[method-assign]
        out = tmp_path / f"{decoder}.jsonl"
        find([str(tmp_path / f"{i}.png") for i in range(3)], str(out), phrases=phrases, engine=engine, batch_size=9)
        records = sorted(read_records(str(out)), key=lambda r: (r["path"], r["phrase"]))  # hf writes by length
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    fast, hf = rows("fast"), rows("hf")
    assert fast == hf and len(fast) == 9
    assert any(r["boxes"] for r in fast)  # the comparison means something
    assert batches["fast"] == [9] and len(batches["hf"]) > 1  # hf: one batch per prompt length
