"""The library takes one path (str or os.PathLike) as the inputs, not only a list of them."""

import pathlib

import pytest

from kosmos_cli import find, ground, read_records, refer
from tests.helpers import make_images


@pytest.mark.parametrize("as_", [str, pathlib.Path])
def test_ground_takes_one_folder(tiny_engine, tmp_path, as_):
    photos = tmp_path / "photos"
    make_images(str(photos))
    out = tmp_path / "r.jsonl"
    summary = ground(as_(photos), str(out), engine=tiny_engine)
    assert (summary.done, summary.failed) == (4, 0)
    assert {r["path"] for r in read_records(str(out))} == {str(p) for p in photos.iterdir()}


def test_a_list_of_paths_is_walked_too(tiny_engine, tmp_path):
    photos = tmp_path / "photos"
    make_images(str(photos))
    assert ground([photos], str(tmp_path / "r.jsonl"), engine=tiny_engine).done == 4


def test_refer_and_find_take_one_path(tiny_engine, tmp_path):
    image = make_images(str(tmp_path / "photos"), sizes=((64, 48),))[0]
    assert refer(pathlib.Path(image), str(tmp_path / "r.jsonl"), boxes=["0,0,10,10"], engine=tiny_engine).done == 1
    assert find(image, str(tmp_path / "f.jsonl"), phrases=["a dog"], engine=tiny_engine).done == 1
