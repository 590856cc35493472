"""README, "What kosmos guarantees": nothing the user owns is damaged, and every failure is one line.

Each refusal is checked through the command line with a model that cannot load (`--model /nonexistent/folder`):
the refusal, not the model's error, proves it came first.
"""

import hashlib
import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kosmos_cli import find, ground, refer
from kosmos_cli.errors import UsageError
from kosmos_cli.model.engine import Engine, GenerationOptions
from kosmos_cli.output.reader import read_records
from kosmos_cli.output.store import Store
from kosmos_cli.run.ranks import Solo
from kosmos_cli.tasks import FindRecord, Ground, GroundRecord, ReferRecord
from kosmos_cli.tasks.records import Entity
from tests.helpers import HERE, kosmos, one_error_line

NO_MODEL = "/nonexistent/folder"
LEGACY = os.path.join(HERE, "fixtures", "legacy-outputs")
RECORDS = {
    "ground": GroundRecord(
        path="a.png", caption="a cat", entities=[Entity("a cat", 0, 5, [[0, 0, 1, 1]], [[0, 0, 9, 9]])]
    ),
    "refer": ReferRecord(path="a.png", box_px=[1.0, 1.0, 5.0, 5.0], description="a cat"),
    "find": FindRecord(path="a.png", phrase="a cat", boxes=[[0, 0, 1, 1]], boxes_px=[[0, 0, 9, 9]]),
}
INTRUDERS = {  # a command line of each task on the images of `image_dir`
    "ground": lambda photos, out: ["ground", photos, "--out", out],
    "refer": lambda photos, out: ["refer", photos, "--box", "1,1,20,20", "--out", out],
    "find": lambda photos, out: ["find", photos, "a cat", "--out", out],
}


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def results(path, task):
    """A results file of `task` with one record, written as a run writes it."""
    fmt = "parquet" if str(path).endswith(".parquet") else "jsonl"
    store = Store(str(path), fmt, task)
    store.sink().write([RECORDS[task]])
    store.compact()
    return str(path)


# -- an output belongs to one task ------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("owner, intruder", [("ground", "refer"), ("find", "ground"), ("refer", "find")])
def test_a_run_of_another_task_is_refused_before_the_model_loads(image_dir, tmp_path, fmt, owner, intruder):
    out = results(tmp_path / f"r.{fmt}", owner)
    before = sha256(out)
    result = kosmos(*INTRUDERS[intruder](str(image_dir), out), model=NO_MODEL)
    one_error_line(
        result,
        2,
        f"--out {out} holds kosmos {owner} records: a {intruder} run would mix its own in; "
        "choose another --out, or pass --overwrite to replace them",
    )
    assert sha256(out) == before


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(LEGACY) if n.endswith((".jsonl", ".parquet"))))
def test_outputs_written_before_the_task_column_name_their_task(name):
    task, fmt = name.split(".")
    assert Store(os.path.join(LEGACY, name), fmt, "ground").owner() == task


def test_a_library_run_with_an_engine_is_refused_too(tiny_engine, image_dir, tmp_path):
    out = results(tmp_path / "r.jsonl", "ground")
    before = sha256(out)
    with pytest.raises(UsageError, match="holds kosmos ground records: a find run"):
        find(image_dir, out, phrases=["a cat"], engine=tiny_engine)
    with pytest.raises(UsageError, match="holds kosmos ground records: a refer run"):  # the store says it too
        with Store(out, "jsonl", "refer").open(Solo()):
            pass
    assert sha256(out) == before


def test_overwrite_replaces_another_tasks_output(tiny_engine, image_dir, tmp_path):
    out = results(tmp_path / "r.jsonl", "ground")
    summary = refer(image_dir, out, boxes=["1,1,20,20"], engine=tiny_engine, overwrite=True)
    assert summary.done == 4
    assert {json.loads(line)["task"] for line in open(out)} == {"refer"}


# -- nothing but an output of ours is touched ---------------------------------------------------------------
def _text(path):
    path.write_text("my notes\nthe last line")


def _image(path):
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 0, 0)).save(path, format="PNG")


def _parquet_named_jsonl(path):
    results(path.with_suffix(".parquet"), "ground")
    os.rename(path.with_suffix(".parquet"), path)


def _foreign_parquet(path):
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), path)


def _manifest(path):
    path.write_text('{"path": "a.png", "label": "cat"}\n')


def _unknown_task(path):
    path.write_text('{"path": "a.png", "status": "ok", "task": "caption"}\n')


def _folder(path):
    path.mkdir()


def _img2dataset_meta(path):  # what img2dataset writes beside its shards: path, status and caption, and more
    rows = [
        {"path": f"{i:05d}.jpg", "status": "success", "caption": "a cat", "url": f"http://x/{i}.jpg"} for i in (1, 2)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _labelled_table(path):  # a user's own table whose columns happen to have our names
    pq.write_table(pa.table({"path": ["a.png", "b.png"], "status": ["ok", "ok"], "caption": ["a cat", "x"]}), path)


FOREIGN = {  # name, how it is made, why it is not ours
    "text": ("notes.jsonl", _text, "its first line is not a JSON record"),
    "image": ("victim.png", _image, "its first line is not a JSON record"),
    "parquet named .jsonl": ("r.jsonl", _parquet_named_jsonl, "it is Parquet, not JSONL"),
    "foreign parquet": ("table.parquet", _foreign_parquet, "its schema names no kosmos task"),
    "jsonl named .parquet": (
        "r.parquet",
        lambda p: p.write_text(json.dumps(RECORDS["ground"].to_dict()) + "\n"),
        "it is not Parquet",
    ),
    "manifest": ("list.jsonl", _manifest, "its first row is not a kosmos record: no 'path' and 'status'"),
    "unknown task": ("other.jsonl", _unknown_task, "its first row is a record of no kosmos task"),
    "img2dataset meta": ("meta.jsonl", _img2dataset_meta, "its first row is not a record kosmos writes"),
    "table with our column names": ("labels.parquet", _labelled_table, "its schema names no kosmos task"),
}


@pytest.mark.parametrize("kind", FOREIGN)
def test_a_file_that_is_not_ours_is_refused_and_left_as_it_was(image_dir, tmp_path, kind):
    name, make, why = FOREIGN[kind]
    out = tmp_path / name
    make(out)
    before = sha256(out) if out.is_file() else None
    fmt = "parquet" if name.endswith(".parquet") else "jsonl"
    result = kosmos("ground", str(image_dir), "--out", str(out), "--format", fmt, model=NO_MODEL)
    one_error_line(
        result,
        2,
        f"--out {out} is not a results file of kosmos ({why}): kosmos writes only over its "
        "own results; choose another --out",
    )
    assert (sha256(out) if out.is_file() else None) == before
    assert not os.path.exists(f"{out}.lock")


def test_a_folder_is_not_written_as_jsonl(image_dir, tmp_path):
    out = tmp_path / "dir.jsonl"
    _folder(out)
    result = kosmos("ground", str(image_dir), "--out", str(out), "--format", "jsonl", model=NO_MODEL)
    one_error_line(
        result, 2, f"{out} names a folder, which kosmos writes as a Parquet dataset: leave --format jsonl off"
    )
    assert os.listdir(out) == []


@pytest.mark.parametrize("kind", ["img2dataset meta", "table with our column names"])
@pytest.mark.parametrize("flag", ["--overwrite", "--prune"])
def test_no_flag_makes_a_file_that_is_not_ours_ours(image_dir, tmp_path, kind, flag):
    name, make, why = FOREIGN[kind]
    out = tmp_path / name
    make(out)
    before = sha256(out)
    result = kosmos("ground", str(image_dir), "--out", str(out), flag, model=NO_MODEL)
    one_error_line(result, 2, f"--out {out} is not a results file of kosmos ({why})")
    assert sha256(out) == before and sorted(os.listdir(tmp_path)) == sorted(["photos", name])


@pytest.mark.parametrize("kind", ["text", "parquet named .jsonl", "img2dataset meta", "table with our column names"])
def test_overwrite_does_not_replace_a_file_that_is_not_ours(tiny_engine, image_dir, tmp_path, kind):
    name, make, _ = FOREIGN[kind]
    out = tmp_path / name
    make(out)
    before = sha256(out)
    with pytest.raises(UsageError, match="is not a results file of kosmos"):
        ground(image_dir, str(out), engine=tiny_engine, overwrite=True)
    assert sha256(out) == before


def test_an_output_that_is_one_of_the_inputs_is_refused(image_dir, tmp_path):
    out = results(tmp_path / "done.jsonl", "ground")  # ours, and named as a manifest too
    before = sha256(out)
    result = kosmos("ground", out, "--out", out, model=NO_MODEL)
    one_error_line(
        result, 2, f"--out {out} is also one of the inputs: writing there would destroy it; choose another --out"
    )
    image = str(next(image_dir.iterdir()))
    result = kosmos("ground", str(image_dir), image, "--out", image, "--format", "jsonl", model=NO_MODEL)
    one_error_line(result, 2, "is also one of the inputs")
    assert sha256(out) == before


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_an_empty_file_is_an_empty_output(tiny_engine, image_dir, tmp_path, content):
    out = tmp_path / "r.jsonl"
    out.write_text(content)
    assert Store(str(out), "jsonl", "ground").owner() is None
    assert ground(image_dir, str(out), engine=tiny_engine).done == 4


def test_a_first_record_cut_short_by_a_crash_is_ours(tiny_engine, image_dir, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text(json.dumps(RECORDS["ground"].to_dict())[:40])
    assert ground(image_dir, str(out), engine=tiny_engine).done == 4
    assert len(out.read_text().splitlines()) == 4


def test_parts_left_by_another_task_are_refused(image_dir, tmp_path):
    out = tmp_path / "r.parquet"
    Store(str(out), "parquet", "find").sink(direct=False).write([RECORDS["find"]])  # killed before its merge
    result = kosmos("ground", str(image_dir), "--out", str(out), model=NO_MODEL)
    one_error_line(result, 2, "holds kosmos find records")
    shutil.rmtree(f"{out}.parts")


# -- a busy or unwritable output fails before the model loads ---------------------------------------------------
def test_a_locked_output_exits_75_before_the_model_loads(image_dir, tmp_path):
    out = tmp_path / "r.jsonl"
    holder = Store(str(out), "jsonl", "ground")
    holder.lock()
    try:
        result = kosmos("ground", str(image_dir), "--out", str(out), model=NO_MODEL)
        one_error_line(
            result,
            75,
            f"another kosmos run (pid {os.getpid()}) is writing {out}: let it finish, or pass --wait to wait for it",
        )
        result = kosmos("ground", str(image_dir), "--out", str(out), "--wait", model=NO_MODEL)
        one_error_line(result, 1, f"model folder {NO_MODEL} does not exist")  # --wait: the lock is waited for, later
    finally:
        holder.unlock()
    assert not out.exists()


def test_an_output_folder_that_cannot_be_made_fails_before_the_model_loads(image_dir, tmp_path):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "sub" / "r.jsonl"
    result = kosmos("ground", str(image_dir), "--out", str(out), model=NO_MODEL)
    one_error_line(result, 1, f"cannot write {tmp_path / 'file'}: Not a directory")


def test_checking_the_output_creates_nothing(image_dir, tmp_path):
    out = tmp_path / "new" / "r.jsonl"
    result = kosmos("ground", str(image_dir), "--out", str(out), model=NO_MODEL)
    one_error_line(result, 1, f"model folder {NO_MODEL} does not exist")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_run_that_ends_leaves_only_its_output_beside_it(tiny_engine, image_dir, tmp_path, fmt):
    out = tmp_path / "out" / f"r.{fmt}"
    assert ground(image_dir, str(out), engine=tiny_engine).done == 4
    assert os.listdir(out.parent) == [f"r.{fmt}"]  # no .lock, no .parts
    assert ground(image_dir, str(out), engine=tiny_engine, prune=True).skipped == 4
    assert os.listdir(out.parent) == [f"r.{fmt}"]


# -- records made with other settings are redone, and the run says so ---------------------------------------------
def test_decoding_names_the_generation_settings():
    assert GenerationOptions().label == "greedy max_new_tokens=128"
    assert GenerationOptions(64, 3, 3).label == "beams=3 max_new_tokens=64 no_repeat_ngram_size=3"
    assert GenerationOptions(24, 1, 0).label == "greedy max_new_tokens=24"


def test_decoding_is_a_common_field_after_model():
    assert list(GroundRecord(path="a.png").to_dict())[7:9] == ["model", "decoding"]
    assert Ground.schema().names[7:9] == ["model", "decoding"]


def _same_model(engine, generation=None, label=None):
    """The loaded model again, under other settings (no second load)."""
    return Engine.from_model(
        engine.model, engine.processor, generation or engine.generation, label=label or engine.options.label
    )


AGAIN = {  # a second run with one setting changed, and what the warning names
    "decoding": (
        lambda e, photos, out: ground(photos, out, engine=_same_model(e, GenerationOptions(12, 2))),
        "decoding",
    ),
    "model": (lambda e, photos, out: ground(photos, out, engine=_same_model(e, label="other/checkpoint")), "model"),
    "prompt": (lambda e, photos, out: ground(photos, out, engine=e, prompt="detailed"), "prompt"),
    "refer decoding": (
        lambda e, photos, out: refer(photos, out, boxes=["1,1,20,20"], engine=_same_model(e, GenerationOptions(5))),
        "decoding",
    ),
}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("change", AGAIN)
def test_records_made_with_other_settings_are_redone_in_one_warning(
    tiny_engine, image_dir, tmp_path, caplog, fmt, change
):
    again, named = AGAIN[change]
    out = str(tmp_path / f"r.{fmt}")
    first = refer if change.startswith("refer") else ground
    first(image_dir, out, engine=tiny_engine, **({"boxes": ["1,1,20,20"]} if first is refer else {}))
    caplog.clear()
    summary = again(tiny_engine, image_dir, out)
    assert (summary.done + summary.failed, summary.skipped, summary.redone) == (4, 0, 4)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"4 records were made with other settings ({named}): redone"]
    rows = list(read_records(out))
    assert len(rows) == 4  # replaced, not added
    assert len({(r["model"], r["prompt"], r["decoding"]) for r in rows}) == 1
    caplog.clear()
    assert again(tiny_engine, image_dir, out).skipped == 4  # the same settings again: nothing to redo
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_the_command_line_says_it_in_one_line(tiny_model, image_dir, tmp_path):
    out = str(tmp_path / "r.jsonl")
    assert kosmos("ground", str(image_dir), "--out", out, model=tiny_model).exit_code == 0
    result = kosmos("ground", str(image_dir), "--out", out, "--num-beams", "2", model=tiny_model)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("kosmos: WARNING:")]
    assert warnings == ["kosmos: WARNING: 4 records were made with other settings (decoding): redone"]
    assert {row["decoding"] for row in read_records(out)} == {"beams=2 max_new_tokens=3"}


def test_records_without_decoding_count_as_made_with_this_one(tiny_engine, image_dir, tmp_path):
    out = tmp_path / "r.jsonl"
    ground(image_dir, str(out), engine=tiny_engine)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    out.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "decoding"}) + "\n" for row in rows))
    summary = ground(image_dir, str(out), engine=_same_model(tiny_engine, GenerationOptions(3)))
    assert (summary.skipped, summary.redone) == (4, 0)
