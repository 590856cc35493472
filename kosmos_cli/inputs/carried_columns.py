"""Carried manifest columns in Parquet: one rule for values of any type, in any mix.

A manifest's columns other than `path` are carried into each record. JSONL writes their values as they are
(made JSON-safe: NaN becomes null, other non-JSON values their str). Parquet needs one type per column for the
whole output, while a manifest may give a column an int in one row and a string in the next, or one type in
this run and another in the next. The rule:

1. A column takes the type Arrow infers for its values, when Arrow can hold them all: ints and floats together
   are float64, nulls take the type of the rest, lists and objects are typed element by element (objects with
   different keys become one struct holding every key, absent keys null).
2. Otherwise the column is **JSON text**: a string column whose every value is `json.dumps` of the carried value
   (null stays null; the string `a` is written `"a"`, with its quotes, the int 1 as `1`), so `json.loads` gives
   every value back. Its Parquet field is marked with the metadata `kosmos_cli.carried: json`. This happens
   when a column mixes kinds Arrow cannot widen (an int and a string, a bool and an int, one object key holding
   different kinds), or holds a value Parquet cannot store: an int outside int64, an empty object `{}`.
3. The rule holds for the whole output: when the parts of an output (batches, runs, processes) disagree on a
   column in a way rule 1 cannot widen, or one of them holds it as JSON text, it becomes JSON text for every
   row, including rows the output already held typed.
4. A map column of a Parquet manifest is carried as a list of `{"key": ..., "value": ...}` objects (in JSONL
   too), since a map is not JSON and its keys need not be strings.

Strings that are not valid Unicode (a file name that is not UTF-8) are recorded as inputs/names.py says.
"""

from __future__ import annotations

import json
import math
from typing import Any

JSON_TEXT_KEY = b"kosmos_cli.carried"
JSON_TEXT = {JSON_TEXT_KEY: b"json"}
_INT64 = (-(2**63), 2**63 - 1)


def schema_of(rows: list[dict[str, Any]], names: list[str]):
    """The Arrow schema of the carried columns `names` of one batch of rows (rules 1 and 2).

    A column that must be JSON text has its values turned into JSON text in `rows`, in place.
    """
    import pyarrow as pa

    fields = []
    for name in names:
        data_type = _inferred([row.get(name) for row in rows])
        if data_type is None:
            fields.append(json_field(name))
            for row in rows:
                if row.get(name) is not None:
                    row[name] = json_text(row[name])
        else:
            fields.append(pa.field(name, data_type))
    return pa.schema(fields)


def unify(schemas: list, base_names: list[str]):
    """One schema for the carried columns of several files of one output (rule 3), columns in first-seen order."""
    import pyarrow as pa

    seen: dict[str, list] = {}
    for schema in schemas:
        for f in schema:
            if f.name not in base_names:
                seen.setdefault(f.name, []).append(f)
    fields = []
    for name, found in seen.items():
        data_type = None if any(is_json_text(f) for f in found) else found[0].type
        for f in found[1:]:
            data_type = None if data_type is None else _widen(data_type, f.type)
        fields.append(json_field(name) if data_type is None else pa.field(name, data_type))
    return pa.schema(fields)


def to_json_text(schema, target) -> list[str]:
    """The carried columns that a file with `schema` holds typed and the output `target` holds as JSON text."""
    names = set(schema.names)
    return [f.name for f in target if is_json_text(f) and f.name in names and not is_json_text(schema.field(f.name))]


def as_json_text(row: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """`row` with the values of `names` turned into JSON text (a row read from a file `to_json_text` named)."""
    for name in names:
        if row.get(name) is not None:
            row[name] = json_text(row[name])
    return row


def from_parquet(value: Any) -> Any:
    """A value of a Parquet manifest's row as carried: maps (lists of key/value tuples) become objects (rule 4)."""
    if isinstance(value, list):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return [{"key": from_parquet(k), "value": from_parquet(v)} for k, v in value]
        return [from_parquet(v) for v in value]
    if isinstance(value, dict):
        return {k: from_parquet(v) for k, v in value.items()}
    return value


def json_field(name: str):
    import pyarrow as pa

    return pa.field(name, pa.string(), metadata=JSON_TEXT)


def is_json_text(f) -> bool:
    return bool(f.metadata) and f.metadata.get(JSON_TEXT_KEY) == b"json"


def json_text(value: Any) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False, allow_nan=False)


def _inferred(values: list[Any]):
    """The Arrow type of `values` when Parquet can store it as is, else None."""
    import pyarrow as pa

    if not all(_fits(v) for v in values):
        return None
    try:
        data_type = pa.array(values).type
    except (pa.ArrowException, OverflowError, ValueError, TypeError, RecursionError):
        return None
    return data_type if _storable(data_type) else None


def _fits(value: Any) -> bool:
    """No int outside int64 and no empty object anywhere in `value`."""
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return _INT64[0] <= value <= _INT64[1]
    if isinstance(value, dict):
        return bool(value) and all(_fits(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_fits(v) for v in value)
    return True


def _storable(data_type) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(data_type):
        return data_type.num_fields > 0 and all(_storable(f.type) for f in data_type)
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return _storable(data_type.value_type)
    if pa.types.is_map(data_type) or pa.types.is_union(data_type) or pa.types.is_uint64(data_type):
        return False
    return True


def _widen(a, b):
    """The type holding values of both `a` and `b` (rule 1), or None when there is none."""
    import pyarrow as pa

    t = pa.types
    if a == b:
        return a
    if t.is_null(a) or t.is_null(b):
        return b if t.is_null(a) else a
    if _number(a) and _number(b):
        return pa.int64() if t.is_integer(a) and t.is_integer(b) else pa.float64()
    if t.is_list(a) and t.is_list(b):
        value = _widen(a.value_type, b.value_type)
        return None if value is None else pa.list_(value)
    if t.is_struct(a) and t.is_struct(b):
        fields = {f.name: f.type for f in a}
        for f in b:
            fields[f.name] = _widen(fields[f.name], f.type) if f.name in fields else f.type
            if fields[f.name] is None:
                return None
        return pa.struct(list(fields.items()))
    return None


def _number(data_type) -> bool:
    import pyarrow as pa

    return (pa.types.is_signed_integer(data_type) or pa.types.is_floating(data_type)) and data_type.bit_width <= 64


def to_jsonable(value: Any) -> Any:
    """Carried manifest values of any type, made JSON-safe (NaN becomes null, others their str)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return str(value)
