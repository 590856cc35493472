"""Two runs at once on one dataset (issue 27, item 2): real `kosmos ground` processes on the tiny model, several tries.

In a bucket (moto's S3 server; no lock keeps runs apart) both runs end with exit 0 and no traceback, each folds
only its own staged batches, and the dataset then holds every image exactly once with nothing staged left. In a
local folder the lock keeps them apart: the second is refused in one line (exit 75), or with --wait runs after the
first and skips what it did; never a traceback, every image once. Then the store on its own: a live run's batches are
never folded by another run; a dead run's are, once provably dead (its marker names a process gone, or it is older
than STALE_AFTER).
"""

import json
import os
import subprocess
import sys
import time

import pytest

from kosmos_cli.output import dataset_staging
from kosmos_cli.output.dataset import DatasetStore
from kosmos_cli.output.reader import read_records
from kosmos_cli.run.ranks import Solo
from kosmos_cli.tasks import GroundRecord
from tests.helpers import ROOT, make_images

TRIES = 3
IMAGES = 6


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    make_images(str(folder), sizes=[(40 + 4 * i, 36) for i in range(IMAGES)])
    return folder


def start(model, photos, out, *flags):
    args = ["ground", str(photos), "--out", out, "--model", model, "--max-new-tokens", "3", "-b", "1", *flags]
    return subprocess.Popen(
        [sys.executable, "-m", "kosmos_cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def both(model, photos, out, *flags, later=1.5):
    """Two runs of the same command, the second started `later` seconds after the first: (rc, stderr) of each."""
    first = start(model, photos, out, *flags)
    time.sleep(later)
    second = start(model, photos, out, *flags)
    return [(p.wait(timeout=300), p.stderr.read()) for p in (first, second)]


def once_each(out, photos):
    paths = [r["path"] for r in read_records(out)]
    assert sorted(paths) == sorted(str(p) for p in photos.iterdir()), "every image exactly once"


# -- in a bucket ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bucket():
    """A moto S3 server on a free port, the environment pointing boto (and the runs) at it, and an s3fs on it."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    import s3fs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "FSSPEC_S3_ENDPOINT_URL"):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir("concurrent")
        yield fs
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(TRIES))
def test_two_runs_at_once_on_a_bucket_dataset_both_end_well_and_record_every_image_once(
    bucket, tiny_model, photos, attempt
):
    out = f"s3://concurrent/try-{attempt}/"
    for rc, err in both(tiny_model, photos, out, later=1.0 + attempt):
        assert rc == 0 and "Traceback" not in err, err
        assert "kosmos: error" not in err, err
    once_each(out, photos)
    bucket.invalidate_cache()
    left = sorted(p.rsplit("/", 1)[1] for p in bucket.find(f"concurrent/try-{attempt}"))
    assert left and all(name.startswith("part-") for name in left), left  # nothing staged left, no marker


# -- in a local folder ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(2))
def test_two_runs_at_once_on_a_local_dataset_one_is_refused_in_one_line_or_waits(tiny_model, photos, tmp_path, attempt):
    out = f"{tmp_path}/out/"
    ran = both(tiny_model, photos, out, later=0.5 + attempt)
    assert sorted(rc for rc, _ in ran) in ([0, 0], [0, 75]), ran  # whichever took the lock first ran
    for rc, err in ran:
        assert "Traceback" not in err, err
        if rc == 75:
            errors = [line for line in err.splitlines() if line.startswith("kosmos: error")]
            assert len(errors) == 1 and "is writing" in errors[0] and "--wait" in errors[0], err
    once_each(out, photos)
    waited = both(tiny_model, photos, f"{tmp_path}/waited/", "--wait", later=0.5 + attempt)
    for rc, err in waited:
        assert rc == 0 and "Traceback" not in err, err
    once_each(f"{tmp_path}/waited/", photos)
    assert not [n for n in os.listdir(f"{tmp_path}/waited") if n.startswith(".")]  # no lock, nothing staged left


# -- the store on its own: whose staged batches a run folds ------------------------------------------------------------
def rec(path, caption="a cat"):
    return GroundRecord(path=path, width=32, height=32, caption=caption, entities=[], prompt="p", model="m")


def staged_run(url, *paths, alive=True):
    """A run that staged a batch and was never settled (alive: still running, as far as its marker says)."""
    store = DatasetStore(url, "ground")
    with pytest.raises(KeyboardInterrupt), store.open(_Unmerged()) as output:
        output.write([rec(p) for p in paths])
        raise KeyboardInterrupt
    if not alive:
        marker = f"{store.stamp}-0000.run"
        with store.staging.open(marker) as f:
            who = json.loads(f.read())
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        who.update(pid=int(gone.stdout), started=None)  # a process of this machine that has ended
        store.staging.put(marker, lambda f: f.write(json.dumps(who).encode()))
    return store


class _Unmerged(Solo):
    merged = False  # never settles: what a kill leaves


def test_in_a_bucket_a_live_runs_batches_are_left_to_it_and_a_dead_runs_are_folded(bucket, monkeypatch):
    url = "s3://concurrent/store/"
    live = staged_run(url, "s3://x/a.png")
    dead = staged_run(url, "s3://x/b.png", alive=False)
    with DatasetStore(url, "ground").open(Solo()) as output:  # another run, settled
        assert set(output.seen) == {"s3://x/a.png", "s3://x/b.png"}  # resumed from both
        output.write([rec("s3://x/c.png")])
    names = DatasetStore(url, "ground").staged()
    assert names and all(n.startswith(live.stamp) for n in names)  # the live run's batch is left to it
    parts = DatasetStore(url, "ground").parts()
    assert any(p.startswith(f"part-{dead.stamp}-r0000-") for p in parts)  # the dead run's, under its own stamp
    assert sorted(r["path"] for r in read_records(url)) == ["s3://x/b.png", "s3://x/c.png"]
    monkeypatch.setattr(dataset_staging, "STALE_AFTER", 0.0)  # nothing written for longer than that: dead too
    with DatasetStore(url, "ground").open(Solo()):
        pass
    assert DatasetStore(url, "ground").staged() == []
    assert sorted(r["path"] for r in read_records(url)) == ["s3://x/a.png", "s3://x/b.png", "s3://x/c.png"]
    bucket.invalidate_cache()
    assert not [p for p in bucket.find("concurrent/store") if ".kosmos-parts" in p]  # markers gone with them


def test_in_a_bucket_a_run_whose_batches_another_run_folded_meanwhile_ends_well(bucket):
    url = "s3://concurrent/meanwhile/"
    first = DatasetStore(url, "ground")
    with first.open(Solo()) as output:
        output.write([rec("s3://x/a.png")])
        other = DatasetStore(url, "ground")
        other.stamp = first.stamp  # as if it took the first run's batches for its own (a dead run's, wrongly)
        other.settler.fold()
        output.write([rec("s3://x/b.png")])
    assert sorted(r["path"] for r in read_records(url)) == ["s3://x/a.png", "s3://x/b.png"]
    assert DatasetStore(url, "ground").scan().duplicates == 0
