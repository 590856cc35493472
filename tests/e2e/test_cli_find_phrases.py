"""`kosmos find -p PHRASE`: phrases that cannot be mistaken for inputs; an image file given as a phrase is refused."""

import pytest

from tests.helpers import kosmos, make_images, one_error_line, rows_of


@pytest.fixture
def images(tmp_path):
    return make_images(str(tmp_path / "photos"), sizes=((64, 48), (48, 64)))


def test_phrases_with_p(tiny_model, images):
    result = kosmos("find", images[0], "-p", "a red car", "--phrase", "a dog", model=tiny_model)
    assert result.exit_code == 0, result.output
    assert [r["phrase"] for r in rows_of(result)] == ["a red car", "a dog"]


def test_positional_phrases_still_work_and_mix_with_p(tiny_model, images):
    result = kosmos("find", images[0], "a red car", "-p", "a dog", model=tiny_model)
    assert result.exit_code == 0, result.output
    assert sorted(r["phrase"] for r in rows_of(result)) == ["a dog", "a red car"]


def test_a_second_image_is_not_taken_as_a_phrase(images):
    # --model names no folder: the refusal comes before the model would load
    result = kosmos("find", images[0], images[1], "a dog", "--model", "./no-such-model")
    one_error_line(result, 2, f"{images[1]} is an image file, not a phrase")
    assert "-p/--phrase" in result.stderr


def test_a_phrase_that_only_looks_like_a_file_name_is_kept(tiny_model, images):
    result = kosmos("find", images[0], "-p", "sign.png", model=tiny_model)  # not a file here: a phrase
    assert result.exit_code == 0, result.output
    assert [r["phrase"] for r in rows_of(result)] == ["sign.png"]
