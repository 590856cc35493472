"""--on ray (kosmos_cli/run/ray.py) against a real Ray cluster started once for the session on this machine
(ray.init, 2 CPUs), no mocks: the same records as a local run for ground, refer and find on the trained shapes model,
from every kind of input (a folder, a manifest, a WebDataset shard, a Parquet image table, an http URL) with bad
images as error records; resume after a clean end, after the driver is killed (-9) and after a model actor's process
is killed mid-run, every record exactly once; and one line for Ray missing, a cluster that cannot be reached and a
model that cannot load. Deselect with -m "not ray"."""

import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapes  # tools/shapes.py

from kosmos_cli import find, ground, read_records, refer
from kosmos_cli.errors import ClusterError, ModelError, UsageError
from kosmos_cli.inputs.sources import iter_items
from kosmos_cli.options import GenerationOptions, ModelOptions
from kosmos_cli.output.store import Store
from kosmos_cli.run import ray as on_ray
from kosmos_cli.run.progress import Progress
from kosmos_cli.run.ray import RayData, Sizing
from tests.helpers import ROOT, SHAPES_MODEL, killed_after, kosmos, kosmos_process, one_error_line
from tests.helpers.serve import ImageServer
from tests.ray_hooks import StandIn

TOKENS = 48  # what the shapes model needs for a caption with two boxes
ON_RAY = dict(on="ray", model=SHAPES_MODEL, max_new_tokens=TOKENS, dtype="float32")


@dataclass
class Cluster:
    address: str  # what RAY_ADDRESS is for a process that joins it
    hooks: str  # $KOSMOS_TEST_RAY of its workers (tests/ray_hooks.py)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A local Ray cluster of 2 CPUs for the session. Its workers import this checkout (PYTHONPATH), and
    tests/ray_hooks.py lets a test pause a model actor to kill it."""
    ray = pytest.importorskip("ray")
    hooks = str(tmp_path_factory.mktemp("ray-hooks"))
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, saved) if p)  # the cluster's processes inherit it
    try:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
            runtime_env={
                "worker_process_setup_hook": "tests.ray_hooks.install",
                "env_vars": {"KOSMOS_TEST_RAY": hooks},
            },
        )
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    yield Cluster(ray.get_runtime_context().gcs_address, hooks)
    ray.shutdown()


def scene_bytes(rng, i, fmt="PNG"):
    width, height = shapes.CLI_SIZES[i % len(shapes.CLI_SIZES)]
    img, _ = shapes.make_scene(rng, width, height)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Every kind of input: photos/ (4 scenes and a file that is not an image), a CSV manifest of 2 more with a
    carried column, a WebDataset shard (2 samples and one without an image), a Parquet image table (2 rows and one
    without bytes) and an image behind an http URL. -> (the inputs, how many records, how many of them errors)"""
    rng, root = random.Random(2024), tmp_path_factory.mktemp("inputs")
    photos, more = root / "photos", root / "more"
    photos.mkdir()
    more.mkdir()
    for i in range(4):
        (photos / f"scene_{i}.png").write_bytes(scene_bytes(rng, i))
    (photos / "broken.png").write_bytes(b"not an image at all")
    with open(root / "manifest.csv", "w") as f:
        f.write("path,note\n")
        for i in range(2):
            (more / f"m{i}.jpg").write_bytes(scene_bytes(rng, i + 1, "JPEG"))
            f.write(f"{more / f'm{i}.jpg'},note {i}\n")
    with tarfile.open(root / "shard.tar", "w") as tar:
        for key, data in [("a", scene_bytes(rng, 2)), ("b", scene_bytes(rng, 3)), ("c", None)]:
            name, data = (f"{key}.png", data) if data is not None else (f"{key}.json", b"{}")
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    rows = [
        {"key": "r0", "jpg": scene_bytes(rng, 0)},
        {"key": "r1", "jpg": None},
        {"key": "r2", "jpg": scene_bytes(rng, 1)},
    ]
    pq.write_table(
        pa.Table.from_pylist(rows, schema=pa.schema([("key", pa.string()), ("jpg", pa.binary())])),
        root / "table.parquet",
    )
    with ImageServer() as server:
        server.files["/web.png"] = scene_bytes(rng, 3)
        named = [str(photos), str(root / "manifest.csv"), str(root / "shard.tar"), str(root / "table.parquet")]
        yield named + [server.url("/web.png")], 5 + 2 + 3 + 3 + 1, 3


def by_key(rows, *fields):
    """Records by (path, *fields), without what differs between any two runs (how long they took)."""
    out = {}
    for row in rows:
        row = dict(row)
        row.pop("seconds")
        out[(row["path"], *(json.dumps(row.get(f)) for f in fields))] = row
    return out


@pytest.fixture(scope="module")
def grounded(cluster, inputs, tmp_path_factory):
    """Every input grounded on Ray into a JSONL file: (out, summary)."""
    named, _, _ = inputs
    out = str(tmp_path_factory.mktemp("ground") / "results.jsonl")
    summary = ground(named, out, image_column="jpg", **ON_RAY)
    return out, summary


def test_without_ray_on_ray_is_one_line_naming_the_extra(monkeypatch, image_dir):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    one_error_line(kosmos("ground", str(image_dir), "--on", "ray"), 2, "pip install 'kosmos-ground[ray]'")
    one_error_line(kosmos("ground", str(image_dir), "--on", "slurm"), 2, "unknown --on 'slurm': use one of local, ray")


@pytest.mark.ray
def test_on_ray_takes_the_model_options_not_a_loaded_engine(shapes_engine, image_dir, tmp_path):
    pytest.importorskip("ray")
    with pytest.raises(UsageError, match="on ray loads the model on the cluster's workers"):
        ground(image_dir, str(tmp_path / "r.jsonl"), engine=shapes_engine, on="ray")
    with pytest.raises(UsageError, match="device cuda:1 names a GPU of this machine"):
        ground(image_dir, str(tmp_path / "r.jsonl"), on="ray", device="cuda:1")
    assert not os.path.exists(tmp_path / "r.jsonl")


@pytest.mark.ray
def test_a_cluster_that_cannot_be_reached_is_one_line(image_dir, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")  # discard: nothing listens there
    result = kosmos_process(["ground", str(image_dir), "--out", str(tmp_path / "r.jsonl"), "--on", "ray"])
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kosmos: error: cannot reach the Ray cluster at 127.0.0.1:9")
    assert "unset RAY_ADDRESS" in lines[0]
    assert not os.path.exists(tmp_path / "r.jsonl")


@pytest.mark.ray
@pytest.mark.slow
def test_ground_on_ray_writes_the_records_a_local_run_writes_from_every_kind_of_input(
    grounded, inputs, shapes_engine, tmp_path
):
    named, records, errors = inputs
    out, summary = grounded
    assert (summary.done, summary.failed, summary.skipped) == (records - errors, errors, 0)
    local = str(tmp_path / "local.jsonl")
    ground(named, local, image_column="jpg", engine=shapes_engine)
    on_ray, here = by_key(read_records(out)), by_key(read_records(local))
    assert len(on_ray) == records and on_ray == here  # captions, entities, boxes, scores, carried columns, errors
    assert on_ray[(os.path.join(named[0], "broken.png"),)]["status"] == "error"
    assert sum(bool(r["entities"]) for r in on_ray.values()) == records - errors  # the model really grounded them
    assert {r["note"] for r in on_ray.values() if r.get("note")} == {"note 0", "note 1"}


@pytest.mark.ray
@pytest.mark.slow
def test_a_rerun_on_ray_does_nothing_again_and_retry_failed_and_prune_mean_what_they_mean_locally(grounded, inputs):
    named, records, errors = inputs
    out, _ = grounded
    before = open(out, "rb").read()
    again = ground(named, out, image_column="jpg", **ON_RAY)
    assert (again.done, again.failed, again.skipped) == (0, 0, records)
    assert open(out, "rb").read() == before
    retried = ground(named, out, image_column="jpg", retry_failed=True, **ON_RAY)
    assert (retried.done, retried.failed, retried.skipped) == (0, errors, records - errors)
    pruned = ground(named[:1], out, prune=True, **ON_RAY)  # the photos folder only
    assert (pruned.done, pruned.skipped) == (0, 5)
    assert sorted(r["path"] for r in read_records(out)) == sorted(
        os.path.join(named[0], n) for n in os.listdir(named[0])
    )


@pytest.mark.ray
@pytest.mark.slow
def test_refer_on_ray_writes_the_records_a_local_run_writes_to_parquet(cluster, inputs, shapes_engine, tmp_path):
    photos = inputs[0][0]
    manifest = tmp_path / "boxes.jsonl"
    with open(manifest, "w") as f:
        for name in ["scene_0.png", "scene_1.png"]:
            for box in ([0, 0, 100, 100], [20, 30, 180, 190]):
                f.write(
                    json.dumps(
                        {"path": os.path.join(photos, name), "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3]}
                    )
                    + "\n"
                )
    out, local = str(tmp_path / "regions.parquet"), str(tmp_path / "local.parquet")
    summary = refer([str(manifest)], out, **ON_RAY)
    assert (summary.done, summary.failed) == (4, 0), [r["error"] for r in read_records(out)]
    refer([str(manifest)], local, engine=shapes_engine)
    on_ray, here = by_key(read_records(out), "box_px"), by_key(read_records(local), "box_px")
    assert len(on_ray) == 4 and on_ray == here
    assert pq.read_schema(out) == pq.read_schema(local)


@pytest.mark.ray
@pytest.mark.slow
def test_find_on_ray_writes_the_records_a_local_run_writes(cluster, inputs, shapes_engine, tmp_path):
    photos = inputs[0][0]
    phrases = ["a red circle", "a blue square"]
    out, local = str(tmp_path / "found.jsonl"), str(tmp_path / "local.jsonl")
    summary = find([photos], out, phrases=phrases, **ON_RAY)
    assert (summary.done, summary.failed) == (8, 2)  # 4 scenes and broken.png, 2 phrases each
    find([photos], local, phrases=phrases, engine=shapes_engine)
    on_ray, here = by_key(read_records(out), "phrase"), by_key(read_records(local), "phrase")
    assert len(on_ray) == 10 and on_ray == here
    assert any(r["boxes"] for r in on_ray.values())


@pytest.mark.ray
@pytest.mark.slow
def test_a_model_actor_killed_mid_run_is_restarted_and_every_record_is_written_once(cluster, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = random.Random(7)
    for i in range(8):
        (photos / f"s{i:02d}.png").write_bytes(scene_bytes(rng, 0))
    trigger, paused = os.path.join(cluster.hooks, "pause-after"), os.path.join(cluster.hooks, "paused")
    with open(trigger, "w") as f:
        f.write("1")  # the actor answers 1 batch, then sleeps in its second until it is killed
    out, ran = str(tmp_path / "r.jsonl"), {}

    def go():
        try:
            ran["summary"] = ground([str(photos)], out, batch_size=2, **{**ON_RAY, "max_new_tokens": 8})
        except BaseException as exc:  # noqa: BLE001 - the test says what it was
            ran["error"] = exc

    thread = threading.Thread(target=go)
    try:
        thread.start()
        while not os.path.exists(paused) and thread.is_alive():
            time.sleep(0.1)
        assert os.path.exists(paused), ran
        os.kill(int(open(paused).read()), signal.SIGKILL)  # the model actor's process, by its pid
        thread.join(300)
    finally:
        os.unlink(trigger)
    os.unlink(paused)
    assert "error" not in ran, ran["error"]
    assert (ran["summary"].done, ran["summary"].failed) == (8, 0)
    rows = list(read_records(out))
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in photos.iterdir())  # each once


@pytest.mark.ray
@pytest.mark.slow
def test_the_driver_killed_mid_run_then_the_same_command_writes_every_record_once(cluster, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = random.Random(11)
    for i in range(8):
        (photos / f"s{i:02d}.png").write_bytes(scene_bytes(rng, i))
    out = str(tmp_path / "r.parquet")
    args = ["ground", str(photos), "--out", out, "--on", "ray", "-b", "2", "--model", SHAPES_MODEL]
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # the CLI joins the session's cluster
    killed_after([*args, "--max-new-tokens", "8"], str(tmp_path), batches=2, script="pause_after_writes.py")
    kept = len(Store(out, "parquet", "ground").scan().seen)
    assert kept >= 2  # what the killed run wrote is in the output (its parts): a batch or more a write
    again = ground([str(photos)], out, batch_size=2, **{**ON_RAY, "max_new_tokens": 8})  # the same run, from Python
    assert (again.done, again.skipped) == (8 - kept, kept)
    rows = list(read_records(out))
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in photos.iterdir())


@pytest.mark.ray
@pytest.mark.slow
def test_a_model_the_actors_cannot_load_is_one_line_no_output_file_and_the_exit_of_a_local_run(
    cluster, image_dir, tmp_path, monkeypatch
):
    out = str(tmp_path / "r.jsonl")
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ModelError, match="no-such-model"):
        ground(image_dir, out, **{**ON_RAY, "model": missing})
    assert not os.path.exists(out)  # the actors load the model before the output is opened, as a local run does
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    said = {}
    for on in ("local", "ray"):
        out = str(tmp_path / f"{on}.jsonl")
        result = kosmos_process(["ground", str(image_dir), "--out", out, "--on", on, "--model", missing])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kosmos: error: ") and "no-such-model" in lines[0], lines
        assert not os.path.exists(out)
        said[on] = (result.returncode, lines[0])
    assert said["ray"] == said["local"]


@pytest.mark.parametrize(
    "nodes, on_gpus, sizing",
    [
        ([{"CPU": 2}], False, Sizing(1, 2, 0)),  # this machine: one actor on both CPUs
        ([{"CPU": 16}, {"CPU": 16}, {"CPU": 0}], False, Sizing(2, 16, 0)),  # one per node; a head of 0 CPUs none
        ([{"CPU": 8}, {"CPU": 16}], False, Sizing(3, 8, 0)),  # unlike nodes: the smallest node's CPUs each
        ([{"CPU": 96, "GPU": 8}, {"CPU": 8}], True, Sizing(8, 12, 1)),  # one per GPU, its share of the node's CPUs
        ([{"CPU": 4, "GPU": 8}], True, Sizing(8, 0.5, 1)),  # more GPUs than CPUs: a share of one
        ([{"CPU": 8}], True, Sizing(1, 1, 1)),  # --device cuda, no GPU yet: one actor waits for the autoscaler's
        ([], False, Sizing(1, 1, 0)),
    ],
)
def test_the_pool_is_sized_from_the_clusters_nodes(nodes, on_gpus, sizing):
    assert Sizing.of(nodes, on_gpus) == sizing


@pytest.mark.ray
def test_on_a_cluster_without_gpus_a_model_actor_reserves_every_cpu_of_a_node_and_torch_computes_on_them(cluster):
    ray = pytest.importorskip("ray")
    pool = RayData.on_cluster(ModelOptions(model=SHAPES_MODEL), GenerationOptions())
    try:
        assert pool.sizing == Sizing(1, 2, 0) and pool.options.device == "cpu"
        assert [ray.get(actor.ready.remote()) for actor in pool.actors] == [(None, 2)]  # torch's threads in it
    finally:
        pool.stop()


@pytest.mark.ray
def test_the_pool_sends_chunks_that_grow_at_most_two_per_actor_and_writes_them_in_the_order_sent(
    cluster, tmp_path, monkeypatch
):
    monkeypatch.setattr(on_ray, "ModelActor", StandIn)  # tests/ray_hooks.py: answers at once
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(200):
        (photos / f"{i:03d}.png").write_bytes(b"")  # never read: the stand-in answers without them
    out = str(tmp_path / "r.jsonl")
    summary = ground([str(photos)], out, batch_size=4, **ON_RAY)
    assert (summary.done, summary.failed) == (200, 0)
    rows = list(read_records(out))
    assert [r["path"] for r in rows] == [i.path for i in iter_items([str(photos)])]  # each once, in order
    assert {r["caption"] for r in rows} == {"a stand-in"}
    with open(os.path.join(cluster.hooks, "stand-in.json")) as f:
        seen = json.load(f)
    assert seen["most"] == on_ray.DEPTH  # one call loads while the other answers; never more
    assert seen["sizes"][:2] == [4, 4] and max(seen["sizes"]) > 4 and sum(seen["sizes"]) == 200


@pytest.mark.ray
def test_workers_that_cannot_import_the_model_actor_are_one_line_not_a_wait_forever(cluster, tmp_path, monkeypatch):
    module = "class Actor:\n    def __init__(self, *args): ...\n\n    def ready(self):\n        return None, 0\n"
    (tmp_path / "only_here.py").write_text(module)  # importable by this process, not by the workers
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_here

    monkeypatch.setattr(on_ray, "ModelActor", only_here.Actor)
    out = str(tmp_path / "r.jsonl")
    with pytest.raises(ClusterError, match="cannot start kosmos's model actors .*No module named 'only_here'"):
        ground([str(tmp_path)], out, **ON_RAY)
    assert not os.path.exists(out)


class Counting(Progress):
    def __init__(self):
        self.counts = []

    def advance(self, done, failed, skipped):
        self.counts.append(done + failed + skipped)


@pytest.mark.ray
@pytest.mark.slow
def test_a_run_on_ray_says_only_what_kosmos_says_and_its_progress_moves_as_records_come_back(
    cluster, tmp_path, monkeypatch
):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = random.Random(5)
    for i in range(12):
        (photos / f"s{i:02d}.png").write_bytes(scene_bytes(rng, i))
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    out = str(tmp_path / "r.jsonl")
    args = ["ground", str(photos), "--out", out, "--on", "ray", "-b", "2", "--model", SHAPES_MODEL]
    result = kosmos_process([*args, "--max-new-tokens", "8"])
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("kosmos ") for line in lines), result.stderr  # no core_worker, no Ray logs
    assert "12 done" in lines[-1]
    counting = Counting()
    ground(
        [str(photos)], str(tmp_path / "again.jsonl"), batch_size=2, progress=counting, **{**ON_RAY, "max_new_tokens": 8}
    )
    assert counting.counts[-1] == 12 and len(set(counting.counts)) >= 3, counting.counts  # not 0, then 12


@pytest.mark.ray
@pytest.mark.slow
def test_ctrl_c_on_ray_keeps_what_came_back_exits_130_and_a_rerun_does_the_rest_once(cluster, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = random.Random(3)
    for i in range(40):
        (photos / f"s{i:02d}.png").write_bytes(scene_bytes(rng, i))
    out = tmp_path / "r.jsonl"
    args = ["ground", str(photos), "--out", str(out), "--on", "ray", "-b", "2", "--model", SHAPES_MODEL]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kosmos_cli", *args, "--max-new-tokens", str(TOKENS)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "RAY_ADDRESS": cluster.address},
    )
    while proc.poll() is None and not (out.exists() and out.read_bytes().count(b"\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert all(line.startswith("kosmos") for line in stderr.strip().splitlines()), stderr
    kept = len(list(read_records(str(out))))
    assert 2 <= kept < 40
    again = ground([str(photos)], str(out), batch_size=2, **ON_RAY)
    assert (again.done, again.skipped) == (40 - kept, kept)
    assert sorted(r["path"] for r in read_records(str(out))) == sorted(str(p) for p in photos.iterdir())
