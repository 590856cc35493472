"""A score for every box: how sure the model was of the two <patch_index> tokens that make it. Pure functions, no torch.

While decoding greedily, the engine keeps, for each generated token, the probability the model gave it (the
softmax maximum of the processed scores at that step: the token greedy picks). A box is two location tokens, its
upper-left and lower-right cells; its score is the geometric mean of their two probabilities, in [0, 1].

markup.parse reads boxes from the decoded text; this module finds the same boxes in the generated token ids:
every well-formed `<object><patch><patch>[</delimiter_of_multi_objects/><patch><patch>...]</object>` in order, as
the parser's pattern matches them, up to the end-of-sequence token. `entity_scores` pairs them with the parser's
entities and checks that each box's patch indices give the same box before trusting a score.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import UsageError
from .markup import GRID, patch_to_box

OBJECT_START, OBJECT_END = "<object>", "</object>"
DELIMITER = "</delimiter_of_multi_objects/>"
PHRASE_END = "</phrase>"
_PATCH = re.compile(r"<patch_index_(\d+)>$")


@dataclass(frozen=True)
class Markup:
    """The token ids of the grounding markup in one tokenizer's vocabulary."""

    patch: Mapping[int, int]  # token id -> patch index (0 .. GRID*GRID - 1)
    object_start: int
    object_end: int
    delimiter: int
    eos: int | None

    @classmethod
    def of(cls, tokenizer, grid: int = GRID) -> Markup:
        ids = tokenizer.convert_tokens_to_ids
        patch = {ids(f"<patch_index_{i:04d}>"): i for i in range(grid * grid)}
        return cls(patch, ids(OBJECT_START), ids(OBJECT_END), ids(DELIMITER), tokenizer.eos_token_id)


class Generation:
    """One request's answer: the decoded text (special tokens kept), and the token ids it was decoded from with the
    model's probability for each token it generated (None for the prompt's own tokens). `probs` is None when the
    decoding kept none (beam search): its boxes have no score.

    Given `decode` (ids -> text) instead of `text`, the text is decoded when first read: on the thread that finishes
    the record, not the one that drives the model."""

    __slots__ = ("_text", "ids", "probs", "markup", "_decode")

    def __init__(
        self,
        text: str | None,
        ids: tuple[int, ...] = (),
        probs: tuple[float | None, ...] | None = None,
        markup: Markup | None = None,
        decode: Callable[[tuple[int, ...]], str] | None = None,
    ):
        if text is None and decode is None:
            raise ValueError("a Generation needs its text or a way to decode its ids")
        self._text, self.ids, self.probs, self.markup, self._decode = text, ids, probs, markup, decode

    @property
    def text(self) -> str:
        if self._text is None:
            assert self._decode is not None
            self._text, self._decode = self._decode(self.ids), None
        return self._text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Generation):
            return NotImplemented
        return (self.text, self.ids, self.probs, self.markup) == (other.text, other.ids, other.probs, other.markup)

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> tuple:
        return self.text, self.ids, self.probs, self.markup  # sent elsewhere (a Ray actor's answer): decoded first

    def __setstate__(self, state: tuple) -> None:
        (self._text, self.ids, self.probs, self.markup), self._decode = state, None

    def __repr__(self) -> str:
        return f"Generation(ids={len(self.ids)} tokens, decoded={self._text is not None})"


def box_score(p1: float | None, p2: float | None) -> float | None:
    """The geometric mean of a box's two location-token probabilities, rounded to 4 places; None without both."""
    if p1 is None or p2 is None:
        return None
    return round(math.sqrt(max(0.0, p1) * max(0.0, p2)), 4)


def objects(generation: Generation) -> list[list[tuple[int, int, float | None]]]:
    """Every well-formed <object> of the generation, in order: per box (upper-left patch, lower-right patch, score)."""
    markup = generation.markup
    if markup is None:
        return []
    ids, probs = generation.ids, generation.probs
    found: list[list[tuple[int, int, float | None]]] = []
    i, n = 0, len(ids)
    if markup.eos is not None and markup.eos in ids:
        n = ids.index(markup.eos)
    while i < n:
        if ids[i] != markup.object_start:
            i += 1
            continue
        boxes, j = [], i + 1
        while j + 1 < n and ids[j] in markup.patch and ids[j + 1] in markup.patch:
            p1 = probs[j] if probs is not None else None
            p2 = probs[j + 1] if probs is not None else None
            boxes.append((markup.patch[ids[j]], markup.patch[ids[j + 1]], box_score(p1, p2)))
            j += 2
            if j < n and ids[j] == markup.delimiter:
                j += 1
                continue
            break
        if boxes and j < n and ids[j] == markup.object_end and ids[j - 1] != markup.delimiter:
            found.append(boxes)
            i = j + 1
        else:  # not an object the parser reads: look on from the next token
            i += 1
    return found


def entity_scores(
    boxes_of_entities: Sequence[Sequence[Sequence[float]]], generation: Generation | None, grid: int = GRID
) -> list[list[float | None] | None]:
    """Per parsed entity (its normalised boxes, in the order markup.parse gives them), a score per box.

    None for an entity when the generation carries no probabilities; a None score for a box whose tokens do not
    give the parser's box (which should not happen, but a score must never belong to another box).
    """
    if generation is None or generation.probs is None:
        return [None for _ in boxes_of_entities]
    found = objects(generation)
    out: list[list[float | None] | None] = []
    for k, boxes in enumerate(boxes_of_entities):
        tokens = found[k] if k < len(found) and len(found[k]) == len(boxes) else None
        if tokens is None:
            out.append([None] * len(boxes))
            continue
        out.append(
            [score if _same(patch_to_box(ul, lr, grid), box) else None for (ul, lr, score), box in zip(tokens, boxes)]
        )
    return out


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(abs(x - y) < 1e-9 for x, y in zip(a, b))


def check_min_score(min_score: float | None) -> float | None:
    """A --min-score, checked: a number from 0 to 1 (UsageError naming the parameter otherwise)."""
    if min_score is None:
        return None
    if not isinstance(min_score, (int, float)) or isinstance(min_score, bool) or not 0.0 <= min_score <= 1.0:
        raise UsageError(f"{{param}} {min_score!r}: a score is a number from 0 to 1, e.g. 0.3", param="min_score")
    return float(min_score)


def passes(score: float | None, min_score: float | None) -> bool:
    """Does a box with this score pass `min_score`? Without a threshold every box does; with one, a box without a
    score (a record written before scores, or by beam search) does not: a threshold asks for evidence."""
    return min_score is None or (score is not None and score >= min_score)
