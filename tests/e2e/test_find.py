"""find: phrases in, boxes out. Parsing as a table; batching and manifests on the tiny checkpoint."""

import dataclasses
import json
import random
import re

import pytest
import shapes
from PIL import Image

from kosmos_cli import UsageError, find, read_records
from kosmos_cli.inputs.sources import Item
from kosmos_cli.model.prompts import find_prompt
from kosmos_cli.tasks import Settings
from kosmos_cli.tasks.find import Find as FindJob
from kosmos_cli.tasks.find import check_phrase
from kosmos_cli.tasks.markup import patch_to_box, to_pixels
from kosmos_cli.tasks.scores import Generation


def _finished(text, phrase="a red car", size=(320, 200)):
    job = FindJob([phrase])
    (unit,) = job.units(Item("x.png"), Settings("m"))
    return job.record(dataclasses.replace(unit, size=size, generated=Generation(text)))


P = "<grounding><phrase> a red car</phrase>"


@pytest.mark.parametrize(
    "text, patches",
    [
        (P + "<object><patch_index_0000><patch_index_0033></object></s>", [(0, 33)]),
        (
            P + "<object><patch_index_0100><patch_index_0200></delimiter_of_multi_objects/><patch_index_0300>"
            "<patch_index_0400></object> on a road.</s>",
            [(100, 200), (300, 400)],
        ),
        (P + "<object><patch_index_0200><patch_index_0100></object>", [(200, 100)]),  # corners reversed: put in order
        (P + " is parked.</s>", []),  # not grounded
        (P + " near<phrase> a dog</phrase><object><patch_index_0001><patch_index_0002></object>", []),  # another phrase
        (P + " and<object><patch_index_0001><patch_index_0002></object>", []),  # an object not after the phrase
        (
            P + "<object><patch_index_0000><patch_index_0033></object></s><object><patch_index_0001><patch_index_0002>"
            "</object>",
            [(0, 33)],
        ),  # after the end: ignored
        ("", []),
    ],
)
def test_finish_reads_the_boxes_of_the_prompt_phrase(text, patches):
    record = _finished(text)
    boxes = [list(patch_to_box(a, b)) for a, b in patches]
    assert record.boxes == boxes
    assert record.boxes_px == [to_pixels(b, 320, 200) for b in boxes]
    assert record.phrase == "a red car" and record.prompt == P


@pytest.mark.parametrize(
    "phrase, clean",
    [
        ("a red car", "a red car"),
        ("  a   red\tcar ", "a red car"),
        ("a <phrase>dog</phrase>", "a phrase dog /phrase"),
    ],
)
def test_phrases_are_cleaned_of_markup(phrase, clean):
    assert check_phrase(phrase) == clean
    assert find_prompt(phrase).text == f"<grounding><phrase> {clean}</phrase>"


@pytest.mark.parametrize("phrase", ["", "   ", "<>", None, 3])
def test_empty_phrases_are_refused(phrase):
    with pytest.raises(ValueError, match="a phrase must be some text"):
        check_phrase(phrase)


class RawFindJob(FindJob):
    """find, keeping the generated text too: random weights never ground, but their text shows any difference."""

    def record(self, unit):
        record = super().record(unit)
        return dataclasses.replace(record, extra={**record.extra, "raw": unit.generated.text})


def test_batched_equals_one_at_a_time_with_prompts_of_different_lengths(tiny_model, tmp_path):
    from kosmos_cli import load_engine
    from kosmos_cli.run.runner import RunOptions, run

    engine = load_engine(tiny_model, max_new_tokens=8)
    for i, size in enumerate([(96, 64), (64, 96)]):
        Image.new("RGB", size, (200 * i, 120, 200 - 150 * i)).save(tmp_path / f"{i}.png")
    phrases = ["a dog", "a red circle", "the big blue square and a green circle"]
    lengths = {len(engine.prepare(Image.new("RGB", (8, 8)), find_prompt(p)).input_ids) for p in phrases}
    assert len(lengths) == 3  # the prompts really differ in token length

    def records(batch_size):
        out = tmp_path / f"b{batch_size}.jsonl"
        run(RawFindJob(phrases), [str(tmp_path)], engine, RunOptions(out=str(out), batch_size=batch_size))
        rows = sorted(read_records(str(out)), key=lambda r: (r["path"], r["phrase"]))
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    batched, single = records(6), records(1)
    assert len(batched) == 6 and batched == single
    assert len({r["raw"] for r in batched}) > 1  # the texts differ, so the comparison means something


def test_the_hf_decoder_refuses_a_batch_of_mixed_lengths(tiny_model):
    from kosmos_cli import load_engine

    engine = load_engine(tiny_model, max_new_tokens=4, decoder="hf")
    image = Image.new("RGB", (32, 32))
    batch = [engine.prepare(image, find_prompt(p), image_key=0) for p in ("a dog", "the big blue square")]
    with pytest.raises(ValueError, match="one token length"):
        engine.forward(batch)


def test_one_record_per_image_and_phrase_with_empty_lists_when_not_found(tiny_engine, tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (120, 90)).save(path)
    out = tmp_path / "found.parquet"
    summary = find([str(path)], str(out), phrases=["a red car", "a dog"], engine=tiny_engine)
    assert (summary.done, summary.failed) == (2, 0)
    rows = list(read_records(str(out)))
    assert [r["phrase"] for r in rows] == ["a red car", "a dog"]
    for row in rows:  # random weights never ground: empty lists, not errors
        assert row["status"] == "ok" and row["boxes"] == [] and row["boxes_px"] == []
        assert (row["width"], row["height"]) == (120, 90)
        assert "caption" not in row and "box_px" not in row
    again = find([str(path)], str(out), phrases=["a red car", "a dog", "a cat"], engine=tiny_engine)
    assert (again.done, again.skipped) == (1, 2)


def test_manifest_rows_name_the_phrases(tiny_engine, tmp_path):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (64, 48)).save(tmp_path / name)
    manifest = tmp_path / "queries.jsonl"
    manifest.write_text(
        "".join(
            json.dumps(row) + "\n"
            for row in [
                {"path": "a.png", "phrase": "a red car", "id": 1},
                {"path": "a.png", "phrase": "a dog", "id": 2},
                {"path": "a.png", "phrase": "a dog", "id": 2},  # the same row twice: once
                {"path": "b.png", "phrase": "  ", "id": 3},
                {"path": "b.png", "id": 4},
                {"path": "missing.png", "phrase": "a dog", "id": 5},
                {"path": "b.png", "phrase": "a cat", "id": 6},
            ]
        )
    )
    out = tmp_path / "found.jsonl"
    summary = find([str(manifest)], str(out), engine=tiny_engine)
    rows = {r["id"]: r for r in read_records(str(out))}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6] and (summary.done, summary.failed) == (3, 3)
    assert rows[1]["phrase"] == "a red car" and rows[2]["phrase"] == "a dog" and rows[6]["status"] == "ok"
    assert "bad phrase in manifest row" in rows[3]["error"] and "bad phrase" in rows[4]["error"]
    assert rows[5]["error"] == "file not found"
    assert all("input_phrase" not in r for r in rows.values())  # the phrase column became the record's phrase


def test_phrases_on_the_command_line_go_with_every_manifest_row(tiny_engine, tmp_path):
    Image.new("RGB", (64, 48)).save(tmp_path / "a.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,phrase\na.png,ignored\n")
    summary = find([str(manifest)], "-", phrases=["a dog"], engine=tiny_engine)
    assert summary.done == 1


def test_no_phrase_is_a_usage_error(tiny_engine, tmp_path):
    Image.new("RGB", (10, 10)).save(tmp_path / "a.png")
    with pytest.raises(UsageError, match="needs phrases"):
        find([str(tmp_path / "a.png")], engine=tiny_engine)
    with pytest.raises(UsageError, match="phrase 2 .* cannot be used"):
        find([str(tmp_path / "a.png")], phrases=["a dog", " "], engine=tiny_engine)


def test_generation_stops_at_the_jobs_stop_token(tiny_engine):
    assert FindJob.stop_at == "</object>"
    prompt = find_prompt("a dog")
    batch = [tiny_engine.prepare(Image.new("RGB", (32, 32), c), prompt, image_key=c) for c in ("red", "blue")]
    full = tiny_engine.forward(batch)
    first_tag = re.search(r"<[^>]+>", full[0][len(prompt.text) :]).group(0)  # random weights: some patch token
    stopped = tiny_engine.forward(batch, stop_at=first_tag)
    assert stopped[0].startswith(prompt.text + first_tag)
    assert stopped[0].replace("<pad>", "") == prompt.text + first_tag
    assert len(stopped[0].replace("<pad>", "")) < len(full[0])


# -- on the toy checkpoint trained on shapes (tests/fixtures/kosmos2-shapes): boxes must be right -------------
def _red_scenes(folder, count=12, seed=4242):
    """Scenes (never seen in training) with a red shape; returns [(path, red Shape)]."""
    rng, out = random.Random(seed), []
    while len(out) < count:
        width, height = shapes.CLI_SIZES[len(out) % len(shapes.CLI_SIZES)]
        img, objs = shapes.make_scene(rng, width, height)
        red = [o for o in objs if o.color == "red"]
        if red:
            path = folder / f"scene_{len(out):02d}.png"
            img.save(path)
            out.append((str(path), red[0]))
    return out


def test_find_boxes_the_red_shape_on_the_toy_checkpoint(shapes_engine, tmp_path):
    scenes = _red_scenes(tmp_path)
    manifest = tmp_path / "queries.jsonl"
    manifest.write_text("".join(json.dumps({"path": p, "phrase": red.phrase}) + "\n" for p, red in scenes))
    out = tmp_path / "found.jsonl"
    find([str(manifest)], str(out), engine=shapes_engine)
    rows = {r["path"]: r for r in read_records(str(out))}
    ious = [shapes.iou(rows[p]["boxes_px"][0], red.box) if rows[p]["boxes_px"] else 0.0 for p, red in scenes]
    assert sum(i >= 0.5 for i in ious) >= 0.8 * len(scenes), ious
