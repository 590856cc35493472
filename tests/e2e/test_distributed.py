"""Several processes, one result: real CPU ranks started by accelerate launch and torchrun, and the status files
the ranks coordinate through (distributed.py)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from kosmos_cli import find, ground, read_records
from kosmos_cli.errors import OutputError, RankError, UsageError
from kosmos_cli.run.pipeline import Progress, Summary
from kosmos_cli.run.ranks import DONE, FAILED, LOADING, RUNNING, Solo, new_team
from kosmos_cli.run.ranks import team as current_team
from tests.helpers import HERE, make_images

SIZES = [(224, 224), (320, 200), (200, 320), (288, 224), (100, 100), (300, 300), (256, 128)]  # 7: uneven shares


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranks") / "photos"
    return sorted(make_images(str(folder), sizes=SIZES))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(launcher, args, *, nproc=2, env=None, cwd=None, script=None, extra=(), timeout=240):
    """`kosmos ARGS` as `nproc` processes: launcher is "accelerate" or "torchrun"."""
    if launcher == "accelerate":
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.accelerate_cli",
            "launch",
            "--multi_gpu",
            "--num_processes",
            str(nproc),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
        ]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), *extra]
        if not extra:
            cmd.append("--standalone")
    cmd += [script] if script else ["-m", "kosmos_cli"]
    full_env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    full_env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "KOSMOS_RANK_TIMEOUT": "30"})
    full_env.update(env or {})
    return subprocess.Popen(
        cmd + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=cwd
    )


def finish(proc, timeout=240):
    stdout, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stdout, stderr


def comparable(rows):
    """path -> record without its timing; and every path once."""
    rows = list(rows)
    by_path = {r["path"]: {k: v for k, v in r.items() if k != "seconds"} for r in rows}
    assert len(by_path) == len(rows), "an image was recorded twice"
    return by_path


def model_args(tiny_model):
    return ["--model", tiny_model, "--max-new-tokens", "12", "--device", "auto"]


# -- real ranks ----------------------------------------------------------------------------------------------
def test_two_ranks_write_what_one_process_writes(tiny_model, tiny_engine, photos, tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 starts two real CPU ranks (gloo) on a machine with no GPU."""
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    ground(photos, str(one), engine=tiny_engine, batch_size=2)
    code, stdout, stderr = finish(
        launch("accelerate", ["ground", *photos, "--out", str(two), "-b", "2", *model_args(tiny_model)])
    )
    assert code == 0, stderr
    assert stdout == ""
    assert comparable(read_records(str(two))) == comparable(read_records(str(one)))
    # both ranks worked, each on its share: 7 images by index, 4 to rank 0 and 3 to rank 1
    assert "kosmos ground rank 0: 4 done, 0 failed, 0 skipped" in stderr
    assert "kosmos ground rank 1: 3 done, 0 failed, 0 skipped" in stderr
    assert "kosmos ground finished: 7 done, 0 failed, 0 skipped" in stderr and "(2 processes)" in stderr
    assert sorted(os.listdir(tmp_path)) == ["one.parquet", "two.parquet"]  # no lock, no parts, no status left

    three = tmp_path / "three"  # a folder: a Parquet dataset, each rank's batches staged, folded in by rank 0
    code, _, stderr = finish(
        launch("torchrun", ["ground", *photos, "--out", f"{three}/", "-b", "2", *model_args(tiny_model)])
    )
    assert code == 0, stderr
    assert comparable(read_records(f"{three}/")) == comparable(read_records(str(one)))
    assert [n.endswith(".parquet") for n in os.listdir(three)] == [True]


def test_two_ranks_to_stdout(tiny_model, tiny_engine, photos, tmp_path):
    one = tmp_path / "one.jsonl"
    ground(photos, str(one), engine=tiny_engine, batch_size=2)
    work = tmp_path / "work"
    work.mkdir()
    code, stdout, stderr = finish(
        launch("torchrun", ["ground", *photos, "--out", "-", *model_args(tiny_model)], cwd=str(work))
    )
    assert code == 0, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert comparable(rows) == comparable(read_records(str(one)))
    assert "-> stdout (2 processes)" in stderr
    assert os.listdir(work) == []  # the ranks' spool is gone


@pytest.mark.slow
def test_two_ranks_to_stdout_killed_then_run_again_write_every_image_once(tiny_model, photos, tmp_path):
    """--out - on 2 ranks, rank 1 killed after its first batch: nothing on stdout, what is done stays in the spool;
    the same command again resumes from it, writes every image once to stdout, and leaves no spool."""
    work = tmp_path / "work"
    work.mkdir()
    args = ["ground", *photos, "--out", "-", "-b", "1", *model_args(tiny_model)]
    code, stdout, stderr = finish(
        launch(
            "torchrun",
            args,
            cwd=str(work),
            script=os.path.join(HERE, "rank_crash.py"),
            env={"KOSMOS_TEST_CRASH_RANK": "1"},
        )
    )
    assert code != 0 and stdout == "", stderr
    assert ".kosmos-stdout-ground.jsonl.parts" in os.listdir(work)
    code, stdout, stderr = finish(launch("torchrun", args, cwd=str(work)))
    assert code == 0, stderr
    assert sorted(comparable(json.loads(line) for line in stdout.splitlines())) == photos
    (line,) = [line for line in stderr.splitlines() if line.startswith("kosmos ground finished: ")]
    done, skipped = (int(line.split(" done")[0].split()[-1]), int(line.split(" skipped")[0].split()[-1]))
    assert done + skipped == len(photos) and skipped >= 1, line
    assert os.listdir(work) == []


def test_resume_with_more_processes(tiny_model, tiny_engine, photos, tmp_path):
    """A run on a part of the inputs by one process, finished by two: every image once, the done ones kept."""
    out = tmp_path / "r.jsonl"
    ground(photos[:3], str(out), engine=tiny_engine)
    before = {r["path"]: r for r in read_records(str(out))}
    code, _, stderr = finish(
        launch("torchrun", ["ground", os.path.dirname(photos[0]), "--out", str(out), *model_args(tiny_model)])
    )
    assert code == 0, stderr
    assert "kosmos ground finished: 4 done, 0 failed, 3 skipped" in stderr
    after = comparable(read_records(str(out)))
    assert sorted(after) == photos
    for path, row in before.items():  # not done again: the same record, timing included
        assert next(r for r in read_records(str(out)) if r["path"] == path) == row
    assert not os.path.exists(f"{out}.parts") and not os.path.exists(f"{out}.ranks")


def test_find_on_two_ranks_boxes_what_one_process_boxes(shapes_model, shapes_engine, tmp_path):
    """kosmos find with a path,phrase manifest on 2 ranks of the trained shapes model: the same boxes as one
    process, real ones, and an image's rows stay on one rank."""
    import random

    import shapes  # tools/shapes.py

    rng, rows, truth = random.Random(55), [], {}
    for i in range(6):
        img, objs = shapes.make_scene(rng, *shapes.CLI_SIZES[i % 4], n=2)
        path = str(tmp_path / f"s{i}.png")
        img.save(path)
        for obj in objs:
            rows.append({"path": path, "phrase": obj.phrase})
            truth[(path, obj.phrase)] = obj.box
    manifest = tmp_path / "queries.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    one, two = tmp_path / "one.jsonl", tmp_path / "two.parquet"
    find([str(manifest)], str(one), engine=shapes_engine)
    code, _, stderr = finish(
        launch(
            "torchrun", ["find", str(manifest), "--out", str(two), "--model", shapes_model, "--max-new-tokens", "48"]
        )
    )
    assert code == 0, stderr

    def by_query(out):
        return {(r["path"], r["phrase"]): {k: v for k, v in r.items() if k != "seconds"} for r in read_records(out)}

    assert by_query(str(two)) == by_query(str(one)) and len(by_query(str(two))) == 12
    assert "kosmos find rank 0: 6 done" in stderr and "kosmos find rank 1: 6 done" in stderr
    hits = sum(
        any(shapes.iou(b, truth[key]) >= 0.5 for b in row["boxes_px"]) for key, row in by_query(str(two)).items()
    )
    assert hits >= 6, f"{hits}/12 phrases boxed"


@pytest.mark.slow
def test_a_crashed_rank_fails_the_run_naming_it_and_a_rerun_finishes(tiny_model, tiny_engine, photos, tmp_path):
    """Rank 1 dies hard after its first batch: torchrun stops rank 0, which says which rank died."""
    out = tmp_path / "r.jsonl"
    started = time.monotonic()
    code, _, stderr = finish(
        launch(
            "torchrun",
            ["ground", *photos, "--out", str(out), "-b", "1", *model_args(tiny_model)],
            script=os.path.join(HERE, "rank_crash.py"),
            env={"KOSMOS_TEST_CRASH_RANK": "1"},
        )
    )
    assert code != 0
    assert time.monotonic() - started < 180
    errors = [line for line in stderr.splitlines() if line.startswith("kosmos: error:")]
    assert len(errors) == 1, stderr  # one line, from rank 0
    assert errors[0].startswith("kosmos: error: rank 1 ") and "run the same command again" in errors[0]
    # the same command with one process finishes the rest: every image once
    summary = ground(photos, str(out), engine=tiny_engine)
    assert sorted(comparable(read_records(str(out)))) == photos
    assert summary.done + summary.skipped == len(photos) and summary.skipped >= 1


def test_a_hung_rank_is_named_and_the_run_ends(tiny_model, photos, tmp_path):
    """Rank 1 hangs after its first batch, alive (its heartbeat goes on): rank 0 finishes its share, sees that
    rank 1 has recorded nothing for KOSMOS_STALL_TIMEOUT seconds, says so in one line, and the launch ends."""
    out = tmp_path / "r.jsonl"
    started = time.monotonic()
    code, _, stderr = finish(
        launch(
            "torchrun",
            ["ground", *photos, "--out", str(out), "-b", "1", *model_args(tiny_model)],
            script=os.path.join(HERE, "rank_crash.py"),
            env={"KOSMOS_TEST_HANG_RANK": "1", "KOSMOS_STALL_TIMEOUT": "4"},
        )
    )
    assert code != 0
    assert time.monotonic() - started < 120
    errors = [line for line in stderr.splitlines() if line.startswith("kosmos: error:")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith("kosmos: error: rank 1 ") and "looks hung" in errors[0], errors[0]
    assert "KOSMOS_STALL_TIMEOUT" in errors[0] and "run the same command again" in errors[0]


@pytest.mark.slow
def test_a_crashed_rank_on_another_machine_is_noticed(tiny_model, photos, tmp_path):
    """Two launchers, as on two machines: the one of rank 0 does not see rank 1 die; rank 0 itself does."""
    out = tmp_path / "r.jsonl"
    port = free_port()
    nodes = []
    for node in (0, 1):
        extra = ["--nnodes", "2", "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", str(port)]
        nodes.append(
            launch(
                "torchrun",
                ["ground", *photos, "--out", str(out), "-b", "1", *model_args(tiny_model)],
                nproc=1,
                extra=extra,
                script=os.path.join(HERE, "rank_crash.py"),
                env={"KOSMOS_TEST_CRASH_RANK": "1"},
            )
        )
    started = time.monotonic()
    code, _, stderr = finish(nodes[0])
    finish(nodes[1])
    assert code != 0
    assert time.monotonic() - started < 180
    assert "kosmos: error: rank 1 (pid " in stderr and "ended without finishing" in stderr, stderr


# -- the status files, without launching ---------------------------------------------------------------
def team(rank, timeout=5.0, size=2, stall=None):
    return new_team(rank, size, rank, "cpu", "test", timeout=timeout, stall=stall)


def fake_status(main, rank, **fields):
    status = {
        "run": main.board.tag,
        "rank": rank,
        "world": main.size,
        "host": "elsewhere",
        "space": "elsewhere",
        "pid": 1,
        "state": RUNNING,
        "error": None,
        "beat": 1,
        "done": 0,
        "failed": 0,
        "skipped": 0,
    }
    status.update(fields)
    with open(main.board.path(rank), "w") as f:
        json.dump(status, f)


def watch_until_problem(main, seconds=5.0):
    deadline = time.monotonic() + seconds
    while main.problem is None and time.monotonic() < deadline:
        main.watch()
        time.sleep(0.05)
    return main.problem


def test_one_process_has_no_team(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert isinstance(current_team(), Solo)
    assert current_team().device_for("auto") == "auto" and current_team().device_for("cuda:1") == "cuda:1"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert isinstance(current_team(), Solo)


def test_ranks_wait_for_rank_0_and_rank_0_counts_them_in(tmp_path):
    out = str(tmp_path / "r.jsonl")
    main, other = team(0), team(1)
    seen = []

    def rank_1():
        with other.session(out):
            other.ready()
            seen.append(other.others[0]["state"])
            other.finish(Summary(done=3, skipped=1, failures=["b.jpg: broken"]))

    thread = threading.Thread(target=rank_1)
    thread.start()
    time.sleep(0.6)
    assert seen == []  # rank 1 waits until rank 0 has prepared the output
    total = Summary(done=4)
    with main.session(out):
        main.ready()
        main.finish(total)
    thread.join(10)
    assert seen in ([RUNNING], [DONE])  # what rank 0 said when rank 1 went on
    assert (total.done, total.failed, total.skipped, total.world) == (7, 0, 1, 2)
    assert [(r.rank, r.done) for r in total.ranks] == [(0, 4), (1, 3)]
    assert total.failures == ["b.jpg: broken"]
    assert "kosmos ground rank 1: 3 done, 0 failed, 1 skipped" in total.ranks[1].line()
    assert not os.path.exists(out + ".ranks")  # the status files are gone after a complete run


def test_a_rank_that_fails_says_so_and_rank_0_stops_naming_it(tmp_path):
    out = str(tmp_path / "r.jsonl")
    main, other = team(0), team(1)
    with pytest.raises(OutputError):
        with other.session(out):
            raise OutputError("no space left writing r.jsonl")
    main.start(out)
    try:
        problem = watch_until_problem(main)
        assert str(problem).startswith("rank 1 failed: no space left writing r.jsonl")
        with pytest.raises(RankError, match="rank 1 failed"):
            main.check()
        assert problem.rank == 1 and not problem.quiet  # rank 0 says it
    finally:
        main.close()


def test_a_rank_whose_heartbeat_stops_is_named_after_the_timeout(tmp_path):
    main = team(0, timeout=0.5)
    main.start(str(tmp_path / "r.jsonl"))
    try:
        fake_status(main, 1)  # another machine: its process cannot be looked up from here
        started = time.monotonic()
        problem = watch_until_problem(main)
        assert str(problem).startswith("rank 1 on elsewhere stopped responding: no heartbeat for")
        assert (
            0.5 <= time.monotonic() - started < 30
        )  # named after the timeout, not before; the bound only stops a hang
    finally:
        main.close()


def test_a_running_rank_that_records_nothing_is_named_after_the_stall_timeout(tmp_path):
    main = team(0, timeout=60, stall=0.6)
    main.start(str(tmp_path / "r.jsonl"))
    try:
        for beat in range(1, 6):  # heartbeat and counts go on: fine
            fake_status(main, 1, beat=beat, done=beat)
            main.watch()
            time.sleep(0.2)
        assert main.problem is None
        fake_status(main, 1, state=LOADING, beat=10, done=5)  # loading (a download) may take what it takes
        for beat in range(11, 16):
            fake_status(main, 1, state=LOADING, beat=beat, done=5)
            main.watch()
            time.sleep(0.2)
        assert main.problem is None
        started = time.monotonic()
        beat = 20
        while main.problem is None and time.monotonic() - started < 5:  # running, heartbeat on, counts still
            beat += 1
            fake_status(main, 1, beat=beat, done=5)
            main.watch()
            time.sleep(0.05)
        assert str(main.problem).startswith(
            "rank 1 on elsewhere has recorded nothing for 1s although it is still running: it looks hung"
        )
        assert 0.6 <= time.monotonic() - started < 30
    finally:
        main.close()


def test_stall_and_rank_timeouts_must_be_numbers(monkeypatch):
    monkeypatch.setenv("KOSMOS_STALL_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="KOSMOS_STALL_TIMEOUT='soon': give a number of seconds"):
        team(0)
    monkeypatch.setenv("KOSMOS_STALL_TIMEOUT", "0")
    assert team(0).stall == 0  # never


def test_a_rank_whose_process_is_gone_is_named_at_once(tmp_path):
    main = team(0, timeout=60)
    main.start(str(tmp_path / "r.jsonl"))
    try:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        fake_status(main, 1, space=main.watchdog.space, host=main.host, pid=gone.pid)
        problem = watch_until_problem(main, seconds=2)
        assert str(problem).startswith(f"rank 1 (pid {gone.pid} on {main.host}) ended without finishing")
    finally:
        main.close()


def test_a_rank_that_never_reports_is_named_after_the_timeout(tmp_path):
    main = team(0, timeout=0.3)
    main.start(str(tmp_path / "r.jsonl"))
    try:
        assert str(watch_until_problem(main)).startswith("rank 1 has not reported for")
    finally:
        main.close()


def test_stopped_by_the_launcher_after_a_rank_died_names_that_rank(tmp_path):
    """torchrun sends SIGTERM to every rank when one dies: the interruption becomes the dead rank's error."""
    main = team(0, timeout=60)
    out = str(tmp_path / "r.jsonl")
    with pytest.raises(RankError, match="rank 1 failed: boom"):
        with main.session(out):
            fake_status(main, 1, state=FAILED, error="boom")
            raise KeyboardInterrupt
    # a plain interruption (Ctrl-C reaches every rank) stays one
    with pytest.raises(KeyboardInterrupt):
        with main.session(out):
            fake_status(main, 1, state="interrupted")
            raise KeyboardInterrupt


def test_another_rank_leaves_the_message_to_rank_0(tmp_path):
    out = str(tmp_path / "r.jsonl")
    other = team(1, timeout=60)
    other.start(out)
    try:
        fake_status(
            other,
            0,
            state=FAILED,
            error="another kosmos run is writing r.jsonl",
            space=other.watchdog.space,
            pid=os.getpid(),
        )
        problem = watch_until_problem(other)
        assert problem.rank == 0 and problem.quiet  # rank 0 said it already
    finally:
        other.close()


def test_each_rank_gets_its_own_device(monkeypatch):
    from kosmos_cli.run import ranks as distributed

    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setattr(distributed, "_team", new_team(3, 8, 3, "cuda:3", "test"))
    assert current_team().device_for("auto") == "cuda:3" and current_team().device_for("cuda") == "cuda:3"
    assert current_team().device_for("cpu") == "cpu"
    assert current_team().device_for("cuda:0") == "cuda:0"  # asked for by name: kept


def test_rank_0_shows_the_work_of_every_rank(tmp_path):
    class Bar(Progress):
        def advance(self, done, failed, skipped):
            self.shown = (done, failed, skipped)

    main, bar = team(0), Bar()
    main.start(str(tmp_path / "r.jsonl"))
    try:
        fake_status(main, 1, done=5, failed=1, skipped=2)
        main.watch()
        main.progress(bar).advance(3, 0, 1)
        assert bar.shown == (8, 1, 3)
    finally:
        main.close()
    other = team(1)
    assert other.progress(bar).inner is None  # the other ranks show nothing
