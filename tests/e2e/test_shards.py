"""WebDataset shards (inputs/locations/: shards.py, members.py), written here with tarfile and grounded by the
trained shapes model: records named `SHARD#KEY` with right boxes, json and txt carried, samples without an image
and corrupt members as error records, brace patterns, a shard served over http, resume (after a kill too), whole
shards per rank, and draw and export on the results."""

import functools
import http.server
import io
import json
import logging
import os
import random
import tarfile
import threading

import pytest
import shapes  # tools/shapes.py

from kosmos_cli import ground, read_records
from kosmos_cli.inputs.listing import Unlisted
from kosmos_cli.inputs.locations import FetchOptions, Unreadable, split_member
from kosmos_cli.inputs.locations.members import read_member
from kosmos_cli.inputs.locations.shards import NO_IMAGE, iter_shard, split_name
from kosmos_cli.inputs.sources import iter_items
from kosmos_cli.output.store import Store
from tests.helpers import SHAPES_MODEL, killed_after, kosmos, kosmos_process

MTIME = 1_700_000_000
PATTERN = "{00000..00002}.tar"


def add(tar, name, data, mtime=MTIME):
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), mtime
    tar.addfile(info, io.BytesIO(data))


def scene(rng, i, fmt="png"):
    """(encoded bytes, (width, height, shapes)) of a fresh shapes scene."""
    width, height = shapes.CLI_SIZES[i % len(shapes.CLI_SIZES)]
    img, objs = shapes.make_scene(rng, width, height)
    buf = io.BytesIO()
    img.save(buf, format="JPEG" if fmt == "jpg" else "PNG", **({"quality": 95} if fmt == "jpg" else {}))
    return buf.getvalue(), (width, height, objs)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """data/00000.tar .. 00002.tar: 7 scenes (one in a sub-folder, one a JPEG), a sample with no image and one whose
    image is not an image; json and txt beside some; hidden files that are skipped. -> (folder, truth by path)"""
    folder = tmp_path_factory.mktemp("wds") / "data"
    folder.mkdir()
    rng, truth, n = random.Random(424242), {}, 0
    layout = [
        ["s00000", "s00001", "noimage"],
        ["s00002", "corrupt", "s00003"],
        ["s00004", "sub/s00005", "s00006"],
    ]
    for number, keys in enumerate(layout):
        name = f"{number:05d}.tar"
        with tarfile.open(folder / name, "w") as tar:
            add(tar, "__MACOSX/._s00000.jpg", b"not ours")
            for key in keys:
                if key == "noimage":
                    add(tar, f"{key}.json", json.dumps({"caption": "nothing here"}).encode())
                    add(tar, f"{key}.txt", b"no picture")
                    continue
                if key == "corrupt":
                    add(tar, f"{key}.jpg", b"\xff\xd8\xff\xe0 this is not a JPEG")
                    continue
                fmt = "jpg" if key == "s00001" else "png"
                data, shown = scene(rng, n, fmt)
                n += 1
                add(tar, f".{os.path.basename(key)}.png", b"hidden")
                add(tar, f"{key}.{fmt}", data)
                meta = {"caption": shapes.caption(shown[2]), "status": "success", "width": 1, "url": f"http://x/{key}"}
                add(tar, f"{key}.json", json.dumps(meta).encode())
                add(tar, f"{key}.txt", shapes.caption(shown[2]).encode())
                add(tar, f"{key}.cls", b"3")
                truth[f"{name}#{key}"] = shown
    return folder, truth


def hits(rows, truth, prefix):
    """Objects whose colour has a box with IoU >= 0.5 in its record, and all objects."""
    found = objects = 0
    for name, (width, height, objs) in truth.items():
        row = rows[prefix + name]
        assert row["status"] == "ok", row
        assert (row["width"], row["height"]) == (width, height)
        found, objects = found + shapes.boxed(row["entities"], objs), objects + len(objs)
    return found, objects


def _ground_from(folder, out, engine):
    """ground over the shards by a brace pattern, run from their folder (records' paths relative to it)."""
    here = os.getcwd()
    os.chdir(folder)
    try:
        return ground([PATTERN], out, engine=engine, batch_size=4)
    finally:
        os.chdir(here)


@pytest.fixture(scope="module")
def grounded(shapes_engine, shards, tmp_path_factory):
    """The shards through ground, by a brace pattern, run from their folder: (results path, rows by path)."""
    folder, _ = shards
    out = str(tmp_path_factory.mktemp("out") / "r.jsonl")
    summary = _ground_from(folder, out, shapes_engine)
    assert (summary.done, summary.failed, summary.skipped) == (7, 2, 0)
    return out, {r["path"]: r for r in read_records(out)}


# -- the convention --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, named",
    [
        ("000123.jpg", ("000123", "jpg")),
        ("a/b/000123.jpg", ("a/b/000123", "jpg")),
        ("a.b/000123.meta.json", ("a.b/000123", "meta.json")),
        ("000123", None),
        (".hidden.jpg", None),
        ("a/.cache/x.jpg", None),
        ("__MACOSX/x.jpg", None),
        ("./000123.jpg", ("000123", "jpg")),  # tar -C dir . names every member ./NAME
        ("./a/./b.png", ("a/b", "png")),
    ],
)
def test_a_members_key_is_its_path_up_to_the_first_dot_of_its_name(name, named):
    assert split_name(name) == named


def test_a_sample_brings_its_preferred_image_its_json_and_txt_and_its_shard(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tar:
        add(tar, "k1.webp", b"W" * 3)
        add(tar, "k1.png", b"P" * 4)
        add(tar, "k1.jpg", b"J" * 5)
        add(tar, "k1.gif", b"G" * 6)
        add(tar, "k1.json", b'{"caption": "c", "path": "p"}')
        add(tar, "k1.txt", "ünïcode".encode())
        add(tar, "k2.bmp", b"B" * 7)
        add(tar, "k3.json", b"[1, 2]")
    items = list(iter_shard(str(path), 5))
    assert [i.path for i in items] == [f"{path}#k1", f"{path}#k2", f"{path}#k3"]
    k1, k2, k3 = items
    assert (k1.data, k1.stat, k1.group, k1.error) == (b"J" * 5, (5, float(MTIME)), 5, None)
    assert k1.extra == {"caption": "c", "path": "p", "txt": "ünïcode"}
    assert k2.data == b"B" * 7  # no preferred kind: another image extension
    assert (k3.error, k3.extra) == (NO_IMAGE, {"json": [1, 2]})


def test_a_shard_written_with_dot_prefixed_names_gives_its_samples_and_their_members(tmp_path):
    path = tmp_path / "dot.tar"
    with tarfile.open(path, "w") as tar:
        add(tar, "./k1.png", b"P" * 4)
        add(tar, "./k1.json", b'{"caption": "c"}')
    (item,) = iter_shard(str(path), 0)
    assert (item.path, item.data, item.extra, item.error) == (f"{path}#k1", b"P" * 4, {"caption": "c"}, None)
    assert read_member(str(path), "k1", FetchOptions()) == b"P" * 4


def test_an_image_past_the_size_cap_is_left_unread(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tar:
        add(tar, "big.jpg", b"J" * 5000)
        add(tar, "fits.jpg", b"J" * 50)
    big, fits = iter_shard(str(path), 0, FetchOptions(max_bytes=1000))
    assert big.data is None and "big.jpg is larger than" in big.error and "--max-image-mb" in big.error
    assert fits.data == b"J" * 50


def test_links_and_names_that_leave_the_shard_are_counted_in_one_warning(tmp_path, caplog):
    """Members named with `..` or an absolute name, symbolic and hard links: never read as samples (a link's
    target is not the member's own bytes; a name outside the shard could not be laid out inside an output),
    each counted, one warning for the shard naming the first; the pass did not see every input."""
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tar:
        add(tar, "ok.jpg", b"J" * 50)
        add(tar, "../up.jpg", b"U" * 50)
        add(tar, "/abs.jpg", b"A" * 50)
        add(tar, "a/../b.jpg", b"B" * 50)
        for name, kind in [("soft.jpg", tarfile.SYMTYPE), ("hard.jpg", tarfile.LNKTYPE)]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "ok.jpg"
            tar.addfile(info)
        add(tar, "z.jpg", b"Z" * 50)
    unseen = Unlisted()
    with caplog.at_level(logging.WARNING, logger="kosmos_cli"):
        items = list(iter_items([str(path)], unseen=unseen))
    assert [(i.path, i.data) for i in items] == [(f"{path}#ok", b"J" * 50), (f"{path}#z", b"Z" * 50)]
    warned = [r.getMessage() for r in caplog.records if "not read" in r.getMessage()]
    assert len(warned) == 1 and "5 members" in warned[0] and "../up.jpg" in warned[0], caplog.text
    assert (unseen.skipped, unseen.first_skipped) == (5, f"{path} member ../up.jpg")


@pytest.mark.parametrize("damage", ["header", "truncated", "not a tar"])
def test_a_damaged_shard_gives_an_error_record_where_it_breaks_and_the_next_shard_is_read(
    shards, tmp_path, damage, caplog
):
    folder, _ = shards
    data = (folder / "00000.tar").read_bytes()
    with tarfile.open(folder / "00000.tar") as tar:
        members = tar.getmembers()
    second_json = next(m for m in members if m.name == "s00001.json")
    broken = bytearray(data)
    if damage == "header":
        broken[second_json.offset : second_json.offset + 64] = b"\x07" * 64
    elif damage == "truncated":
        broken = broken[: second_json.offset_data + 3]
    else:
        broken = bytearray(b"no tar at all" * 100)
    (tmp_path / "bad.tar").write_bytes(bytes(broken))
    (tmp_path / "good.tar").write_bytes((folder / "00001.tar").read_bytes())
    with caplog.at_level(logging.WARNING, logger="kosmos_cli"):
        items = list(iter_shard(str(tmp_path / "bad.tar"), 0)) + list(iter_shard(str(tmp_path / "good.tar"), 1))
    bad = [i for i in items if i.path.startswith(str(tmp_path / "bad.tar"))]
    good = [i for i in items if i.path.startswith(str(tmp_path / "good.tar"))]
    assert [i.path.rsplit("#", 1)[-1] for i in good] == ["s00002", "corrupt", "s00003"]
    if damage == "not a tar":
        assert [(i.path, i.error) for i in bad] == [(str(tmp_path / "bad.tar"), bad[0].error)]
        assert "not a tar file" in bad[0].error
    else:
        assert [i.path.rsplit("#", 1)[-1] for i in bad] == ["s00000", "s00001"]
        assert bad[0].error is None and bad[0].data
        assert bad[1].error.startswith("the shard breaks off")
    assert any("bad.tar" in r.getMessage() for r in caplog.records)


def test_a_shard_that_is_not_there_is_an_error_record(tmp_path):
    (item,) = iter_shard(str(tmp_path / "gone.tar"), 0)
    assert item.error.startswith("cannot read the shard")


def test_a_shard_is_never_held_whole_nor_its_headers_kept(tmp_path, monkeypatch):
    """Stream mode: tarfile would keep every header it read; iter_shard lets them go."""
    path = tmp_path / "many.tar"
    with tarfile.open(path, "w") as tar:
        for i in range(200):
            add(tar, f"{i:05d}.jpg", b"x")
    opened = []
    real_open = tarfile.open

    def spy(*args, **kwargs):
        tar = real_open(*args, **kwargs)
        opened.append(tar)
        return tar

    monkeypatch.setattr(tarfile, "open", spy)
    assert len(list(iter_shard(str(path), 0))) == 200
    assert len(opened[0].members) <= 1


# -- end to end with the shapes model ----------------------------------------------------------------------------
def test_shards_ground_to_records_named_by_shard_and_key_with_right_boxes(grounded, shards):
    _, truth = shards
    _, rows = grounded
    assert sorted(rows) == sorted([*truth, "00000.tar#noimage", "00001.tar#corrupt"])
    found, objects = hits(rows, truth, "")
    assert found / objects >= 0.75, f"{found}/{objects} objects boxed"
    row = rows["00000.tar#s00000"]
    # json fields and txt carried; ours (status, width) kept beside them under input_
    caption = shapes.caption(truth["00000.tar#s00000"][2])
    assert row["caption"] and row["input_caption"] == caption and row["txt"] == caption
    assert row["url"] == "http://x/s00000" and row["input_status"] == "success" and row["input_width"] == 1
    assert row["file_size"] > 0 and row["file_mtime"] == MTIME
    assert rows["00002.tar#sub/s00005"]["status"] == "ok"
    assert rows["00000.tar#noimage"]["status"] == "error" and rows["00000.tar#noimage"]["error"] == NO_IMAGE
    assert rows["00000.tar#noimage"]["txt"] == "no picture"
    assert rows["00001.tar#corrupt"]["error"].startswith("cannot decode image")  # a JPEG header, then nothing


def test_a_second_run_skips_every_sample(grounded, shards, shapes_engine):
    folder, _ = shards
    out, rows = grounded
    summary = _ground_from(folder, out, shapes_engine)
    assert (summary.done, summary.failed, summary.skipped) == (0, 0, 9)
    assert {r["path"]: r for r in read_records(out)} == rows


def test_the_cli_takes_a_brace_pattern_and_a_tar_gz(shards, tmp_path):
    folder, truth = shards
    import gzip

    (tmp_path / "00001.tar.gz").write_bytes(gzip.compress((folder / "00001.tar").read_bytes()))
    result = kosmos(
        "ground",
        str(folder / "{00000,00002}.tar"),
        str(tmp_path / "00001.tar.gz"),
        "--model",
        SHAPES_MODEL,
        "--max-new-tokens",
        "48",
    )
    assert result.exit_code == 0, result.output
    rows = {json.loads(line)["path"]: json.loads(line) for line in result.stdout.splitlines()}
    assert len(rows) == 9 and f"{tmp_path}/00001.tar.gz#s00002" in rows
    gz = {k.replace("00001.tar", "00001.tar.gz"): v for k, v in truth.items() if k.startswith("00001")}
    found, objects = hits(rows, gz, f"{tmp_path}/")
    assert found / objects >= 0.5


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(shards):
    """The shards' folder on an http server in this process: its base URL."""
    folder, _ = shards
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_remote_shard_streams_over_http_and_a_missing_one_is_an_error_record(
    served, shards, grounded, shapes_engine, tmp_path
):
    _, truth = shards
    _, local = grounded
    out = str(tmp_path / "r.parquet")
    summary = ground([f"{served}/{PATTERN}", f"{served}/09999.tar"], out, engine=shapes_engine, batch_size=4)
    rows = {r["path"]: r for r in read_records(out)}
    assert (summary.done, summary.failed) == (7, 3)
    assert rows[f"{served}/09999.tar"]["error"] == "cannot read the shard: HTTP 404 File not found"
    for path, row in local.items():
        remote = rows[f"{served}/{path}"]
        assert remote["entities"] == row["entities"] and remote["error"] == row["error"]
    found, objects = hits(rows, truth, f"{served}/")
    assert found / objects >= 0.75
    # draw streams a remote shard up to the key
    expected = _member(shards, "00002.tar", "sub/s00005.png")
    assert read_member(f"{served}/00002.tar", "sub/s00005", FetchOptions()) == expected
    with pytest.raises(Unreadable, match="no sample 'nope'"):
        read_member(f"{served}/00002.tar", "nope", FetchOptions())


def _member(shards, shard, name):
    folder, _ = shards
    with tarfile.open(folder / shard) as tar:
        return tar.extractfile(name).read()


def test_read_member_finds_a_samples_image_in_a_local_shard(shards):
    folder, _ = shards
    expected = _member(shards, "00000.tar", "s00001.jpg")
    assert read_member(str(folder / "00000.tar"), "s00001", FetchOptions()) == expected
    with pytest.raises(Unreadable, match="'noimage' .* has no image"):
        read_member(str(folder / "00000.tar"), "noimage", FetchOptions())
    with pytest.raises(Unreadable, match="no sample 'x'"):
        read_member(str(folder / "00000.tar"), "x", FetchOptions())
    with pytest.raises(Unreadable, match="not there"):
        read_member(str(folder / "07.tar"), "x", FetchOptions())
    got = []
    threads = [
        threading.Thread(target=lambda k=k: got.append(read_member(str(folder / "00002.tar"), k, FetchOptions())))
        for k in ("s00004", "sub/s00005", "s00006") * 4
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(
        _member(shards, "00002.tar", n) for n in ("s00004.png", "sub/s00005.png", "s00006.png") * 4
    )


def test_draw_finds_the_pixels_of_shard_samples(grounded, shards, tmp_path):
    out, rows = grounded
    folder, truth = shards
    drawn = tmp_path / "drawn"
    # the results name the shards relative to where the run was: draw finds them from there
    here = os.getcwd()
    os.chdir(folder)
    try:
        result = kosmos("draw", out, "-o", str(drawn))
    finally:
        os.chdir(here)
    assert result.exit_code == 0, result.output
    files = sorted(str(p.relative_to(drawn)) for p in drawn.rglob("*.png"))
    assert files == sorted(f"{s.split('#')[0][:-4]}/{s.split('#')[1]}.png" for s in truth)
    from PIL import Image

    with Image.open(drawn / "00000" / "s00000.png") as img:
        assert img.size == truth["00000.tar#s00000"][:2]


def test_export_to_coco_writes_sample_paths_as_they_are(grounded, shards, tmp_path):
    out, rows = grounded
    coco = tmp_path / "coco.json"
    result = kosmos("export", out, str(coco), "--to", "coco")
    assert result.exit_code == 0, result.output
    data = json.loads(coco.read_text())
    _, truth = shards
    assert sorted(i["file_name"] for i in data["images"]) == sorted(truth)
    assert all(split_member(i["file_name"]) for i in data["images"])
    assert len(data["annotations"]) >= len(truth)


def test_export_lays_samples_out_as_shard_and_key_and_yolo_writes_their_bytes(grounded, shards, tmp_path, monkeypatch):
    out, _ = grounded
    folder, truth = shards
    voc = tmp_path / "voc"
    result = kosmos("export", out, str(voc), "--to", "voc")
    assert result.exit_code == 0, result.output
    written = sorted(str(p.relative_to(voc / "Annotations")) for p in (voc / "Annotations").rglob("*.xml"))
    assert written == sorted(f"{s.split('#')[0][:-4]}/{s.split('#')[1]}.xml" for s in truth)
    yolo = tmp_path / "yolo"
    monkeypatch.chdir(folder)  # the records' shard paths are relative to where ground ran
    result = kosmos("export", out, str(yolo), "--to", "yolo")
    assert result.exit_code == 0, result.output
    assert f"{len(truth)} images, " in result.stderr and "0 failed" in result.stderr
    from kosmos_cli.inputs.locations import read_bytes

    for sample in truth:
        shard, key = sample.split("#")
        (image,) = (yolo / "images" / shard[:-4]).glob(f"{key}.*")  # named for what its bytes are
        assert not image.is_symlink() and image.read_bytes() == read_bytes(f"{folder / shard}#{key}")
        assert image.suffix == (".jpg" if key == "s00001" else ".png")
        assert (yolo / "labels" / shard[:-4] / f"{key}.txt").exists()


# -- resume after a kill, and several processes ----------------------------------------------------------------
def _args(folder, out):
    return [
        "ground",
        str(folder / PATTERN),
        "--out",
        str(out),
        "--model",
        SHAPES_MODEL,
        "--max-new-tokens",
        "48",
        "-b",
        "2",
        "--workers",
        "1",
    ]


@pytest.mark.slow
def test_killed_mid_run_then_resumed_every_sample_once(shards, tmp_path):
    folder, truth = shards
    out = tmp_path / "r.parquet"
    killed_after(_args(folder, out), tmp_path)
    partial = Store(str(out), "parquet", "ground").scan().seen
    assert 0 < len(partial) < 9
    rerun = kosmos_process(_args(folder, out))
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(partial)} skipped" in rerun.stderr
    rows = list(read_records(str(out)))
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 9
    assert sorted(paths) == sorted(f"{folder}/{p}" for p in [*truth, "00000.tar#noimage", "00001.tar#corrupt"])


@pytest.mark.slow
def test_two_ranks_take_whole_shards(shards, grounded, tmp_path):
    from tests.e2e.test_distributed import finish, launch

    folder, _ = shards
    _, one = grounded
    out = tmp_path / "two.parquet"
    args = ["ground", PATTERN, "--out", str(out), "--model", SHAPES_MODEL, "--max-new-tokens", "48", "-b", "4"]
    code, _, stderr = finish(launch("torchrun", args, cwd=str(folder)))
    assert code == 0, stderr
    # shards 0 and 2 to rank 0 (6 samples), shard 1 to rank 1 (3): by index it would be 5 and 4
    assert "kosmos ground rank 0: 5 done, 1 failed, 0 skipped" in stderr
    assert "kosmos ground rank 1: 2 done, 1 failed, 0 skipped" in stderr
    rows = list(read_records(str(out)))
    assert len(rows) == 9
    for row in rows:
        assert row["entities"] == one[row["path"]]["entities"] and row["error"] == one[row["path"]]["error"]
