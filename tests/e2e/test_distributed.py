"""Several processes, one result: real CPU ranks started by accelerate launch and torchrun (rank 0 owns the output,
the others answer their shares over a gloo group: run/ranks/), and the team's parts without a launch."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from kosmos_cli import find, ground, read_records
from kosmos_cli.errors import Interrupted, RankError, UsageError
from kosmos_cli.run.ranks import Solo, device_for, stall_timeout
from kosmos_cli.run.ranks import team as current_team
from kosmos_cli.run.ranks.team import Peer, Team, _rounds
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
    full_env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
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
    assert sorted(os.listdir(tmp_path)) == ["one.parquet", "two.parquet"]  # no lock, no parts left

    three = tmp_path / "three"  # a folder: a Parquet dataset, each rank's batches staged, folded in by rank 0
    code, _, stderr = finish(
        launch("torchrun", ["ground", *photos, "--out", f"{three}/", "-b", "2", *model_args(tiny_model)])
    )
    assert code == 0, stderr
    assert comparable(read_records(f"{three}/")) == comparable(read_records(str(one)))
    assert [n.endswith(".parquet") for n in os.listdir(three)] == [True]


@pytest.mark.slow
def test_two_ranks_write_a_dataset_in_a_bucket(tiny_model, tiny_engine, photos, tmp_path):
    """Only rank 0 touches the output, so a dataset folder in a bucket (a moto S3 server here) takes several
    processes: every image once, as one process writes it, and nothing but parts in the bucket."""
    s3fs = pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        env["AWS_ENDPOINT_URL_S3"] = f"http://{host}:{port}"
        fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=env["AWS_ENDPOINT_URL_S3"])
        fs.mkdir("ranks")
        one = tmp_path / "one.parquet"
        ground(photos, str(one), engine=tiny_engine, batch_size=2)
        args = ["ground", *photos, "--out", "s3://ranks/results/", "-b", "2", *model_args(tiny_model)]
        code, _, stderr = finish(launch("torchrun", args, env=env))
        assert code == 0, stderr
        assert "kosmos ground rank 1: 3 done" in stderr
        fs.invalidate_cache()
        names = [p.rsplit("/", 1)[1] for p in fs.find("ranks/results")]
        assert len(names) == 1 and names[0].startswith("part-") and names[0].endswith(".parquet"), names
        local = tmp_path / "copy"
        local.mkdir()
        fs.get(f"ranks/results/{names[0]}", str(local / names[0]))
        assert comparable(read_records(f"{local}/")) == comparable(read_records(str(one)))
    finally:
        server.stop()


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
    assert not os.path.exists(f"{out}.parts")


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
    """Rank 1 hangs after its first batch, alive: rank 0 finishes its share, waits KOSMOS_STALL_TIMEOUT seconds for
    rank 1's answer (the group's timeout), says so in one line, and the launch ends."""
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


def test_loading_a_model_is_never_taken_for_a_hang(tiny_model, tiny_engine, photos, tmp_path):
    """Rank 0 takes longer to load its model than KOSMOS_STALL_TIMEOUT: the others wait for it (a barrier with
    torch's own timeout), and the run finishes."""
    out = tmp_path / "r.jsonl"
    code, _, stderr = finish(
        launch(
            "torchrun",
            ["ground", *photos, "--out", str(out), "-b", "2", *model_args(tiny_model)],
            script=os.path.join(HERE, "rank_crash.py"),
            env={"KOSMOS_TEST_SLOW_LOAD_RANK": "0", "KOSMOS_STALL_TIMEOUT": "5"},
        )
    )
    assert code == 0, stderr
    assert sorted(comparable(read_records(str(out)))) == photos


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


TEARDOWN = """
import os
import sys
import torch.distributed as dist
from kosmos_cli import ground, read_records

model, photos, out = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
args = dict(model=model, max_new_tokens=12, device="auto", batch_size=2)
for n in (1, 2):  # a run joins the launch and tears every group down after; the next one joins afresh
    ground(photos, f"{out}{n}.jsonl", **args)
    assert not dist.is_initialized(), "a group is left after run %d" % n
dist.init_process_group("gloo")  # a script's own group: kosmos makes one of its own beside it, and removes only that
ground(photos, f"{out}3.jsonl", **args)
assert dist.is_initialized() and list(dist.distributed_c10d._world.pg_map) == [dist.group.WORLD]
dist.destroy_process_group()
print("rank", os.environ["RANK"], "ok")
"""


def test_every_group_is_torn_down_after_a_run(tiny_model, photos, tmp_path):
    """The API run twice under torchrun, then once more beside a group of the caller's own: each run leaves no
    process group of its own behind (with CUDA, no NCCL communicator is left open either: the ranks' objects go
    over gloo), and a group the caller made stays theirs."""
    script = tmp_path / "runs.py"
    script.write_text(TEARDOWN)
    code, stdout, stderr = finish(
        launch("torchrun", [tiny_model, *photos[:3], str(tmp_path / "r")], script=str(script))
    )
    assert code == 0, stderr
    assert sorted(line for line in stdout.splitlines() if line.endswith(" ok")) == ["rank 0 ok", "rank 1 ok"], stdout
    for n in (1, 2, 3):
        assert sorted(comparable(read_records(str(tmp_path / f"r{n}.jsonl")))) == photos[:3]


# -- the team, without launching ------------------------------------------------------------------------
def test_one_process_has_no_team(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with current_team() as alone:
        assert isinstance(alone, Solo) and alone.solo and alone.merged
    assert device_for("auto") == "auto" and device_for("cuda:1") == "cuda:1"
    monkeypatch.setenv("WORLD_SIZE", "1")
    with current_team() as alone:
        assert isinstance(alone, Solo)


def test_each_rank_gets_its_own_device(monkeypatch):
    import torch

    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_for("auto") == "cuda:3" and device_for("cuda") == "cuda:3"
    assert device_for("cpu") == "cpu"
    assert device_for("cuda:0") == "cuda:0"  # asked for by name: kept
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_for("auto") == "cpu"


def test_the_stall_timeout_must_be_a_number(monkeypatch):
    monkeypatch.setenv("KOSMOS_STALL_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="KOSMOS_STALL_TIMEOUT='soon': give a number of seconds"):
        stall_timeout()
    monkeypatch.setenv("KOSMOS_STALL_TIMEOUT", "0")
    assert stall_timeout() == 0  # never
    monkeypatch.delenv("KOSMOS_STALL_TIMEOUT")
    assert stall_timeout() == 1800


def test_each_pending_image_goes_to_one_rank_and_a_shard_goes_whole():
    from kosmos_cli.inputs.listing import Item

    pending = [(Item(f"{i}.png"), [i]) for i in range(7)] + [(Item(f"s#{i}", group=5), [i]) for i in range(3)]
    rounds = list(_rounds(iter(pending), 2, 3))
    assert [[[item.path for item, _ in share] for share in shares] for shares in rounds] == [
        [["0.png", "2.png", "4.png"], ["1.png", "3.png"]],
        [["6.png"], ["5.png", "s#0", "s#1"]],  # shard 5: rank 1's
        [[], ["s#2"]],
    ]


def gone_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def two(rank):
    """A team of 2 as rank `rank` sees it, rank 1 a process of this machine that has ended; no group."""
    me = Peer.me(rank)
    ended = Peer(1, gone_pid(), me.host, me.space)
    return Team(rank, 2, None, [Peer.me(0), ended] if rank == 0 else [Peer(0, os.getpid(), "here", "elsewhere"), me], 5)


def test_a_rank_whose_process_is_gone_is_seen_gone():
    team = two(0)
    assert team.peers[1].gone() and not team.peers[0].gone()
    assert not Peer(1, 1, "elsewhere", "another machine").gone()  # cannot be looked up from here: not taken for gone
    problem = team.peers[1].ended()
    assert str(problem) == (
        f"rank 1 (pid {team.peers[1].pid} on {team.peers[1].host}) ended without finishing: see its messages; "
        "run the same command again to finish the rest"
    )
    assert problem.rank == 1 and not problem.quiet


def test_stopped_by_the_launcher_after_a_rank_died_names_that_rank():
    """torchrun sends SIGTERM to every rank when one dies: rank 0's interruption becomes that rank's error."""
    team = two(0)
    with pytest.raises(RankError, match="rank 1 .* ended without finishing"):
        with team.stopping():
            raise Interrupted(signal.SIGTERM)
    # Ctrl-C reaches every rank: a plain interruption stays one
    with pytest.raises(KeyboardInterrupt) as stopped:
        with team.stopping():
            raise KeyboardInterrupt
    assert not isinstance(stopped.value, RankError)


def test_another_rank_leaves_the_message_to_rank_0():
    team = two(1)
    with pytest.raises(Interrupted) as stopped:
        with team.stopping():
            raise Interrupted(signal.SIGTERM)
    assert stopped.value.quiet and stopped.value.signum == signal.SIGTERM
    with pytest.raises(UsageError) as refused:
        with team.stopping():
            raise UsageError("the same on every rank")
    assert refused.value.quiet  # rank 0 says it


def test_an_exchange_that_fails_names_the_rank_and_why():
    """What gloo says (a timeout; a connection its peer closed) becomes one line naming the rank."""
    main = two(0)
    hung = main._lost(1, RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for recv"))
    assert str(hung).startswith(f"rank 1 on {main.peers[1].host} has answered nothing for 5s although it is still")
    assert "looks hung" in str(hung) and "KOSMOS_STALL_TIMEOUT" in str(hung) and hung.rank == 1 and not hung.quiet
    closed = main._lost(1, RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1"))
    assert "rank 1 (pid" in str(closed) and "ended without finishing" in str(closed) and not closed.quiet
    # rank 0 gone on this machine: it said why, or torchrun says how it ended; on another machine, say it
    here = Team(1, 2, None, [Peer.me(0), Peer.me(1)], 5)._lost(0, RuntimeError("Connection closed by peer"))
    assert here.rank == 0 and here.quiet
    elsewhere = two(1)._lost(0, RuntimeError("Connection closed by peer"))
    assert str(elsewhere).startswith("rank 0 (pid") and not elsewhere.quiet


def test_a_barrier_that_times_out_says_not_every_process_was_ready(monkeypatch):
    """Waiting for every model to load has torch's own timeout, and its message is not the stall's."""
    import torch.distributed as dist

    def timed_out(group=None):
        raise RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 1800000ms for recv")

    monkeypatch.setattr(dist, "barrier", timed_out)
    with pytest.raises(RankError, match="not every process of this launch was ready .* within 30 minutes"):
        two(0).barrier()
