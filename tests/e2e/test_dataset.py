"""An --out that names a folder: the results as a Parquet dataset (output/dataset.py, output/dataset_folder.py).

First the store on records made by hand (no model): parts, resume, replaced records, --prune, --overwrite, the
lock, whose folder it is, what a kill leaves, one schema for every part, and DuckDB, polars and pyarrow.dataset
reading it. Then runs of the shapes model: the same command twice, a kill and a rerun, other settings.
The same in a bucket is in test_remote_fs.py.
"""

import dataclasses
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kosmos_cli import draw, ground
from kosmos_cli.errors import LockedError, OutputError, UsageError
from kosmos_cli.output.dataset import DatasetStore
from kosmos_cli.output.formats import DATASET, check_out, detect_format, names_folder
from kosmos_cli.output.reader import read_records
from kosmos_cli.output.store import Store
from kosmos_cli.run.ranks import Solo
from kosmos_cli.tasks import FindRecord, Ground, GroundRecord
from kosmos_cli.tasks.records import Entity
from tests.helpers import SHAPES_MODEL, killed_after, kosmos, kosmos_process, make_images, one_error_line


def rec(path, caption="a cat", status="ok", model="m", **extra):
    r = GroundRecord(
        path=path,
        width=32,
        height=32,
        caption=caption,
        entities=[Entity("a cat", 0, 5, [[0.1, 0.2, 0.5, 0.6]], [[3, 6, 16, 19]])],
        prompt="<grounding> An image of",
        model=model,
        decoding="greedy",
        file_size=10,
        file_mtime=1.5,
        extra=extra,
    )
    return dataclasses.replace(r, status="error", error="boom") if status != "ok" else r


def run(out, *records, overwrite=False, present=None, task="ground"):
    """One run of the store on `out` writing `records` (a complete pass over `present` when given)."""
    store = DatasetStore(str(out), task)
    with store.open(Solo(), overwrite=overwrite) as output:
        output.write(list(records))
        if present is not None:
            output.complete({Ground.key({"path": p}, store.folder()) for p in present})
    return store


def parts(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".parquet"))


def rows(folder):
    return list(read_records(str(folder) + "/"))


def captions(folder):
    return sorted((r["path"], r["caption"]) for r in rows(folder))


# -- what names a dataset ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "out, folder",
    [
        ("r.parquet", False),
        ("-", False),
        ("out/", True),
        ("s3://bucket/out/", True),
        ("s3://bucket/out", True),
        ("s3://bucket/r.parquet", False),
        ("https://example.com/out/", True),
    ],
)
def test_what_names_a_folder(out, folder):
    assert names_folder(out) is folder


def test_an_existing_folder_is_a_dataset_and_takes_no_jsonl(tmp_path):
    assert detect_format(str(tmp_path)) == detect_format(str(tmp_path), "parquet") == DATASET
    with pytest.raises(UsageError, match="names a folder, which kosmos writes as a Parquet dataset"):
        detect_format(str(tmp_path), "jsonl")


@pytest.mark.parametrize(
    "out, message",
    [
        ("s3://bucket/r.parquet", "a bucket takes results as a Parquet dataset, not as one file; name a folder"),
        ("https://example.com/r.jsonl", "outputs are written to a local or shared-filesystem path"),
        ("https://example.com/out/", "outputs are written to a local or shared-filesystem path"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused(out, message):
    with pytest.raises(UsageError, match=message):
        check_out(out)


# -- writing, reading back, resuming --------------------------------------------------------------------------
def test_a_run_writes_parts_with_the_columns_of_a_single_parquet_output(tmp_path):
    out = tmp_path / "out"
    run(out, rec("a.png", label="x"), rec("b.png", label="y", status="error"))
    assert sorted(os.listdir(out)) == parts(out) and len(parts(out)) == 1  # no lock, nothing hidden left
    single = Store(str(tmp_path / "r.parquet"), "parquet", "ground")
    with single.open(Solo()) as output:
        output.write([rec("a.png", label="x"), rec("b.png", label="y", status="error")])
    assert pq.read_schema(out / parts(out)[0]).equals(pq.read_schema(tmp_path / "r.parquet"), check_metadata=True)
    assert rows(out) == list(read_records(str(tmp_path / "r.parquet")))


def test_the_next_run_sees_what_is_recorded_and_its_parts_sort_after(tmp_path):
    out = tmp_path / "out"
    first = run(out, rec("a.png"))
    store = DatasetStore(str(out), "ground")
    with store.open(Solo()) as output:
        assert set(output.seen) == {Ground.key({"path": "a.png"}, store.folder())}
        assert store.recorded_keys() == output.seen
        output.write([rec("b.png")])
    assert store.stamp > first.stamp
    assert [r["path"] for r in rows(out)] == ["a.png", "b.png"] and len(parts(out)) == 2


def test_a_clock_gone_back_still_sorts_the_next_runs_parts_last(tmp_path):
    out = tmp_path / "out"
    run(out, rec("a.png", caption="old"))
    (name,) = parts(out)
    os.rename(out / name, out / name.replace("part-2", "part-9"))  # a part from far in the future
    run(out, rec("a.png", caption="new"))
    assert captions(out) == [("a.png", "new")] and parts(out)[-1].startswith("part-9")


# -- replaced records, --prune, --overwrite: parts rewritten whole ------------------------------------------------
def test_a_record_written_again_leaves_one_record_of_its_key(tmp_path):
    out = tmp_path / "out"
    run(out, rec("a.png", caption="old"), rec("b.png"))
    run(out, rec("a.png", caption="new", model="m2"))
    assert captions(out) == [("a.png", "new"), ("b.png", "a cat")]
    assert len(parts(out)) == 2  # the older part rewritten without the replaced record


def test_a_part_left_with_no_record_is_removed(tmp_path):
    out = tmp_path / "out"
    run(out, rec("a.png", caption="old"))
    run(out, rec("a.png", caption="new"))
    assert captions(out) == [("a.png", "new")] and len(parts(out)) == 1


def test_a_complete_pass_prunes_what_it_did_not_see(tmp_path):
    out = tmp_path / "out"
    run(out, rec("a.png"), rec("b.png"))
    run(out, rec("c.png"))
    run(out, present=["a.png", "c.png"])
    assert sorted(r["path"] for r in rows(out)) == ["a.png", "c.png"]
    run(out, present=["a.png"])
    assert [r["path"] for r in rows(out)] == ["a.png"] and len(parts(out)) == 1


def test_overwrite_removes_every_part_first(tmp_path):
    out = tmp_path / "out"
    run(out, rec("a.png"))
    run(out, rec("b.png"))
    (out / "notes.txt").write_text("mine")
    run(out, rec("c.png"), overwrite=True)
    assert [r["path"] for r in rows(out)] == ["c.png"] and len(parts(out)) == 1
    assert (out / "notes.txt").read_text() == "mine"


def test_an_error_never_replaces_an_ok_record(tmp_path):
    out = tmp_path / "out"
    run(out, rec("a.png"))
    run(out, rec("a.png", status="error"))
    assert [(r["path"], r["status"]) for r in rows(out)] == [("a.png", "ok")]


# -- one schema for every part --------------------------------------------------------------------------------------
def test_parts_whose_carried_columns_differ_are_given_one_schema(tmp_path):
    out = tmp_path / "out"
    run(out, rec("a.png", label=None, n=1))  # label: all nulls in this part
    run(out, rec("b.png", label="x", n=2.5, extra="e"))  # label: text; n: widened to float; a new column
    run(out, rec("c.png", label=3))  # label: an int after text, JSON text for every row
    schemas = {name: pq.read_schema(out / name) for name in parts(out)}
    first = next(iter(schemas.values()))
    assert all(s.equals(first, check_metadata=True) for s in schemas.values())
    got = {r["path"]: (r["label"], r["n"], r["extra"]) for r in rows(out)}
    assert got == {"a.png": (None, 1.0, None), "b.png": ('"x"', 2.5, "e"), "c.png": ("3", None, None)}


def test_duckdb_polars_and_pyarrow_dataset_read_it_as_one_table(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    import pyarrow.dataset as ds

    out = tmp_path / "out"
    run(out, rec("a.png", label="x"), rec("b.png", label=None))
    run(out, rec("c.png", label="z"), rec("a.png", caption="again", model="m2", label="x"))
    want = [("a.png", "again"), ("b.png", "a cat"), ("c.png", "a cat")]
    query = f"select path, caption from read_parquet('{out}/*.parquet') order by path"
    assert duckdb.sql(query).fetchall() == want
    for frame in (pl.read_parquet(f"{out}/*.parquet"), pl.read_parquet(f"{out}/")):
        assert sorted(zip(frame["path"], frame["caption"])) == want
    table = ds.dataset(str(out), format="parquet").to_table(columns=["path", "caption"])
    assert sorted(zip(*table.to_pydict().values())) == want


# -- the lock, and what a kill leaves ------------------------------------------------------------------------------
def test_a_second_run_on_a_local_dataset_is_refused_with_exit_75(tmp_path):
    out = tmp_path / "out"
    with DatasetStore(str(out), "ground").open(Solo()) as output:
        output.write([rec("a.png")])
        with pytest.raises(LockedError) as refused:
            DatasetStore(str(out) + "/", "ground").probe()
        assert refused.value.exit_code == 75 and f"(pid {os.getpid()}) is writing {out}/" in str(refused.value)
        assert sorted(os.listdir(out)) == [".kosmos-parts", ".kosmos.lock"]  # hidden: readers skip them
    assert sorted(os.listdir(out)) == parts(out)


def test_the_temporary_file_of_a_killed_write_is_removed_and_never_read(tmp_path):
    out = tmp_path / "out"
    run(out, rec("a.png"))
    (out / f".{parts(out)[0]}.4242.tmp").write_bytes(b"PAR1 half")
    assert [r["path"] for r in rows(out)] == ["a.png"]
    run(out, rec("b.png"))
    assert sorted(os.listdir(out)) == parts(out)


class Main(Solo):
    """A process of several, as the store sees it: `main` prepares and settles, once every process is `merged`."""

    solo = False

    def __init__(self, rank=0, merged=True):
        super().__init__(rank)
        self.main, self.merged = rank == 0, merged


def test_each_batch_is_staged_durably_and_folded_in_when_every_process_is_done(tmp_path):
    out = tmp_path / "out"
    with DatasetStore(str(out), "ground").open(Main()) as first:  # rank 0 prepares the dataset
        with DatasetStore(str(out), "ground", rank=1).open(Main(rank=1)) as second:  # then rank 1 does its share
            second.write([rec("b.png")])
            second.write([rec("c.png")])
        staged = sorted(os.listdir(out / ".kosmos-parts"))
        assert [name.split("-", 1)[1] for name in staged] == ["0001-00000000.parquet", "0001-00000001.parquet"]
        assert parts(out) == []  # rank 1 folds nothing
        assert len(DatasetStore(str(out), "ground").scan().seen) == 2  # staged records are recorded: resumed
        first.write([rec("a.png")])
    assert sorted(r["path"] for r in rows(out)) == ["a.png", "b.png", "c.png"]
    assert sorted(os.listdir(out)) == parts(out) and len(parts(out)) == 1


def test_staged_parts_a_killed_run_left_are_folded_in_by_the_next(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), DatasetStore(str(out), "ground").open(Main(merged=False)) as output:
        output.write([rec("a.png")])
        raise KeyboardInterrupt  # killed: never settled
    assert parts(out) == [] and os.listdir(out / ".kosmos-parts")
    store = run(out, rec("b.png"))
    assert sorted(r["path"] for r in rows(out)) == ["a.png", "b.png"] and sorted(os.listdir(out)) == parts(out)
    assert all(name.startswith(f"part-{store.stamp}-") for name in parts(out))


def test_staged_parts_of_another_task_are_refused(tmp_path):
    out = tmp_path / "out"
    find = FindRecord(path="a.png", phrase="a cat", boxes=[], boxes_px=[])
    with pytest.raises(KeyboardInterrupt), DatasetStore(str(out), "find").open(Main(merged=False)) as output:
        output.write([find])
        raise KeyboardInterrupt
    with pytest.raises(UsageError, match="holds kosmos find records"):
        run(out, rec("b.png"))


def test_records_written_twice_by_a_killed_settling_are_dropped_when_opened(tmp_path):
    out = tmp_path / "out"
    run(out, rec("a.png", caption="old"))
    store = DatasetStore(str(out), "ground")
    store.scan()
    store.write_part([rec("a.png", caption="new")], "killed")  # a later part; the older one never rewritten
    with DatasetStore(str(out), "ground").open(Solo()) as output:
        assert len(rows(out)) == 1  # deduplicated before the run goes on
        assert list(output.seen.values())[0].model == "m"
    assert captions(out) == [("a.png", "new")]


def test_a_part_written_again_under_its_name_replaces_it(tmp_path):
    out = tmp_path / "out"
    store = DatasetStore(str(out), "ground")
    store.scan()
    first = store.write_part([rec("a.png"), rec("b.png")], "block-7")
    again = store.write_part([rec("a.png"), rec("b.png")], "block-7")  # a retried task
    assert first == again and parts(out) == [first] and len(rows(out)) == 2


def test_ctrl_c_writes_what_is_buffered(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), DatasetStore(str(out), "ground").open(Solo()) as output:
        output.write([rec("a.png")])
        raise KeyboardInterrupt
    assert [r["path"] for r in rows(out)] == ["a.png"] and sorted(os.listdir(out)) == parts(out)


# -- whose folder ---------------------------------------------------------------------------------------------------
def test_a_folder_holding_parquet_that_kosmos_did_not_write_is_refused_and_left_as_it_was(tmp_path):
    out = tmp_path / "tables"
    out.mkdir()
    pq.write_table(pa.table({"path": ["a.png"], "status": ["ok"], "caption": ["x"]}), out / "mine.parquet")
    before = (out / "mine.parquet").read_bytes()
    for overwrite in (False, True):
        with pytest.raises(UsageError, match=r"not a results dataset of kosmos alone \(it holds mine.parquet, a file"):
            run(out, rec("a.png"), overwrite=overwrite)
    assert os.listdir(out) == ["mine.parquet"] and (out / "mine.parquet").read_bytes() == before


def _checksums(folder):
    import hashlib

    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in sorted(os.listdir(folder))}


@pytest.mark.parametrize("name", ["results.parquet", "backup-2026-11.parquet", "other-model.parquet", "Part-x.PARQUET"])
def test_a_parquet_file_kosmos_did_not_name_a_part_is_never_read_rewritten_or_removed(tmp_path, name):
    """Issue 27, item 1: a results file moved in, a user's copy of a part, another model's results: each is a file
    kosmos did not name as a part. Every kind of run refuses the folder in one line naming it, changing nothing."""
    out = tmp_path / "out"
    run(out, rec("a.png", status="error"), rec("b.png"))
    (part,) = parts(out)
    if name == "backup-2026-11.parquet":
        (out / name).write_bytes((out / part).read_bytes())  # a copy of the dataset's own part
    else:  # a kosmos results file of this task: the old results.parquet, or another model's
        single = Store(str(tmp_path / "single.parquet"), "parquet", "ground")
        with single.open(Solo()) as output:
            output.write([rec("a.png", model="other" if "other" in name else "m"), rec("c.png")])
        os.rename(tmp_path / "single.parquet", out / name)
    before = _checksums(out)
    for kind in ("plain", "retry_failed", "prune", "overwrite"):
        store = DatasetStore(str(out), "ground")
        with pytest.raises(UsageError) as refused:
            store.check(overwrite=kind == "overwrite")
        message = str(refused.value)
        assert f"it holds {name}, a file kosmos did not write as a part" in message and "\n" not in message
        assert "kosmos never reads, rewrites or removes it; move it out of the folder" in message
        with pytest.raises(UsageError, match=f"it holds {name}"):
            prune = [] if kind == "prune" else None
            run(out, rec("a.png", caption="again"), overwrite=kind == "overwrite", present=prune)
        assert _checksums(out) == before, kind
    assert [r["path"] for r in rows(out)] == ["a.png", "b.png"]  # readers read the parts only
    os.remove(out / name)
    run(out, rec("a.png", caption="again"))  # moved out: the dataset is the dataset again
    assert captions(out) == [("a.png", "again"), ("b.png", "a cat")]


def test_a_run_refuses_a_foreign_file_in_one_line_before_the_model_loads(tmp_path):
    out = tmp_path / "out"
    run(out, rec("a.png"))
    (out / "results.parquet").write_bytes((out / parts(out)[0]).read_bytes())
    before = _checksums(out)
    photo = tmp_path / "p.png"
    make_images(str(tmp_path / "photos"), sizes=[(32, 32)])
    photo = next((tmp_path / "photos").iterdir())
    for flags in ([], ["--retry-failed"], ["--prune"], ["--overwrite"]):
        result = kosmos("ground", str(photo), "--out", f"{out}/", "--model", "/no/such/model", *flags)
        one_error_line(result, 2, f"--out {out}/ is not a results dataset of kosmos alone (it holds results.parquet")
        assert _checksums(out) == before


def test_parts_are_read_in_the_order_of_their_runs_never_by_a_name_sorting_later(tmp_path):
    out = tmp_path / "out"
    run(out, rec("a.png", caption="old"))
    (old,) = parts(out)
    run(out, rec("a.png", caption="new", model="m2"))
    assert captions(out) == [("a.png", "new")]
    # an older run's part whose writer sorts after the newer run's: still older (stamp first, then writer)
    store = DatasetStore(str(out), "ground")
    store.stamp = old.split("-")[1]
    store.write_part([rec("a.png", caption="older")], "zzzz")
    assert DatasetStore(str(out), "ground").parts()[0] == f"part-{store.stamp}-zzzz.parquet"
    assert [r["caption"] for r in rows(out)] == ["older", "new"]  # read oldest run first: the newer record wins
    run(out)
    assert captions(out) == [("a.png", "new")]


# -- item 7: what is in the staging folder, and a damaged part ---------------------------------------------------------
def test_a_foreign_parquet_in_the_staging_folder_is_named_in_one_line(tmp_path):
    out = tmp_path / "out"
    run(out, rec("a.png"))
    (out / ".kosmos-parts").mkdir()
    stage = out / ".kosmos-parts" / "20261207T000000000000-0000-00000000.parquet"
    pq.write_table(pa.table({"name": ["x"], "value": [1]}), stage)
    before = _checksums(out / ".kosmos-parts")
    with pytest.raises(UsageError, match=r"\.kosmos-parts/20261207T000000000000-0000-00000000.parquet is not a batch"):
        run(out, rec("b.png"))
    other = out / ".kosmos-parts" / "mine.parquet"
    os.rename(stage, other)
    with pytest.raises(UsageError, match=r"\.kosmos-parts/mine.parquet is not a batch kosmos staged"):
        run(out, rec("b.png"))
    assert _checksums(out / ".kosmos-parts") == {"mine.parquet": before[stage.name]}
    result = kosmos("ground", str(tmp_path), "--out", f"{out}/", "--model", "/no/such/model")
    one_error_line(result, 2, ".kosmos-parts/mine.parquet is not a batch kosmos staged")


@pytest.mark.parametrize("damage", ["footer", "pages"])
def test_a_damaged_part_is_named_not_called_a_foreign_dataset(tmp_path, damage):
    out = tmp_path / "out"
    run(out, rec("a.png"))
    run(out, rec("b.png"))
    name = parts(out)[0]
    data = (out / name).read_bytes()
    if damage == "footer":
        (out / name).write_bytes(data[: len(data) // 2])
    else:  # the footer (schema) reads, the pages do not
        (out / name).write_bytes(b"PAR1" + bytes(len(data) // 2 - 4) + data[len(data) // 2 :])
    for call in (lambda: run(out, rec("c.png")), lambda: DatasetStore(str(out), "ground").scan()):
        with pytest.raises(OutputError) as refused:
            call()
        message = str(refused.value)
        assert f"{out}/{name} cannot be read: it is damaged (" in message and "not a results dataset" not in message
        assert "restore it from a copy, or move it out of" in message
    result = kosmos("ground", str(tmp_path), "--out", f"{out}/", "--model", "/no/such/model")
    one_error_line(result, 1, f"{name} cannot be read: it is damaged")
    exported = kosmos("export", f"{out}/", "--to", "coco", str(tmp_path / "coco"))  # a reader of the dataset too
    one_error_line(exported, 2, f"{out}/{name}")


def test_another_tasks_dataset_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    run(out, FindRecord(path="a.png", phrase="a cat", boxes=[], boxes_px=[]), task="find")
    with pytest.raises(UsageError, match="holds kosmos find records: a ground run would mix its own in"):
        run(out, rec("b.png"))
    run(out, rec("b.png"), overwrite=True)
    assert [(r["task"], r["path"]) for r in rows(out)] == [("ground", "b.png")]


def test_other_files_in_the_folder_are_never_touched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    run(out, rec("a.png"))
    assert sorted(os.listdir(out)) == sorted(["README.md", *parts(out)])


def test_a_file_named_as_a_folder_is_refused(tmp_path):
    (tmp_path / "r.parquet").write_text("x")
    with pytest.raises(UsageError, match="names a folder .* is a file: leave off the /"):
        DatasetStore(str(tmp_path / "r.parquet") + "/", "ground").check()


def test_an_input_folder_is_not_an_output(tmp_path):
    with pytest.raises(UsageError, match="is also one of the inputs"):
        DatasetStore(str(tmp_path) + "/", "ground").check([str(tmp_path)])


def test_a_folder_that_cannot_be_written_fails_before_the_model_loads(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="Not a directory"):
        DatasetStore(str(tmp_path / "file" / "out") + "/", "ground").probe()
    DatasetStore(str(tmp_path / "new" / "out") + "/", "ground").probe()
    assert sorted(os.listdir(tmp_path)) == ["file"]  # probing creates nothing


# -- runs of the shapes model ---------------------------------------------------------------------------------------
@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    make_images(str(folder), sizes=[(48 + 8 * i, 48) for i in range(6)])
    return folder


def test_the_same_command_twice_does_nothing_the_second_time(shapes_engine, photos, tmp_path):
    out = str(tmp_path / "out") + "/"
    first = ground([str(photos)], out, engine=shapes_engine, batch_size=2)
    again = ground([str(photos)], out, engine=shapes_engine, batch_size=2)
    assert (first.done, again.done, again.skipped) == (6, 0, 6)
    assert sorted(r["path"] for r in rows(tmp_path / "out")) == sorted(str(p) for p in photos.iterdir())
    assert sorted(os.listdir(tmp_path / "out")) == parts(tmp_path / "out")
    drawn = draw(out, str(tmp_path / "drawn"))
    assert (drawn.drawn, drawn.failed) == (6, 0)


def test_other_settings_redo_and_replace_and_retry_failed_redoes_errors(shapes_engine, photos, tmp_path):
    out = str(tmp_path / "out") + "/"
    (photos / "broken.png").write_bytes(b"not an image")
    ground([str(photos)], out, engine=shapes_engine)
    again = ground([str(photos)], out, engine=shapes_engine, prompt="<grounding> A photo of")
    assert (again.done, again.failed, again.redone) == (6, 1, 7)
    got = rows(tmp_path / "out")
    assert len(got) == 7 and {r["prompt"] for r in got} == {"<grounding> A photo of"}
    os.remove(photos / "broken.png")
    (photos / "broken.png").write_bytes((photos / "img_00.png").read_bytes())
    retried = ground([str(photos)], out, engine=shapes_engine, prompt="<grounding> A photo of", retry_failed=True)
    assert (retried.done, retried.skipped) == (1, 6)
    assert sorted((r["path"], r["status"]) for r in rows(tmp_path / "out")) == sorted(
        (str(p), "ok") for p in photos.iterdir()
    )


def test_a_killed_run_and_its_rerun_record_every_image_exactly_once(photos, tmp_path):
    out = str(tmp_path / "out") + "/"
    args = ["ground", str(photos), "--out", out, "--model", SHAPES_MODEL, "--max-new-tokens", "24", "-b", "2"]
    killed_after([*args, "--workers", "1"], tmp_path)
    left = len(DatasetStore(out, "ground").scan().seen)  # staged, batch by batch
    assert 4 <= left < 6 and os.path.exists(tmp_path / "out" / ".kosmos.lock")
    rerun = kosmos_process(args)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{6 - left} done, 0 failed, {left} skipped" in rerun.stderr
    paths = [r["path"] for r in rows(tmp_path / "out")]
    assert sorted(paths) == sorted(str(p) for p in photos.iterdir())
    assert sorted(os.listdir(tmp_path / "out")) == parts(tmp_path / "out")


# -- kosmos import: a results file into a dataset, as parts kosmos names ---------------------------------------------
def _single(path, *records, task="ground"):
    fmt = "jsonl" if str(path).endswith(".jsonl") else "parquet"
    with Store(str(path), fmt, task).open(Solo()) as output:
        output.write(list(records))


@pytest.mark.parametrize("ext", ["parquet", "jsonl"])
def test_import_adds_a_results_file_as_parts_older_than_the_datasets_own_and_leaves_it(tmp_path, ext):
    from kosmos_cli.api import import_results

    out = tmp_path / "out"
    run(out, rec("a.png", caption="the dataset's"))
    source = tmp_path / f"results.{ext}"
    _single(source, rec("a.png", caption="the file's"), rec("b.png", status="error"), rec("c.png", label="x"))
    before = source.read_bytes()
    done = import_results(str(source), str(out))
    assert (done.added, done.dropped, done.inside) == (2, 1, False)
    assert "2 records of" in done.line() and "1 left out" in done.line() and "is left as it was" in done.line()
    assert source.read_bytes() == before
    names = parts(out)
    assert len(names) == 2 and "-import-" in DatasetStore(str(out), "ground").parts()[0]  # the older
    got = {r["path"]: (r["caption"], r["status"], r["label"]) for r in rows(out)}
    assert got == {
        "a.png": ("the dataset's", "ok", None),
        "b.png": ("a cat", "error", None),
        "c.png": ("a cat", "ok", "x"),
    }
    schemas = [pq.read_schema(out / n) for n in names]
    assert all(s.equals(schemas[0], check_metadata=True) for s in schemas)  # one schema for every part
    run(out, rec("d.png"))  # the dataset goes on as any
    assert sorted(r["path"] for r in rows(out)) == ["a.png", "b.png", "c.png", "d.png"]


def test_a_results_file_moved_into_the_dataset_is_imported_and_retry_failed_then_wins(shapes_engine, photos, tmp_path):
    """Issue 27, item 1: `mv results.parquet results/` then --retry-failed gave the old error record on every rerun.
    Now the run refuses the folder naming the file; `kosmos import` adds its records as parts; once the file is moved
    out, --retry-failed redoes the failed image and its new ok record is what the dataset says."""
    (photos / "broken.png").write_bytes(b"not an image")
    ground([str(photos)], str(tmp_path / "results.parquet"), engine=shapes_engine)
    out = tmp_path / "results"
    out.mkdir()
    os.rename(tmp_path / "results.parquet", out / "results.parquet")
    before = _checksums(out)
    with pytest.raises(UsageError, match="it holds results.parquet, a file kosmos did not write as a part"):
        ground([str(photos)], f"{out}/", engine=shapes_engine, retry_failed=True)
    assert _checksums(out) == before
    result = kosmos("import", str(out / "results.parquet"), f"{out}/")
    assert result.exit_code == 0, result.output
    assert f"7 records of {out}/results.parquet added to {out}/" in result.stderr
    assert f"now move {out}/results.parquet out of the folder" in result.stderr and result.stdout == ""
    assert _checksums(out)["results.parquet"] == before["results.parquet"]
    os.rename(out / "results.parquet", tmp_path / "results.parquet")
    os.remove(photos / "broken.png")
    (photos / "broken.png").write_bytes((photos / "img_00.png").read_bytes())
    retried = ground([str(photos)], f"{out}/", engine=shapes_engine, retry_failed=True)
    assert (retried.done, retried.skipped) == (1, 6)
    statuses = {r["path"]: r["status"] for r in rows(out)}
    assert len(rows(out)) == 7 and set(statuses.values()) == {"ok"}
    assert ground([str(photos)], f"{out}/", engine=shapes_engine, retry_failed=True).done == 0  # and stays so


def test_import_refuses_what_is_not_a_results_file_of_the_datasets_task_in_one_line(tmp_path):
    out = tmp_path / "out"
    run(out, rec("a.png"))
    before = _checksums(out)
    found = tmp_path / "found.jsonl"
    _single(found, FindRecord(path="a.png", phrase="a cat", boxes=[], boxes_px=[]), task="find")
    mine = tmp_path / "mine.parquet"
    pq.write_table(pa.table({"path": ["a.png"], "status": ["ok"]}), mine)
    for source, says in [
        (found, "holds kosmos ground records: a find run would mix its own in"),
        (mine, "mine.parquet is not a results file of kosmos (its schema names no kosmos task)"),
        (tmp_path / "none.parquet", "results file not found:"),
        (out, "kosmos import reads one results file on this machine, not a folder"),
    ]:
        one_error_line(kosmos("import", str(source), f"{out}/"), 2, says)
        assert _checksums(out) == before


def test_import_writes_no_part_among_files_kosmos_did_not_write(tmp_path):
    """A folder of photos (no dataset in it) is no place for parts: refused, the folder as it was."""
    photos = tmp_path / "photos"
    make_images(str(photos))
    source = tmp_path / "r.jsonl"
    _single(source, rec(str(photos / "img_00.png")), task="ground")
    before = _checksums(photos)
    one_error_line(kosmos("import", str(source), f"{photos}/"), 2, "holds files and no dataset of kosmos")
    assert _checksums(photos) == before
    fresh = kosmos("import", str(source), f"{tmp_path / 'new'}/")  # a new folder: a new dataset
    assert fresh.exit_code == 0, fresh.output


def test_readers_read_a_datasets_parts_alone_and_a_folder_of_other_parts_whole(tmp_path):
    out = tmp_path / "out"
    run(out, rec("a.png"))
    (out / "results.parquet").write_bytes((out / parts(out)[0]).read_bytes())  # a copy: never read as a part
    assert [r["path"] for r in rows(out)] == ["a.png"]
    exported = kosmos("export", f"{out}/", "--to", "coco", str(tmp_path / "coco"))
    assert exported.exit_code == 0 and "1 images" in exported.stderr, exported.output
    plain = tmp_path / "r.parquet.parts"  # a file output's parts (or a cluster's): no dataset, read whole
    plain.mkdir()
    single = Store(str(tmp_path / "r.parquet"), "parquet", "ground")
    with single.open(Main(merged=False)) as output:
        output.write([rec("b.png")])
        output.write([rec("c.png")])
    assert sorted(os.listdir(plain)) == ["part-0000-00000000.parquet", "part-0000-00000001.parquet"]
    assert [r["path"] for r in rows(plain)] == ["b.png", "c.png"]
