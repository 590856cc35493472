"""Object storage through fsspec (inputs/locations/fs.py), against a real S3 endpoint: moto's standalone server on
127.0.0.1, read through s3fs, as s3fs tests itself. Credentials and the endpoint come from the environment
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3), never from our options.

The end-to-end tests ground shapes scenes from the bucket with the committed shapes model, so the boxes are
checked too: a folder, a glob, a manifest in the bucket with relative paths, resume (everything skipped; a
re-uploaded object alone redone), a kill and resume, and `kosmos draw` reading the pixels back from S3.
"""

import importlib.util
import io
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import shapes  # tools/shapes.py

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from kosmos_cli.inputs import locations  # noqa: E402
from kosmos_cli.inputs.locations import FetchOptions, Unreadable  # noqa: E402
from kosmos_cli.inputs.locations.fs import expand_remote, filesystem, read_remote, remote_stat  # noqa: E402
from kosmos_cli.inputs.sources import check_inputs, iter_items  # noqa: E402
from kosmos_cli.output.reader import read_records  # noqa: E402
from tests.helpers import SHAPES_MODEL, killed_after, kosmos_process, one_error_line, runner  # noqa: E402

from kosmos_cli.cli import app  # noqa: E402  isort: skip

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
_buckets = itertools.count()


def _forget_clients():
    """fsspec caches one S3FileSystem per thread and options: a test that moves the endpoint starts afresh."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def endpoint():
    """A moto S3 server on a free port, and the environment that points boto at it."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "FSSPEC_S3_ENDPOINT_URL"):
            mp.delenv(name, raising=False)
        for name, value in {**ENV, "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}"}.items():
            mp.setenv(name, value)
        _forget_clients()
        yield f"http://{host}:{port}"
        _forget_clients()
    server.stop()


@pytest.fixture
def s3(endpoint):
    """An s3fs filesystem on the test endpoint (as the environment names it), and a new empty bucket."""
    import s3fs

    _forget_clients()
    fs = s3fs.S3FileSystem()
    bucket = f"bucket-{next(_buckets)}"
    fs.mkdir(bucket)
    yield fs, bucket
    _forget_clients()


@pytest.fixture(scope="module")
def scenes():
    """Eight shapes scenes as PNG bytes, with the shapes they hold: name -> (bytes, width, height, objects)."""
    rng = random.Random(24680)
    out = {}
    for i in range(8):
        width, height = shapes.CLI_SIZES[i % len(shapes.CLI_SIZES)]
        img, objs = shapes.make_scene(rng, width, height)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out[f"scene_{i}"] = (buf.getvalue(), width, height, objs)
    return out


def ground(*args):
    return runner.invoke(app, ["ground", *args, "--model", SHAPES_MODEL, "--max-new-tokens", "48", "-b", "4"])


def boxes_right(row, truth) -> bool:
    """Every shape of the scene has a box of its colour with IoU >= 0.5."""
    _, width, height, objs = truth
    if row["status"] != "ok" or (row["width"], row["height"]) != (width, height):
        return False
    return shapes.boxed(row["entities"], objs) == len(objs)


def mostly_right(rows, truth_of) -> None:
    right = sum(boxes_right(r, truth_of(r["path"])) for r in rows)
    assert right >= len(rows) - 1, f"boxes right on {right}/{len(rows)} images"


# --- the library's side, without a model ---


def test_a_folder_is_walked_sorted_with_hidden_entries_and_other_files_left_out(s3):
    fs, bucket = s3
    for key in ("b.png", "a.jpg", "sub/c.webp", "sub/deeper/d.png", "notes.txt", ".hidden.png", ".cache/e.png"):
        fs.pipe(f"{bucket}/photos/{key}", b"x" * (len(key) + 1))
    fs.pipe(f"{bucket}/photos.png", b"not below the folder")
    items = list(expand_remote(f"s3://{bucket}/photos/"))
    names = [i.path for i in items]
    assert names == [f"s3://{bucket}/photos/{k}" for k in ("a.jpg", "b.png", "sub/c.webp", "sub/deeper/d.png")]
    for item in items:
        size, mtime = item.stat
        assert size == len(item.path.split("/photos/")[1]) + 1
        assert isinstance(mtime, float) and abs(mtime - time.time()) < 600
        assert remote_stat(item.path) == item.stat  # a listing and a HEAD agree: resume sees no change
    assert [i.path for i in expand_remote(f"s3://{bucket}/photos")] == names  # no trailing slash: the same


def test_a_glob_matches_images_below_it_but_not_hidden_ones(s3):
    fs, bucket = s3
    for key in ("x1.png", "x2.jpg", "y.png", "sub/x3.png", ".x4.png", ".cache/x5.png"):
        fs.pipe(f"{bucket}/p/{key}", b"img")
    assert [i.path for i in expand_remote(f"s3://{bucket}/p/x*")] == [
        f"s3://{bucket}/p/{k}" for k in ("x1.png", "x2.jpg")
    ]
    assert [i.path for i in expand_remote(f"s3://{bucket}/p/**/x*.png")] == [
        f"s3://{bucket}/p/sub/x3.png",
        f"s3://{bucket}/p/x1.png",
    ]


def test_a_manifest_in_the_bucket_resolves_relative_paths_against_its_folder(s3):
    fs, bucket = s3
    fs.pipe(f"{bucket}/lists/batch.csv", b"path,label\n../photos/a.png,cat\nsub/b.png,dog\ns3://other/c.png,\n")
    items = list(iter_items([f"s3://{bucket}/lists/batch.csv"]))
    assert [(i.path, i.extra["label"]) for i in items] == [
        (f"s3://{bucket}/photos/a.png", "cat"),
        (f"s3://{bucket}/lists/sub/b.png", "dog"),
        ("s3://other/c.png", ""),
    ]
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"path": ["../photos/a.png", "p.png"], "n": [1, 2]}), buf)
    fs.pipe(f"{bucket}/lists/batch.parquet", buf.getvalue())
    items = list(iter_items([f"s3://{bucket}/lists/batch.parquet"]))
    assert [(i.path, i.extra["n"]) for i in items] == [
        (f"s3://{bucket}/photos/a.png", 1),
        (f"s3://{bucket}/lists/p.png", 2),
    ]
    fs.pipe(f"{bucket}/lists/batch.jsonl", b'{"path": "a.png", "n": 1}\n')
    fs.pipe(f"{bucket}/lists/batch.txt", b"# a comment\nz/a.png\n")
    assert [i.path for i in iter_items([f"s3://{bucket}/lists/batch.jsonl", f"s3://{bucket}/lists/batch.txt"])] == [
        f"s3://{bucket}/lists/a.png",
        f"s3://{bucket}/lists/z/a.png",
    ]


def test_reading_an_object_its_absence_and_the_size_cap(s3):
    fs, bucket = s3
    fs.pipe(f"{bucket}/a.png", b"0123456789")
    assert read_remote(f"s3://{bucket}/a.png") == b"0123456789"
    assert locations.read_bytes(f"s3://{bucket}/a.png") == b"0123456789"
    with pytest.raises(Unreadable, match="^not found$"):
        read_remote(f"s3://{bucket}/gone.png")
    with pytest.raises(Unreadable, match="larger than"):
        read_remote(f"s3://{bucket}/a.png", FetchOptions(max_bytes=9))
    assert remote_stat(f"s3://{bucket}/gone.png") == (None, None)


def test_a_store_that_does_not_answer_times_out_as_the_fetch_timeout_says(endpoint, monkeypatch):
    silent = socket.socket()  # takes connections (the kernel does) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{silent.getsockname()[1]}")
    _forget_clients()
    try:
        started = time.monotonic()
        with pytest.raises(Unreadable, match=r"^timed out after 1 s \(--fetch-timeout\)$"):
            read_remote("s3://bucket/a.png", FetchOptions(timeout=1))
        assert time.monotonic() - started < 10
    finally:
        _forget_clients()
        silent.close()


def test_loader_threads_read_at_once(s3):
    fs, bucket = s3
    blobs = {f"s3://{bucket}/t/{i:02d}.png": os.urandom(1000 + i) for i in range(24)}
    fs.pipe({url[5:]: data for url, data in blobs.items()})
    got, errors = {}, []

    def read(urls):
        try:
            for url in urls:
                got[url] = read_remote(url)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    urls = sorted(blobs)
    threads = [threading.Thread(target=read, args=(urls[i::6],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == blobs


def test_check_inputs_names_what_is_wrong_before_a_model_loads(s3):
    fs, bucket = s3
    fs.pipe(f"{bucket}/photos/a.png", b"img")
    assert check_inputs([f"s3://{bucket}/photos/", f"s3://{bucket}/photos/a.png", f"s3://{bucket}/photos/*.png"])
    for url, says in [
        (f"s3://{bucket}/nope/", "input not found"),
        (f"s3://{bucket}/photos/b.png", "input not found"),
        ("s3://no-such-bucket/x/", "input not found"),
        (f"s3://{bucket}/photos/*.jpg", "no files match"),
    ]:
        with pytest.raises(Exception, match=says):
            check_inputs([url])


# --- the CLI, end to end, with the shapes model ---


def upload(fs, bucket, scenes, folder="photos", names=None):
    names = names or sorted(scenes)
    keys = {}
    for i, name in enumerate(names):
        key = f"{folder}/{'sub/' if i % 3 == 2 else ''}{name}.png"
        fs.pipe(f"{bucket}/{key}", scenes[name][0])
        keys[f"s3://{bucket}/{key}"] = scenes[name]
    return keys


@pytest.mark.slow
def test_ground_a_bucket_folder_resume_and_a_changed_object(s3, scenes, tmp_path):
    fs, bucket = s3
    truth = upload(fs, bucket, scenes, names=["scene_0", "scene_1", "scene_2", "scene_3"])
    fs.pipe(f"{bucket}/photos/.thumbs/scene_0.png", scenes["scene_0"][0])
    out = str(tmp_path / "out.parquet")

    first = ground(f"s3://{bucket}/photos/", "-o", out)
    assert first.exit_code == 0, first.output
    assert "4 done, 0 failed, 0 skipped" in first.stderr
    rows = list(read_records(out))
    assert sorted(r["path"] for r in rows) == sorted(truth)
    mostly_right(rows, truth.get)
    for row in rows:
        assert row["file_size"] == len(truth[row["path"]][0]) and isinstance(row["file_mtime"], float)

    again = ground(f"s3://{bucket}/photos/", "-o", out)
    assert again.exit_code == 0, again.output
    assert "0 done, 0 failed, 4 skipped" in again.stderr

    changed = f"s3://{bucket}/photos/scene_1.png"
    assert len(scenes["scene_5"][0]) != len(scenes["scene_1"][0])
    fs.pipe(changed[5:], scenes["scene_5"][0])  # another picture under the same key
    redo = ground(f"s3://{bucket}/photos/", "-o", out)
    assert redo.exit_code == 0, redo.output
    assert "1 done, 0 failed, 3 skipped" in redo.stderr
    rows = {r["path"]: r for r in read_records(out)}
    assert len(rows) == 4 and boxes_right(rows[changed], scenes["scene_5"])

    drawn = tmp_path / "drawn"
    draw = runner.invoke(app, ["draw", out, "-o", str(drawn)])
    assert draw.exit_code == 0, draw.output
    from PIL import Image

    for url, (_, width, height, _objs) in {**truth, changed: scenes["scene_5"]}.items():
        target = drawn / url[len("s3://") :]  # laid out below the bucket's name
        with Image.open(target) as img:
            assert img.size == (width, height)


def test_ground_a_glob_and_a_manifest_with_relative_paths_and_a_missing_object(s3, scenes, tmp_path):
    fs, bucket = s3
    truth = upload(fs, bucket, scenes, names=["scene_4", "scene_5", "scene_6"])
    out = str(tmp_path / "glob.jsonl")
    by_glob = ground(f"s3://{bucket}/photos/scene_[45].png", "-o", out)
    assert by_glob.exit_code == 0, by_glob.output
    rows = list(read_records(out))
    assert [r["path"] for r in rows] == [f"s3://{bucket}/photos/scene_4.png", f"s3://{bucket}/photos/scene_5.png"]
    mostly_right(rows, truth.get)

    fs.pipe(
        f"{bucket}/lists/batch.jsonl",
        b'{"path": "../photos/scene_4.png", "label": "a"}\n'
        b'{"path": "../photos/sub/scene_6.png", "label": "b"}\n'
        b'{"path": "../photos/scene_9.png", "label": "c"}\n',
    )
    out = str(tmp_path / "manifest.jsonl")
    by_list = ground(f"s3://{bucket}/lists/batch.jsonl", "-o", out)
    assert by_list.exit_code == 0, by_list.output
    rows = {r["path"]: r for r in read_records(out)}
    missing = rows.pop(f"s3://{bucket}/photos/scene_9.png")
    assert missing["status"] != "ok" and missing["error"] == "not found" and missing["label"] == "c"
    assert sorted(rows) == [f"s3://{bucket}/photos/scene_4.png", f"s3://{bucket}/photos/sub/scene_6.png"]
    mostly_right(list(rows.values()), truth.get)
    assert [rows[p]["label"] for p in sorted(rows)] == ["a", "b"]


@pytest.mark.slow
def test_a_kill_and_a_resume_from_the_bucket(s3, scenes, tmp_path):
    fs, bucket = s3
    truth = upload(fs, bucket, scenes, names=[f"scene_{i}" for i in range(6)])
    out = tmp_path / "killed.jsonl"
    args = ["ground", f"s3://{bucket}/photos/", "--out", str(out), "--model", SHAPES_MODEL, "--max-new-tokens", "48"]
    args += ["-b", "2", "--workers", "1"]
    killed_after(args, tmp_path)
    rerun = kosmos_process(args)
    assert rerun.returncode == 0, rerun.stderr
    assert "2 done, 0 failed, 4 skipped" in rerun.stderr
    rows = list(read_records(str(out)))
    assert sorted(r["path"] for r in rows) == sorted(truth)
    mostly_right(rows, truth.get)


# --- one-line refusals ---


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "url, package, says",
    [
        ("gs://bucket/photos/", "gcsfs", "gs:// needs gcsfs: pip install 'kosmos-ground[gcs]'"),
        (
            "abfs://box@account.dfs.core.windows.net/photos",
            "adlfs",
            "abfs:// needs adlfs: pip install 'kosmos-ground[azure]'",
        ),
    ],
)
def test_a_missing_fsspec_package_is_named_with_its_extra(url, package, says, tmp_path):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    result = runner.invoke(app, ["ground", url, "-o", str(tmp_path / "r.jsonl"), "--model", "not-loaded"])
    one_error_line(result, 2, says)


def test_hf_needs_no_extra_and_an_unknown_protocol_is_named(tmp_path):
    assert filesystem("hf://datasets/user/repo/images")[1] == "datasets/user/repo/images"
    unknown = runner.invoke(app, ["ground", "nosuchfs://bucket/photos/", "-o", str(tmp_path / "r.jsonl")])
    one_error_line(unknown, 2, "no filesystem is known for nosuchfs://")


def test_nothing_at_the_url_and_an_output_in_the_bucket_are_refused_in_one_line(s3, tmp_path):
    fs, bucket = s3
    fs.pipe(f"{bucket}/photos/a.png", b"img")
    nothing = runner.invoke(app, ["ground", f"s3://{bucket}/nope/", "-o", str(tmp_path / "r.jsonl")])
    one_error_line(nothing, 2, f"input not found: 's3://{bucket}/nope/'")
    no_match = runner.invoke(app, ["ground", f"s3://{bucket}/photos/*.jpg", "-o", str(tmp_path / "r.jsonl")])
    one_error_line(no_match, 2, "no files match")
    out = runner.invoke(app, ["ground", f"s3://{bucket}/photos/", "-o", f"s3://{bucket}/out.parquet"])
    one_error_line(
        out,
        2,
        f"a bucket takes results as a Parquet dataset, not as one file; name a folder, ending in / (s3://{bucket}/out/)",
    )


def test_refused_credentials_say_where_credentials_come_from(endpoint, tmp_path, monkeypatch):
    """A second moto server that checks every request's signature against its (empty) IAM: our dummy keys are
    refused, as a wrong key is by AWS."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "moto server did not start"
                time.sleep(0.1)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
        _forget_clients()
        result = runner.invoke(app, ["ground", "s3://locked/photos/", "-o", str(tmp_path / "r.jsonl")])
        one_error_line(result, 2, "permission denied")
        assert "AWS credentials come from the environment" in result.stderr
        with pytest.raises(Unreadable, match="^permission denied .*AWS credentials come from"):
            read_remote("s3://locked/photos/a.png")
        image = tmp_path / "a.png"
        image.write_bytes(next(_scene_bytes()))
        result = runner.invoke(app, ["ground", str(image), "-o", "s3://locked/out/", "--model", "/no/model"])
        one_error_line(result, 1, "cannot read s3://locked/out/: permission denied")  # before the model loads
        assert "AWS credentials come from the environment" in result.stderr
    finally:
        _forget_clients()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_webdataset_shards_and_an_image_table_in_the_bucket(s3, scenes, tmp_path):
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, bucket = s3
    names = sorted(scenes)[:4]
    for number in range(2):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name in names[2 * number : 2 * number + 2]:
                for ext, data in (("png", scenes[name][0]), ("json", json.dumps({"name": name}).encode())):
                    info = tarfile.TarInfo(f"{name}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        fs.pipe(f"{bucket}/shards/{number:05d}.tar", buf.getvalue())
    out = str(tmp_path / "shards.jsonl")
    result = ground(f"s3://{bucket}/shards/{{00000..00001}}.tar", "-o", out)
    assert result.exit_code == 0, result.output
    rows = list(read_records(out))
    shard_of = {name: f"s3://{bucket}/shards/{i // 2:05d}.tar" for i, name in enumerate(names)}
    assert [r["path"] for r in rows] == [f"{shard_of[n]}#{n}" for n in names]
    assert [r["name"] for r in rows] == names  # the sample's .json, carried
    mostly_right(rows, lambda path: scenes[path.rsplit("#", 1)[1]])

    table = pa.table({"key": names, "jpg": [scenes[n][0] for n in names]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    fs.pipe(f"{bucket}/tables/t.parquet", buf.getvalue())
    out = str(tmp_path / "table.jsonl")
    result = ground(f"s3://{bucket}/tables/t.parquet", "--image-column", "jpg", "-o", out)
    assert result.exit_code == 0, result.output
    rows = list(read_records(out))
    assert [r["path"] for r in rows] == [f"s3://{bucket}/tables/t.parquet#{n}" for n in names]
    mostly_right(rows, lambda path: scenes[path.rsplit("#", 1)[1]])
    drawn = runner.invoke(app, ["draw", out, "--out-dir", str(tmp_path / "drawn"), "-q"])
    assert drawn.exit_code == 0, drawn.output
    assert sorted(p.name for p in (tmp_path / "drawn").rglob("*.png")) == sorted(f"{n}.png" for n in names)


# --- results as a Parquet dataset in the bucket (dataset.py) ---


def _ground_record(path, caption="a cat", model="m"):
    from kosmos_cli.tasks import GroundRecord

    return GroundRecord(path=path, width=8, height=8, caption=caption, model=model, prompt="p", decoding="greedy")


def _in_bucket(fs, prefix):
    fs.invalidate_cache()
    return sorted(p.rsplit("/", 1)[1] for p in fs.find(prefix))


def test_a_dataset_in_the_bucket_resumes_prunes_and_overwrites_part_by_part(s3):
    from kosmos_cli.output.dataset import DatasetStore
    from kosmos_cli.run.ranks import Solo
    from kosmos_cli.tasks import Ground

    fs, bucket = s3
    url = f"s3://{bucket}/results/"

    def run(*records, overwrite=False, present=None):
        store = DatasetStore(url, "ground")
        with store.open(Solo(), overwrite=overwrite) as output:
            output.write(list(records))
            if present is not None:
                output.complete({Ground.key({"path": p}) for p in present})
        return output.seen

    run(_ground_record("s3://x/a.png"), _ground_record("s3://x/b.png"))
    assert set(run(_ground_record("s3://x/a.png", caption="new", model="m2"))) == {"s3://x/a.png", "s3://x/b.png"}
    assert sorted((r["path"], r["caption"]) for r in read_records(url)) == [
        ("s3://x/a.png", "new"),
        ("s3://x/b.png", "a cat"),
    ]
    names = _in_bucket(fs, f"{bucket}/results")
    assert len(names) == 2 and all(n.startswith("part-") and n.endswith(".parquet") for n in names)  # no lock
    run(present=["s3://x/b.png"])
    assert [r["path"] for r in read_records(url)] == ["s3://x/b.png"] and len(_in_bucket(fs, f"{bucket}/results")) == 1
    run(_ground_record("s3://x/c.png"), overwrite=True)
    assert [r["path"] for r in read_records(url)] == ["s3://x/c.png"]

    import pyarrow.dataset as ds

    table = ds.dataset(f"{bucket}/results", filesystem=fs, format="parquet").to_table()
    assert table.column("path").to_pylist() == ["s3://x/c.png"]


def test_two_runs_at_once_on_a_bucket_are_not_refused_lose_nothing_and_the_later_one_wins(s3):
    from kosmos_cli.output.dataset import DatasetStore
    from kosmos_cli.run.ranks import Solo

    fs, bucket = s3
    url = f"s3://{bucket}/results/"
    with DatasetStore(url, "ground").open(Solo()) as first:
        first.write([_ground_record("s3://x/b.png", caption="first")])
        DatasetStore(url, "ground").probe()  # no lock to find
        with DatasetStore(url, "ground").open(Solo()) as second:  # started later, ends first
            second.write([_ground_record("s3://x/a.png", caption="second")])
        first.write([_ground_record("s3://x/a.png", caption="first"), _ground_record("s3://x/c.png", caption="first")])
    with DatasetStore(url, "ground").open(Solo()):
        pass
    got = sorted((r["path"], r["caption"]) for r in read_records(url))
    assert got == [("s3://x/a.png", "second"), ("s3://x/b.png", "first"), ("s3://x/c.png", "first")]


def test_a_bucket_that_refuses_us_is_one_line_before_the_model_loads(s3, tmp_path):
    fs, bucket = s3
    fs.pipe(f"{bucket}/results/mine.parquet", b"PAR1 not ours at all")
    photos = tmp_path / "p.png"
    photos.write_bytes(next(iter(_scene_bytes())))
    result = runner.invoke(app, ["ground", str(photos), "-o", f"s3://{bucket}/results/", "--model", "/no/model"])
    one_error_line(
        result, 2, f"--out s3://{bucket}/results/ is not a results dataset of kosmos alone (it holds mine.parquet"
    )
    result = runner.invoke(app, ["ground", str(photos), "-o", "s3://no-such-bucket-here/out/", "--model", "/no/model"])
    one_error_line(result, 1, "cannot write s3://no-such-bucket-here/out/: there is no bucket 'no-such-bucket-here'")


def _scene_bytes():
    img, _ = shapes.make_scene(random.Random(1), 64, 64)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    yield buf.getvalue()


@pytest.mark.slow
def test_ground_into_a_bucket_dataset_twice_and_after_a_kill(s3, scenes, tmp_path):
    fs, bucket = s3
    truth = upload(fs, bucket, scenes, names=[f"scene_{i}" for i in range(6)])
    out = f"s3://{bucket}/results/"
    first = ground(f"s3://{bucket}/photos/", "-o", out)
    assert first.exit_code == 0, first.output
    assert "6 done, 0 failed, 0 skipped" in first.stderr
    again = ground(f"s3://{bucket}/photos/", "-o", out)
    assert "0 done, 0 failed, 6 skipped" in again.stderr
    held = {name: fs.info(f"{bucket}/results/{name}")["ETag"] for name in _in_bucket(fs, f"{bucket}/results")}
    fs.pipe(f"{bucket}/photos/scene_9.png", scenes["scene_7"][0])
    _forget_clients()
    planned = ground(f"s3://{bucket}/photos/", "-o", out, "--dry-run", "--json")  # the bucket read, nothing written
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.stdout)
    assert (plan["recorded"], plan["new"], plan["todo"]) == (6, 1, 1)
    assert {name: fs.info(f"{bucket}/results/{name}")["ETag"] for name in _in_bucket(fs, f"{bucket}/results")} == held
    fs.rm(f"{bucket}/photos/scene_9.png")
    rows = list(read_records(out))
    assert sorted(r["path"] for r in rows) == sorted(truth)
    mostly_right(rows, truth.get)
    coco = tmp_path / "coco.json"  # export and eval read the dataset in the bucket as draw does
    exported = runner.invoke(app, ["export", out, "--to", "coco", str(coco)])
    assert exported.exit_code == 0, exported.output
    labels = json.loads(coco.read_text())
    assert sorted(i["file_name"] for i in labels["images"]) == sorted(truth)
    measured = runner.invoke(app, ["eval", out, "--truth", str(coco), "--json"])
    assert measured.exit_code == 0, measured.output
    report = json.loads(measured.stdout)
    assert report["images"]["paired"] == 6 and report["overall"]["truth_boxes"] == len(labels["annotations"]) > 0

    from kosmos_cli.output.dataset import DatasetStore

    killed = f"s3://{bucket}/killed/"
    args = ["ground", f"s3://{bucket}/photos/", "--out", killed, "--model", SHAPES_MODEL, "--max-new-tokens", "48"]
    killed_after([*args, "-b", "2", "--workers", "1"], tmp_path)
    _forget_clients()
    left = len(DatasetStore(killed, "ground").scan().seen)  # staged in the bucket, batch by batch
    assert 4 <= left < 6
    rerun = kosmos_process([*args, "-b", "2"])
    assert rerun.returncode == 0, rerun.stderr
    assert f"{6 - left} done, 0 failed, {left} skipped" in rerun.stderr
    assert sorted(r["path"] for r in read_records(killed)) == sorted(truth)
    assert _in_bucket(fs, f"{bucket}/killed") == sorted(_in_bucket(fs, f"{bucket}/killed"))
    assert all(name.startswith("part-") for name in _in_bucket(fs, f"{bucket}/killed"))  # nothing staged left
