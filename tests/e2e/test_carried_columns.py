"""Carried manifest columns of any type reach Parquet and JSONL, and never crash a run or block a merge."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kosmos_cli.inputs import carried_columns as carried
from kosmos_cli.inputs.sources import iter_items
from kosmos_cli.output.reader import read_records
from kosmos_cli.output.store import Store
from kosmos_cli.tasks import GroundRecord


def rec(path, **extra):
    return GroundRecord(path=path, caption="a cat", file_size=1, file_mtime=1.0, model="m", extra=extra)


def write(out, fmt, *batches, direct=True):
    store = Store(str(out), fmt, "ground")
    sink = store.sink(direct=direct)
    for batch in batches:
        sink.write(batch)
    sink.close()
    store.compact()
    return {r["path"]: r for r in read_records(str(out))}


def field(out, name):
    return pq.read_schema(str(out)).field(name)


def decoded(out, name, rows):
    """The values of carried column `name` as the rule says to read them back."""
    if carried.is_json_text(field(out, name)):
        return {p: None if r[name] is None else json.loads(r[name]) for p, r in rows.items()}
    return {p: r[name] for p, r in rows.items()}


def test_an_int_then_a_string_in_one_batch_is_json_text(tmp_path):
    out = tmp_path / "r.parquet"
    rows = write(out, "parquet", [rec("a", x=1), rec("b", x="one"), rec("c", x=None)])
    assert carried.is_json_text(field(out, "x"))
    assert {p: r["x"] for p, r in rows.items()} == {"a": "1", "b": '"one"', "c": None}
    assert decoded(out, "x", rows) == {"a": 1, "b": "one", "c": None}


def test_ints_and_floats_widen_to_float_and_nulls_take_the_other_type(tmp_path):
    out = tmp_path / "r.parquet"
    rows = write(out, "parquet", [rec("a", x=1, y=None)], [rec("b", x=2.5, y="s")], [rec("c", y=None)], direct=False)
    assert field(out, "x").type == pa.float64() and field(out, "y").type == pa.string()
    assert not carried.is_json_text(field(out, "y"))
    assert (rows["a"]["x"], rows["b"]["x"], rows["a"]["y"], rows["b"]["y"]) == (1.0, 2.5, None, "s")


def test_parts_that_disagree_make_the_column_json_text_for_every_row(tmp_path):
    out = tmp_path / "r.parquet"
    write(out, "parquet", [rec("a", x=1, n={"k": 1})])  # a first run: typed
    assert field(out, "x").type == pa.int64()
    rows = write(out, "parquet", [rec("b", x="two", n={"k": "v"})], [rec("c", x=[3])], direct=False)  # a later run
    for name in ("x", "n"):
        assert carried.is_json_text(field(out, name)), name
    assert decoded(out, "x", rows) == {"a": 1, "b": "two", "c": [3]}
    assert decoded(out, "n", rows) == {"a": {"k": 1}, "b": {"k": "v"}, "c": None}
    rows = write(out, "parquet", [rec("d", x=4)], direct=False)  # once JSON text, always JSON text
    assert decoded(out, "x", rows) == {"a": 1, "b": "two", "c": [3], "d": 4}


def test_objects_with_different_keys_merge_into_one_struct(tmp_path):
    out = tmp_path / "r.parquet"
    rows = write(out, "parquet", [rec("a", o={"k": 1})], [rec("b", o={"j": "x", "k": 2.5})], direct=False)
    assert pa.types.is_struct(field(out, "o").type)
    assert rows["a"]["o"] == {"k": 1.0, "j": None} and rows["b"]["o"] == {"k": 2.5, "j": "x"}


@pytest.mark.parametrize(
    "value", [2**63, -(2**63) - 1, 2**64, 10**30, [1, 2**70], {"deep": 2**63}, {}, [{}], {"a": {}}]
)
@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_values_parquet_cannot_store_are_json_text(tmp_path, fmt, value):
    out = tmp_path / f"r.{fmt}"
    rows = write(out, fmt, [rec("a", x=value), rec("b", x=None)], [rec("c", x=5)], direct=False)
    if fmt == "parquet":
        assert carried.is_json_text(field(out, "x"))
        rows = {p: {"x": v} for p, v in decoded(out, "x", rows).items()}
    assert (rows["a"]["x"], rows["b"]["x"], rows["c"]["x"]) == (value, None, 5)


def test_int64_limits_stay_typed(tmp_path):
    out = tmp_path / "r.parquet"
    rows = write(out, "parquet", [rec("a", x=2**63 - 1), rec("b", x=-(2**63))])
    assert field(out, "x").type == pa.int64() and rows["a"]["x"] == 2**63 - 1


def test_a_parquet_manifest_with_maps_uint64_and_empty_structs(tmp_path, image_dir):
    images = sorted(str(p) for p in image_dir.iterdir())[:2]
    manifest = tmp_path / "m.parquet"
    pq.write_table(
        pa.table(
            {
                "path": images,
                "m": pa.array([[("a", 1), ("b", 2)], []], type=pa.map_(pa.string(), pa.int64())),
                "u": pa.array([2**64 - 1, 7], type=pa.uint64()),
                "ts": pa.array([1, None], type=pa.timestamp("s")),
            }
        ),
        manifest,
    )
    items = list(iter_items([str(manifest)]))
    assert items[0].extra["m"] == [{"key": "a", "value": 1}, {"key": "b", "value": 2}]
    for fmt in ("parquet", "jsonl"):
        out = tmp_path / f"r.{fmt}"
        rows = write(out, fmt, [GroundRecord(path=i.path, extra=dict(i.extra)) for i in items])
        first = rows[images[0]]
        assert first["m"] == [{"key": "a", "value": 1}, {"key": "b", "value": 2}] and rows[images[1]]["m"] == []
        if fmt == "parquet":
            assert carried.is_json_text(field(out, "u")) and not carried.is_json_text(field(out, "m"))
            assert json.loads(first["u"]) == 2**64 - 1 and rows[images[1]]["u"] == "7"
            assert pa.types.is_timestamp(field(out, "ts").type)
        else:
            assert first["u"] == 2**64 - 1 and first["ts"] == "1970-01-01 00:00:01"


def test_a_merge_with_an_output_written_before_this_rule(tmp_path):
    """An output whose carried column is a plain typed column merges with parts of any other type."""
    out = tmp_path / "r.parquet"
    pq.write_table(pa.Table.from_pylist([rec("a", x="s").to_dict()]), out)
    rows = write(out, "parquet", [rec("b", x=2)], direct=False)
    assert decoded(out, "x", rows) == {"a": "s", "b": 2}


def test_schema_of_leaves_rows_it_can_type_alone():
    rows = [{"x": 1, "y": [1, 2.5]}, {"x": None, "y": None}]
    schema = carried.schema_of(rows, ["x", "y"])
    assert schema.field("x").type == pa.int64() and schema.field("y").type == pa.list_(pa.float64())
    assert rows == [{"x": 1, "y": [1, 2.5]}, {"x": None, "y": None}]


def test_no_carried_value_crashes_a_run_in_either_format(tmp_path, tiny_engine, image_dir):
    import kosmos_cli

    images = sorted(str(p) for p in image_dir.iterdir())
    values = [1, "one", 2**64, {}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"path": p, "x": v}) + "\n" for p, v in zip(images, values)))
    for fmt, batch_size in (("parquet", 1), ("jsonl", 3)):  # batches of 1: each part has its own type
        out = str(tmp_path / f"r.{fmt}")
        kosmos_cli.ground([str(manifest)], out, engine=tiny_engine, batch_size=batch_size)
        got = {r["path"]: r["x"] for r in read_records(out)}
        if fmt == "parquet":
            got = {p: json.loads(v) for p, v in got.items()}
        assert got == dict(zip(images, values))
        assert not os.path.exists(out + ".parts")
