"""Seeded random manifests (.jsonl and .csv) with mixed column types, odd and colliding names, run in two halves
and then again, to Parquet and JSONL at batch sizes 1-4: every image is recorded exactly once, and every carried
value is kept (as inputs/carried_columns.py's rule says: typed, widened, or JSON text)."""

import csv
import json
import os
import random

import pytest
from PIL import Image

import kosmos_cli
from kosmos_cli.inputs import carried_columns as carried
from kosmos_cli.inputs.carried_columns import to_jsonable
from kosmos_cli.inputs.sources import unique_names
from kosmos_cli.tasks.records import carried_name

NAMES = ["label", "a b", "ünïcödé ✓", "status", "input_status", "width", "task", "path ", "", "x.y", "_extra"]


KINDS = ["int", "float", "str", "none", "bool", "big", "list", "dict", "empty"]
PROFILES = [KINDS, ["int", "float", "none"], ["dict", "none"], ["list", "none"], ["str"], ["bool", "none"]]


def value(rnd: random.Random, depth: int = 0, kinds=KINDS):
    """A value of one of `kinds` (any kind inside lists and objects, shallower ones deeper down)."""
    kind = rnd.choice(kinds if depth < 2 else ["int", "str", "none"])
    if kind == "int":
        return rnd.randint(-5, 5) * 10 ** rnd.randint(0, 15)
    if kind == "float":
        return rnd.choice([0.5, -1.25, 1e300, 3.0])
    if kind == "str":
        return rnd.choice(["", "a", 'some, "quoted" text', "ünï ✓", "1", "null", "[1]", "{}"])
    if kind == "bool":
        return rnd.random() < 0.5
    if kind == "big":
        return rnd.choice([2**63, -(2**63) - 1, 2**64 + 1, 10**30])
    if kind == "list":
        return [value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    if kind == "dict":
        return {rnd.choice(["k", "a b", "ü", ""]): value(rnd, depth + 1) for _ in range(rnd.randint(1, 3))}
    if kind == "empty":
        return {}
    return None


def manifest(rnd: random.Random, folder, kind: str, images: list[str]):
    """Two manifests (the first half of the rows, and all of them) and each image's expected carried values."""
    columns = rnd.sample(NAMES, rnd.randint(2, 6))
    profiles = {c: rnd.choice(PROFILES) for c in columns}  # some columns of one kind, some of any
    expected: dict[str, dict] = {}
    if kind == "jsonl":
        rows = []
        for image in images:
            row = {c: value(rnd, kinds=profiles[c]) for c in columns if rnd.random() < 0.8}
            rows.append({"path": os.path.basename(image), **row})
            expected[image] = {carried_name(c): to_jsonable(v) for c, v in row.items()}
        texts = [json.dumps(r, ensure_ascii=rnd.random() < 0.5) + "\n" for r in rows]
    else:
        header = ["path"] + columns + (columns[:1] if rnd.random() < 0.5 else [])  # maybe a repeated name
        names = unique_names(header + ["_extra"])
        names, ragged = names[1:-1], names[-1]
        texts = []
        for image in images:
            fields = [str(value(rnd)) for _ in names]
            extra = [str(value(rnd)) for _ in range(rnd.choice([0, 0, 1, 2]))]  # a ragged row
            if not extra:
                fields = fields[: rnd.randint(len(fields) - 1, len(fields))]  # maybe a short row
            texts.append(_csv_line([os.path.basename(image)] + fields + extra))
            want = {carried_name(n): fields[i] if i < len(fields) else None for i, n in enumerate(names)}
            if extra:
                want[carried_name(ragged)] = extra
            expected[image] = want
        texts.insert(0, _csv_line(header))
    half, full = folder / f"half.{kind}", folder / f"all.{kind}"
    head = 1 if kind == "csv" else 0
    half.write_text("".join(texts[: head + len(images) // 2]), encoding="utf-8")
    full.write_text("".join(texts), encoding="utf-8")
    return str(half), str(full), expected


def _csv_line(fields):
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


def same(want, got) -> bool:
    """`got` holds `want`: numbers by value, objects may have more keys (null) as Arrow structs do."""
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and all(same(v, got.get(k)) for k, v in want.items())
            and all(got[k] is None for k in got if k not in want)
        )
    if isinstance(want, list):
        return isinstance(got, list) and len(want) == len(got) and all(same(w, g) for w, g in zip(want, got))
    if isinstance(want, bool) or isinstance(got, bool):
        return want is got
    return want == got


def _interrupt(records) -> None:
    raise KeyboardInterrupt


def read_back(out: str) -> dict[str, dict]:
    rows = list(kosmos_cli.read_records(out))
    if out.endswith(".parquet"):
        import pyarrow.parquet as pq

        text = [f.name for f in pq.read_schema(out) if carried.is_json_text(f)]
        for row in rows:
            for name in text:
                row[name] = None if row[name] is None else json.loads(row[name])
    return {r["path"]: r for r in rows}


@pytest.mark.parametrize("seed", range(6))
def test_random_manifests_are_recorded_once_with_every_carried_value(tmp_path, tiny_engine, seed):
    rnd = random.Random(seed)
    kind = ("jsonl", "csv")[seed % 2]
    folder = tmp_path / f"seed {seed} ü"
    folder.mkdir()
    images = []
    for i in range(rnd.randint(3, 5)):
        image = str(folder / f"img {i} ✓.png")
        Image.new("RGB", (24, 24), (i * 40, 9, 9)).save(image)
        images.append(image)
    half, full, expected = manifest(rnd, folder, kind, images)
    for fmt in ("parquet", "jsonl"):
        out = str(tmp_path / f"out.{fmt}")
        batch_size = 1 + (seed + (fmt == "jsonl")) % 4
        kosmos_cli.ground([half], out, engine=tiny_engine, batch_size=batch_size)
        with pytest.raises(KeyboardInterrupt):  # stopped as Ctrl-C or SIGTERM stop it, after its first batch
            kosmos_cli.ground([full], out, engine=tiny_engine, batch_size=batch_size, on_write=_interrupt)
        kosmos_cli.ground([full], out, engine=tiny_engine, batch_size=batch_size)
        again = kosmos_cli.ground([full], out, engine=tiny_engine, batch_size=batch_size)
        assert (again.done, again.failed, again.skipped) == (0, 0, len(images))
        paths = [r["path"] for r in kosmos_cli.read_records(out)]
        assert sorted(paths) == sorted(images)  # every image exactly once
        rows = read_back(out)
        for image, want in expected.items():
            assert rows[image]["status"] == "ok"
            for name, v in want.items():
                assert same(v, rows[image].get(name)), (fmt, image, name, v, rows[image].get(name))
