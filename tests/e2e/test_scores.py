"""A score for every box: location tokens found in the generated ids, their probabilities kept while decoding."""

import json
import random

import pytest
import shapes
from PIL import Image

from kosmos_cli import find, ground, read_records
from kosmos_cli.drawing import Shape, shapes_of
from kosmos_cli.tasks.markup import parse, patch_to_box
from kosmos_cli.tasks.scores import Generation, Markup, box_score, check_min_score, entity_scores, objects, passes
from tests.helpers import kosmos, one_error_line

# a toy vocabulary: patch index i is token 100 + i
MARKUP = Markup(patch={100 + i: i for i in range(1024)}, object_start=5, object_end=6, delimiter=7, eos=2)
OPEN, C, D, EOS = 5, 6, 7, 2


def gen(ids, probs=None):
    probs = tuple(probs) if probs is not None else tuple(0.5 for _ in ids)
    return Generation("", tuple(ids), probs, MARKUP)


def P(i):
    return 100 + i


def test_box_score_is_the_geometric_mean_of_the_two_location_tokens():
    assert box_score(0.81, 1.0) == 0.9
    assert box_score(0.25, 0.64) == 0.4
    assert box_score(1.0, 1.0) == 1.0 and box_score(0.0, 0.3) == 0.0
    assert box_score(None, 0.5) is None and box_score(0.5, None) is None


def test_objects_are_found_in_order_with_the_probabilities_of_their_own_tokens():
    ids = [9, OPEN, P(1), P(40), C, 9, OPEN, P(3), P(70), D, P(5), P(99), C, 9]
    probs = [None, 0.9, 0.64, 1.0, 0.9, 0.5, 0.9, 0.36, 0.25, 0.9, 0.16, 1.0, 0.9, 0.5]
    assert objects(gen(ids, probs)) == [[(1, 40, 0.8)], [(3, 70, 0.3), (5, 99, 0.4)]]


@pytest.mark.parametrize(
    "ids",
    [
        [OPEN, P(1), C],  # one patch token: no box
        [OPEN, P(1), P(2), D, C],  # a delimiter with nothing after it
        [OPEN, P(1), P(2), 9, C],  # a word inside the object
        [OPEN, P(1), P(2)],  # never closed
        [9, P(1), P(2), C],  # never opened
        [EOS, OPEN, P(1), P(2), C],  # after the end of the sequence
    ],
)
def test_what_the_parser_does_not_read_is_no_object(ids):
    assert objects(gen(ids)) == []


def test_a_prompt_token_has_no_probability_so_its_box_no_score():
    assert objects(gen([OPEN, P(1), P(40), C], [None, None, 0.5, 0.5])) == [[(1, 40, None)]]


def test_entity_scores_pair_entities_with_objects_and_check_the_boxes():
    ids = [OPEN, P(1), P(40), C, OPEN, P(3), P(70), C]
    g = gen(ids, [1.0, 0.49, 1.0, 1.0, 1.0, 0.09, 1.0, 1.0])
    boxes = [[patch_to_box(1, 40)], [patch_to_box(3, 70)]]
    assert entity_scores(boxes, g) == [[0.7], [0.3]]
    assert entity_scores([[patch_to_box(1, 40)], [patch_to_box(4, 70)]], g) == [[0.7], [None]]  # not its box
    assert entity_scores(boxes, Generation("", tuple(ids), None, MARKUP)) == [None, None]  # beam search
    assert entity_scores(boxes, None) == [None, None]


@pytest.mark.parametrize("value", [-0.1, 1.5, "x", True])
def test_min_score_must_be_a_number_from_0_to_1(value):
    with pytest.raises(Exception, match="a score is a number from 0 to 1"):
        check_min_score(value)


def test_a_threshold_asks_for_evidence():
    assert passes(None, None) and passes(0.1, None) and passes(0.5, 0.5)
    assert not passes(0.49, 0.5) and not passes(None, 0.0)


# -- on the model ----------------------------------------------------------------------------------------------------
def scenes(folder, n=4, seed=11):
    rng = random.Random(seed)
    folder.mkdir(exist_ok=True)
    for i in range(n):
        img, _ = shapes.make_scene(rng, *shapes.CLI_SIZES[i % 4])
        img.save(folder / f"s{i}.png")
    return folder


def test_kept_probabilities_are_the_softmax_maximum_at_each_step(shapes_engine, monkeypatch):
    import torch

    from kosmos_cli.model.engine import Engine, GenerationOptions, _after_image
    from kosmos_cli.model.prompts import caption_prompt

    # generate's path (the fast decoder's probabilities are checked against these in test_decoder.py)
    shapes_engine = Engine.from_model(
        shapes_engine.model, shapes_engine.processor, GenerationOptions(48, decoder="hf"), "shapes"
    )

    rng = random.Random(3)
    batch = [
        shapes_engine.prepare(shapes.make_scene(rng, 224, 224)[0], caption_prompt(), image_key=i) for i in range(3)
    ]
    generate, seen = shapes_engine.model.generate, {}

    def with_scores(**kwargs):
        out = generate(**kwargs, output_scores=True, return_dict_in_generate=True)
        seen["scores"] = out.scores
        return out.sequences

    monkeypatch.setattr(shapes_engine.model, "generate", with_scores)
    answers = shapes_engine.forward_scored(batch)
    expected = torch.stack([s.float().softmax(-1).max(-1).values for s in seen["scores"]], dim=1)
    given = len(batch[0].input_ids) - _after_image(batch[0].image_mask)
    for row, answer in zip(expected, answers):
        assert answer.probs[:given] == (None,) * given
        assert len(answer.probs) == len(answer.ids) == given + row.shape[0]
        assert max(abs(a - b) for a, b in zip(answer.probs[given:], row.tolist())) < 1e-5
        caption, entities = parse(answer.text)
        assert entities and all(s is not None for e in entity_scores([e.boxes for e in entities], answer) for s in e)


def test_forward_keeps_its_contract(shapes_engine):
    from kosmos_cli.model.prompts import caption_prompt

    batch = [shapes_engine.prepare(Image.new("RGB", (64, 64), (200, 40, 40)), caption_prompt(), image_key=0)]
    assert shapes_engine.forward(batch) == [a.text for a in shapes_engine.forward_scored(batch)]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_every_ground_box_has_a_score_in_both_formats(shapes_engine, tmp_path, fmt):
    folder = scenes(tmp_path / "s")
    out = tmp_path / f"g.{fmt}"
    ground([str(folder)], str(out), engine=shapes_engine, batch_size=2)
    rows = list(read_records(str(out)))
    assert sum(len(e["boxes"]) for r in rows for e in r["entities"]) >= 4
    for row in rows:
        for e in row["entities"]:
            assert len(e["scores"]) == len(e["boxes"]) == len(e["boxes_px"])
            assert all(isinstance(s, float) and 0.0 < s <= 1.0 for s in e["scores"])
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        entity = pq.read_schema(out).field("entities").type.value_type
        assert entity.field("scores").type == pa.list_(pa.float64())


def test_batched_scores_are_those_of_one_at_a_time(shapes_engine, tmp_path):
    folder = scenes(tmp_path / "s")

    def scores(batch_size):
        out = tmp_path / f"b{batch_size}.jsonl"
        ground([str(folder)], str(out), engine=shapes_engine, batch_size=batch_size)
        return [[e["scores"] for e in r["entities"]] for r in read_records(str(out))]

    batched, single = scores(4), scores(1)
    assert len(batched) == len(single) == 4
    for a, b in zip(batched, single):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x == pytest.approx(y, abs=2e-3)


def test_find_records_have_a_score_per_box(shapes_engine, tmp_path):
    folder = scenes(tmp_path / "s", n=2)
    out = tmp_path / "f.parquet"
    find([str(folder)], str(out), phrases=["a red square", "a blue circle"], engine=shapes_engine)
    rows = list(read_records(str(out)))
    assert len(rows) == 4
    for row in rows:
        assert isinstance(row["scores"], list) and len(row["scores"]) == len(row["boxes"])
        assert all(0.0 < s <= 1.0 for s in row["scores"])
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert pq.read_schema(out).field("scores").type == pa.list_(pa.float64())


def test_beam_search_keeps_no_scores(shapes_model, tmp_path):
    folder = scenes(tmp_path / "s", n=2)
    out = tmp_path / "g.jsonl"
    ground([str(folder)], str(out), model=shapes_model, max_new_tokens=32, num_beams=2)
    entities = [e for r in read_records(str(out)) for e in r["entities"]]
    assert entities and all(e["scores"] is None for e in entities)


# -- drawing ---------------------------------------------------------------------------------------------------------
def ground_row(scores):
    return {
        "path": "x.png",
        "task": "ground",
        "status": "ok",
        "width": 100,
        "height": 100,
        "caption": "a dog",
        "entities": [
            {
                "phrase": "a dog",
                "start": 0,
                "end": 5,
                "boxes": [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]],
                "boxes_px": [[0, 0, 50, 50], [50, 50, 100, 100]],
                "scores": scores,
            }
        ],
    }


def test_labels_carry_the_score_and_min_score_drops_weaker_boxes():
    [shape] = shapes_of(ground_row([0.934, 0.2]))
    assert shape.labels() == ["a dog 0.93", "a dog 0.20"]
    [shape] = shapes_of(ground_row([0.934, 0.2]), min_score=0.5)
    assert shape.boxes == [[0, 0, 50, 50]] and shape.labels() == ["a dog 0.93"]
    [shape] = shapes_of(ground_row(None))  # written before scores: the phrase alone
    assert shape.labels() == ["a dog", "a dog"]
    assert shapes_of(ground_row(None), min_score=0.1)[0].boxes == []
    assert Shape("", [[0, 0, 1, 1]], (0, 0, 0), [0.5]).labels() == ["0.50"]


def test_kosmos_draw_min_score(tmp_path):
    Image.new("RGB", (100, 100), (120, 120, 120)).save(tmp_path / "x.png")
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps({**ground_row([0.9, 0.2]), "path": str(tmp_path / "x.png")}) + "\n")
    drawn = {}
    for threshold in ("0", "0.5", "0.95"):
        result = kosmos("draw", str(results), "-o", str(tmp_path / threshold), "--min-score", threshold)
        assert result.exit_code == 0, result.output
        drawn[threshold] = Image.open(tmp_path / threshold / "x.png").convert("RGB")
    plain = Image.new("RGB", (100, 100), (120, 120, 120))
    assert drawn["0.95"].tobytes() == plain.tobytes()  # nothing scored that high
    assert drawn["0"].tobytes() != drawn["0.5"].tobytes() != plain.tobytes()
    assert drawn["0.5"].getpixel((75, 98)) == (120, 120, 120)  # the weak box's edge is gone
    bad = kosmos("draw", str(results), "-o", str(tmp_path / "bad"), "--min-score", "1.5")
    one_error_line(bad, 2, "--min-score 1.5: a score is a number from 0 to 1")


def test_the_benchmarks_auroc_counts_ties_half():
    import importlib.util
    import os

    from tests.helpers import ROOT

    spec = importlib.util.spec_from_file_location("bench_scores", os.path.join(ROOT, "benchmarks", "bench_scores.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.auroc([(0.9, True), (0.8, True), (0.1, False)]) == 1.0
    assert bench.auroc([(0.1, True), (0.9, False)]) == 0.0
    assert bench.auroc([(0.5, True), (0.5, False)]) == 0.5
    assert bench.auroc([(0.9, True), (0.5, False), (0.5, True), (0.1, False)]) == 0.875
