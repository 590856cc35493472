"""The library decides what the command line only relays: draw=, option checks, parameters named in errors."""

import os

import pytest

from kosmos_cli import UsageError, ground, refer
from tests.helpers import make_images


def test_model_options_with_an_engine_are_a_type_error_not_ignored(tiny_engine, tmp_path):
    photos = make_images(str(tmp_path / "photos"))
    for options in ({"model": "other"}, {"max_new_tokens": 3}, {"dtype": "bfloat16", "device": "cpu"}):
        with pytest.raises(TypeError, match="cannot be given with engine="):
            ground(photos, str(tmp_path / "r.jsonl"), engine=tiny_engine, **options)
    assert not (tmp_path / "r.jsonl").exists()


def test_library_errors_name_the_parameter_the_command_line_its_flag(tiny_engine, tmp_path):
    photos = make_images(str(tmp_path / "photos"))
    with pytest.raises(UsageError, match="^batch_size must be at least 1$"):
        ground(photos, str(tmp_path / "r.jsonl"), engine=tiny_engine, batch_size=0)
    with pytest.raises(UsageError, match="^boxes: "):
        refer(photos, str(tmp_path / "r.jsonl"), engine=tiny_engine, boxes=["10,20,5,30"])
    with pytest.raises(UsageError, match="^max_new_tokens must be at least 1$"):
        ground(photos, str(tmp_path / "r.jsonl"), model=str(tmp_path / "never-loaded"), max_new_tokens=0)


def test_ground_draws_beside_the_run_when_asked(tiny_engine, tmp_path):
    photos = make_images(str(tmp_path / "photos"))
    summary = ground(photos, str(tmp_path / "r.jsonl"), engine=tiny_engine, draw=str(tmp_path / "drawn"))
    assert summary.done == 4 and summary.drawing is not None and summary.drawing.drawn == 4
    assert sorted(n for n in os.listdir(tmp_path / "drawn") if not n.startswith(".")) == sorted(
        os.path.splitext(os.path.basename(p))[0] + (".jpg" if p.endswith(".jpg") else ".png") for p in photos
    )
