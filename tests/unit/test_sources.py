import io
import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kosmos_cli.errors import InputError, UsageError
from kosmos_cli.inputs.listing import Unlisted
from kosmos_cli.inputs.sources import Item, check_inputs, iter_items, shard


def touch(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "photos"
    for rel in [
        "b.JPG",
        "a.png",
        "sub/c.webp",
        "sub/deeper/d.TIFF",
        "e.gif",
        "f.bmp",
        "g.jpeg",
        "h.tif",
        ".hidden.jpg",
        ".cache/x.jpg",
        "notes.txt",
        "raw.cr2",
    ]:
        touch(str(root / rel))
    return root


def paths(items):
    return [i.path for i in items]


def test_folder_walk_is_recursive_sorted_case_insensitive_and_skips_hidden(tree):
    got = [os.path.relpath(p, tree) for p in paths(iter_items([str(tree)]))]
    assert got == ["a.png", "b.JPG", "e.gif", "f.bmp", "g.jpeg", "h.tif", "sub/c.webp", "sub/deeper/d.TIFF"]


def test_a_walk_leaves_out_folders_kosmos_drew_and_its_own_outputs(tree):
    """`kosmos ground photos --draw photos/annotated --out photos/r.parquet`: the next walk of photos/ finds the
    originals only. A drawn folder named itself is still walked."""
    for rel in [
        "annotated/.kosmos-drawn",
        "annotated/a.png",
        "annotated/sub/c.png",
        "r.parquet",
        "r.parquet.lock",
        "r.parquet.parts/part-0000-00000001.parquet",
        "r.jsonl",
        "r.jsonl.lock",
    ]:
        touch(str(tree / rel))
    got = [os.path.relpath(p, tree) for p in paths(iter_items([str(tree)]))]
    assert got == ["a.png", "b.JPG", "e.gif", "f.bmp", "g.jpeg", "h.tif", "sub/c.webp", "sub/deeper/d.TIFF"]
    drawn = tree / "annotated"
    assert paths(iter_items([str(drawn)])) == [str(drawn / "a.png"), str(drawn / "sub" / "c.png")]


def test_symlinked_folder_is_followed_but_a_loop_is_not_followed_forever(tree, tmp_path):
    other = tmp_path / "other"
    touch(str(other / "z.jpg"))
    os.symlink(other, tree / "link")
    os.symlink(tree, tree / "sub" / "loop")  # points back up
    got = paths(iter_items([str(tree)]))
    assert str(tree / "link" / "z.jpg") in got
    assert len(got) == len(set(got)) == 9


def test_a_folders_listing_says_which_images_are_links_and_their_keys_are_the_ones_looked_up(tree, tmp_path):
    """The resume key of a listed image skips its own lstat (the listing said whether it is a link): the same key."""
    from kosmos_cli.tasks import Ground

    touch(str(tmp_path / "elsewhere" / "real.jpg"))
    os.symlink(tmp_path / "elsewhere" / "real.jpg", tree / "linked.jpg")
    items = {os.path.basename(i.path): i for i in iter_items([str(tree)])}
    assert items["linked.jpg"].link is True and items["a.png"].link is False
    for item in items.values():
        assert Ground.key({"path": item.path}, link=item.link) == Ground.key({"path": item.path})
    assert Ground.key({"path": items["linked.jpg"].path}).startswith(str(tmp_path / "elsewhere" / "real.jpg"))
    assert Item(str(tree / "a.png")).link is None  # named directly: not known, looked up


def test_same_file_twice_is_yielded_once(tree):
    os.symlink(tree / "a.png", tree / "alias.png")
    got = paths(iter_items([str(tree / "a.png"), str(tree), str(tree / "alias.png")]))
    assert got.count(str(tree / "a.png")) == 1
    assert str(tree / "alias.png") not in got


def test_glob(tree):
    got = paths(iter_items([str(tree / "**" / "*.webp")]))
    assert got == [str(tree / "sub" / "c.webp")]


def test_txt_manifest_resolves_against_its_folder(tree, tmp_path):
    manifest = tmp_path / "lists" / "m.txt"
    touch(str(manifest), b"# a comment\n../photos/a.png\n\n" + str(tree / "b.JPG").encode() + b"\n")
    assert paths(iter_items([str(manifest)])) == [
        os.path.normpath(str(tmp_path / "photos" / "a.png")),
        str(tree / "b.JPG"),
    ]


def test_csv_manifest_carries_columns(tree):
    manifest = tree / "m.csv"
    manifest.write_text("path,label,width\na.png,cat,7\nsub/c.webp,dog,8\n")
    items = list(iter_items([str(manifest)]))
    assert items == [Item(str(tree / "a.png")), Item(str(tree / "sub" / "c.webp"))]
    assert items[0].extra == {"label": "cat", "width": "7"}


def test_jsonl_manifest_carries_keys_and_skips_bad_lines(tree, caplog):
    manifest = tree / "m.jsonl"
    manifest.write_text('{"path": "a.png", "id": 1}\nnot json\n{"nopath": 1}\n{"path": "b.JPG", "tags": ["x"]}\n')
    items = list(iter_items([str(manifest)]))
    assert paths(items) == [str(tree / "a.png"), str(tree / "b.JPG")]
    assert items[1].extra == {"tags": ["x"]}
    assert "line 2 is not valid JSON" in caplog.text and 'line 3 has no "path"' in caplog.text


def test_parquet_manifest(tree):
    pq.write_table(pa.table({"path": ["a.png", "f.bmp"], "score": [0.5, 0.25]}), tree / "m.parquet")
    items = list(iter_items([str(tree / "m.parquet")]))
    assert paths(items) == [str(tree / "a.png"), str(tree / "f.bmp")]
    assert items[1].extra == {"score": 0.25}


def test_manifest_without_path_column_is_an_input_error(tree):
    (tree / "m.csv").write_text("file,label\na.png,cat\n")
    with pytest.raises(InputError, match="no 'path' column"):
        list(iter_items([str(tree / "m.csv")]))


def test_stdin_paths_and_json_lines(tree):
    stdin = io.StringIO(f"{tree / 'a.png'}\n" + json.dumps({"path": str(tree / "f.bmp"), "k": "v"}) + "\n")
    items = list(iter_items(["-"], stdin=stdin))
    assert paths(items) == [str(tree / "a.png"), str(tree / "f.bmp")] and items[1].extra == {"k": "v"}


def test_missing_manifest_entry_is_still_yielded(tree):
    (tree / "m.txt").write_text("gone.jpg\n")
    assert paths(iter_items([str(tree / "m.txt")])) == [str(tree / "gone.jpg")]


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "no input given"),
        (["/definitely/not/here"], "input not found"),
        (["/definitely/not/*.jpg"], "no files match"),
        (["-", "-"], "once"),
    ],
)
def test_check_inputs_usage_errors(args, message):
    with pytest.raises(UsageError, match=message):
        check_inputs(args)


def test_shards_are_disjoint_and_complete():
    items = [Item(f"{i}.jpg") for i in range(11)]
    parts = [list(shard(items, r, 3)) for r in range(3)]
    flat = [i for p in parts for i in p]
    assert sorted(paths(flat)) == sorted(paths(items)) and len(flat) == len(items)
    assert paths(parts[1]) == ["1.jpg", "4.jpg", "7.jpg", "10.jpg"]


def test_rows_of_one_image_stay_on_one_rank():
    """refer/find manifests: an image's consecutive rows go to one rank; the same image later is a new item."""
    rows = [Item(p, extra={"phrase": f"p{i}"}) for i, p in enumerate("aabbbcda")]
    parts = [list(shard(rows, r, 2, by_image=True)) for r in range(2)]
    assert [paths(p) for p in parts] == [["a", "a", "c", "a"], ["b", "b", "b", "d"]]
    assert sorted(r.extra["phrase"] for p in parts for r in p) == [f"p{i}" for i in range(8)]


def test_what_a_walk_cannot_look_into_is_reported(tmp_path):
    """A folder removed while the walk is under way, and a link to nothing (a disk not mounted): named in
    `unseen`, so that the caller knows it did not see every image."""
    root = tmp_path / "photos"
    for rel in ["a/1.png", "b/2.png", "c/3.png"]:
        touch(str(root / rel))
    (root / "nas").symlink_to(tmp_path / "not-mounted", target_is_directory=True)
    unseen = Unlisted()
    items = iter_items([str(root)], unseen=unseen)
    first = next(items)
    shutil.rmtree(root / "b")  # after its parent was listed, before the walk reaches it
    assert paths([first, *items]) == [str(root / "a/1.png"), str(root / "c/3.png")]
    assert unseen.places == [str(root / "b"), str(root / "nas")]
    assert list(iter_items([str(root / "a")], unseen=unseen)) and len(unseen.places) == 2  # a full walk adds nothing


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_manifest_that_is_a_fifo_is_its_error_item_and_never_waited_on(tmp_path):
    import threading

    os.mkfifo(tmp_path / "list.txt")  # nobody writes to it: opening it to read would wait forever
    got: list = []
    thread = threading.Thread(target=lambda: got.extend(iter_items([str(tmp_path / "list.txt")])), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the FIFO manifest was opened"
    assert [(i.path, i.error.split(":")[0]) for i in got] == [(str(tmp_path / "list.txt"), "not a regular file")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_an_image_that_is_a_fifo_is_listed_like_any_image_so_it_gets_its_record(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "list.txt").write_text("pipe.jpg\n")
    folder = [i.path for i in iter_items([str(tmp_path)])]
    assert folder == [str(tmp_path / "pipe.jpg")]  # in a walk: listed (its load says what it is)
    assert [i.path for i in iter_items([str(tmp_path / "*.jpg")])] == folder
    assert [i.path for i in iter_items([str(tmp_path / "list.txt")])] == folder


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_shard_that_is_a_fifo_is_its_error_item(tmp_path):
    os.mkfifo(tmp_path / "s.tar")
    got = [(i.path, i.error) for i in iter_items([str(tmp_path / "s.tar")])]
    assert got == [(str(tmp_path / "s.tar"), "cannot read the shard: not a regular file")]
