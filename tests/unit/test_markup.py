"""tasks/markup.py against transformers' own post_process_generation, and its fixes, as tables."""

import random

import pytest
from transformers.models.kosmos2.processing_kosmos2 import (
    clean_text_and_extract_entities_with_bboxes,
    coordinate_to_patch_index,
    patch_index_to_coordinate,
)

from kosmos_cli.tasks.markup import box_to_patches, parse, patch_to_box, snap, to_normalized, to_pixels


def P(i):
    return f"<patch_index_{i:04d}>"


OBJ = lambda a, b: f"<object>{P(a)}{P(b)}</object>"  # noqa: E731

SAME_AS_TRANSFORMERS = [
    "<grounding> An image of<phrase> a snowman</phrase>"
    + OBJ(44, 863)
    + " warming himself by<phrase> a fire</phrase>"
    + OBJ(5, 911)
    + ".",
    "<grounding> An image of<phrase> a red circle</phrase>"
    + OBJ(12, 345)
    + " and<phrase> a blue square</phrase>"
    + OBJ(400, 731)
    + ".",
    # several boxes for one phrase
    "<grounding> An image of<phrase> two dogs</phrase><object>"
    + P(0)
    + P(100)
    + "</delimiter_of_multi_objects/>"
    + P(500)
    + P(1023)
    + "</object> playing.",
    # a phrase without a box: dropped, as transformers does; its words stay in the caption
    "<grounding> An image of<phrase> a cat</phrase> on<phrase> a mat</phrase>" + OBJ(40, 900) + ".",
    # output cut off by max_new_tokens in the middle of an object
    "<grounding> An image of<phrase> a cat</phrase>" + OBJ(1, 66) + " and<phrase> a dog</phrase><object>" + P(3),
    # whitespace around the caption and phrases
    "<grounding>   Lots of   space<phrase>  a  boat </phrase>" + OBJ(33, 99) + "  ",
    # no entities at all
    "<grounding> An image of a plain grey wall.",
    # the same corner twice, and corners on one row / one column (whole cells)
    "<grounding> It is<phrase> a dot</phrase>"
    + OBJ(77, 77)
    + ", a<phrase> line</phrase>"
    + OBJ(64, 90)
    + " and<phrase> a pole</phrase>"
    + OBJ(5, 997)
    + ".",
    "no grounding tag at all<phrase> but a phrase</phrase>" + OBJ(2, 3),
]


def _ours(text):
    caption, entities = parse(text)
    return caption, [(e.phrase, (e.start, e.end), list(e.boxes)) for e in entities]


def _theirs(text):
    """transformers' answer with each box's corners put in order (the one thing we change on purpose)."""
    caption, entities = clean_text_and_extract_entities_with_bboxes(text)
    order = lambda b: (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))  # noqa: E731
    return caption, [(name, span, [order(b) for b in boxes]) for name, span, boxes in entities]


@pytest.mark.parametrize("text", SAME_AS_TRANSFORMERS)
def test_same_caption_spans_and_boxes_as_transformers(text):
    assert _ours(text) == _theirs(text)


def test_random_generations_match_transformers():
    rng = random.Random(7)
    words = ["a", "red", "car", "the", "dog", "on", "grass", ",", "."]
    for _ in range(300):
        parts = ["<grounding>"]
        for _ in range(rng.randint(0, 4)):
            parts.append(" " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 3))))
            phrase = " " + " ".join(rng.choice(words[:6]) for _ in range(rng.randint(1, 3)))
            parts.append(f"<phrase>{phrase}</phrase>")
            a, b = sorted(rng.sample(range(1024), 2))
            parts.append(OBJ(a, b))
        parts.append(rng.choice([".", "", " ok."]))
        text = "".join(parts)
        assert _ours(text) == _theirs(text), text


def test_spans_point_at_the_phrase_in_the_caption():
    caption, entities = parse(SAME_AS_TRANSFORMERS[0])
    assert [caption[e.start : e.end] for e in entities] == ["a snowman", "a fire"]


def test_reversed_corners_are_put_in_order():
    text = "<grounding> An image of<phrase> a kite</phrase>" + OBJ(900, 40) + "."
    theirs = clean_text_and_extract_entities_with_bboxes(text)[1][0][2][0]
    assert theirs[1] > theirs[3]  # transformers hands back y1 > y2 here
    (entity,) = parse(text)[1]
    ((x1, y1, x2, y2),) = entity.boxes
    assert x1 <= x2 and y1 <= y2
    assert sorted(theirs) == sorted((x1, y1, x2, y2))


def test_object_without_phrase_keeps_boxes_with_empty_phrase():
    text = "<grounding> An image of" + OBJ(10, 300) + " something."
    theirs = clean_text_and_extract_entities_with_bboxes(text)
    assert theirs[1][0][0].startswith("<patch_index_")  # an invented name
    caption, entities = parse(text)
    assert caption == theirs[0]
    assert [(e.phrase, e.start, e.end) for e in entities] == [("", 11, 11)]
    assert list(entities[0].boxes) == theirs[1][0][2]


def test_text_after_end_of_sequence_is_ignored():
    text = "<grounding> An image of<phrase> a cat</phrase>" + OBJ(1, 66) + ".</s><pad><pad> junk"
    assert parse(text)[0] == "An image of a cat."


def test_only_text_after_the_image_counts():
    text = "<image>. the, to</image><grounding> An image of<phrase> a cat</phrase>" + OBJ(1, 66) + "."
    assert parse(text) == parse(text.split("</image>")[1])


@pytest.mark.parametrize(
    "prompt, text, caption, spans",
    [
        (
            "<grounding> An image of",
            "<grounding> An image of<phrase> a cat</phrase>" + OBJ(1, 66) + " on a mat.",
            "a cat on a mat.",
            [(0, 5)],
        ),
        (
            "<grounding> Describe this image in detail:",
            "<grounding> Describe this image in detail: The<phrase> dog</phrase>" + OBJ(1, 66) + " runs.",
            "The dog runs.",
            [(4, 7)],
        ),
        # the model did not repeat the prompt's words: nothing is taken off
        (
            "<grounding> An image of",
            "<grounding> A photo of<phrase> a cat</phrase>" + OBJ(1, 66) + ".",
            "A photo of a cat.",
            [(11, 16)],
        ),
        # an entity inside the prompt (find's prompt): nothing is taken off
        ("<grounding><phrase> a cat</phrase>", "<grounding><phrase> a cat</phrase>" + OBJ(1, 66), "a cat", [(0, 5)]),
    ],
)
def test_prompt_words_are_dropped_and_spans_shifted(prompt, text, caption, spans):
    got_caption, entities = parse(text, strip_prompt=prompt)
    assert got_caption == caption
    assert [(e.start, e.end) for e in entities] == spans
    for e, (s, t) in zip(entities, spans):
        assert got_caption[s:t] == e.phrase


@pytest.mark.parametrize("ul, lr", [(0, 0), (0, 1023), (44, 863), (5, 911), (64, 90), (5, 997), (1023, 1023)])
def test_patch_to_box_matches_transformers(ul, lr):
    assert patch_to_box(ul, lr) == patch_index_to_coordinate(ul, lr, 32)


@pytest.mark.parametrize(
    "box", [(0.0, 0.0, 1.0, 1.0), (0.1, 0.2, 0.5, 0.6), (0.33, 0.01, 0.34, 0.99), (0.5, 0.5, 0.53125, 0.53125)]
)
def test_box_to_patches_matches_processor(box):
    assert box_to_patches(box) == coordinate_to_patch_index(box, 32)


def test_snap_is_close_to_the_box_and_on_the_grid():
    box = (0.1, 0.2, 0.5, 0.6)
    snapped = snap(box)
    assert all(abs(a - b) <= 1 / 32 for a, b in zip(box, snapped))
    assert all(abs(v * 64 - round(v * 64)) < 1e-9 for v in snapped)


@pytest.mark.parametrize(
    "box, w, h, px",
    [
        ((0.0, 0.0, 1.0, 1.0), 320, 200, [0, 0, 320, 200]),
        ((0.5, 0.25, 0.75, 1.0), 200, 320, [100, 80, 150, 320]),
        ((0.75, 1.0, 0.5, 0.25), 200, 320, [100, 80, 150, 320]),  # reversed -> ordered
        ((-0.1, 0.0, 1.2, 0.5), 100, 100, [0, 0, 100, 50]),  # clipped to the image
    ],
)
def test_to_pixels(box, w, h, px):
    assert to_pixels(box, w, h) == px


def test_to_normalized_inverts_to_pixels():
    assert to_normalized([100, 80, 150, 320], 200, 320) == (0.5, 0.25, 0.75, 1.0)
