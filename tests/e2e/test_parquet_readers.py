"""Our Parquet as other tools read it: DuckDB and polars get nested entities, boxes and scores with their types."""

import random

import pytest
import shapes

from kosmos_cli import find, ground

duckdb = pytest.importorskip("duckdb")
pl = pytest.importorskip("polars")


@pytest.fixture(scope="module")
def outputs(shapes_engine, tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    rng = random.Random(5)
    for i in range(3):
        img, _ = shapes.make_scene(rng, 224, 224, n=2)
        img.save(folder / f"s{i}.png")
    grounded, found = folder / "ground.parquet", folder / "find.parquet"
    ground([str(folder)], str(grounded), engine=shapes_engine)
    find([str(folder)], str(found), phrases=["a red square"], engine=shapes_engine)
    return str(grounded), str(found)


def test_duckdb_reads_nested_entities_boxes_and_scores(outputs):
    grounded, found = outputs
    con = duckdb.connect()
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{grounded}')").fetchall())
    assert types["entities"] == (
        'STRUCT(phrase VARCHAR, "start" INTEGER, "end" INTEGER, boxes DOUBLE[][], '
        "boxes_px INTEGER[][], scores DOUBLE[])[]"
    )
    rows = con.execute(f"""
        SELECT e.phrase, e.boxes_px[1] AS box, e.scores[1] AS score, len(e.boxes) = len(e.scores) AS paired
        FROM (SELECT unnest(entities) AS e FROM '{grounded}')""").fetchall()
    assert len(rows) >= 3
    for phrase, box, score, paired in rows:
        assert isinstance(phrase, str) and phrase
        assert len(box) == 4 and all(isinstance(v, int) for v in box)
        assert isinstance(score, float) and 0.0 < score <= 1.0 and paired
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{found}')").fetchall())
    assert (types["boxes"], types["boxes_px"], types["scores"]) == ("DOUBLE[][]", "INTEGER[][]", "DOUBLE[]")
    # the auto-labelling question in SQL: boxes the model was sure of
    sure = con.execute(f"SELECT count(*) FROM (SELECT unnest(scores) AS s FROM '{found}') WHERE s >= 0.1").fetchone()
    assert sure[0] >= 1


def test_polars_reads_nested_entities_boxes_and_scores(outputs):
    grounded, found = outputs
    frame = pl.read_parquet(grounded)
    entity = frame.schema["entities"]
    assert entity == pl.List(
        pl.Struct(
            {
                "phrase": pl.String,
                "start": pl.Int32,
                "end": pl.Int32,
                "boxes": pl.List(pl.List(pl.Float64)),
                "boxes_px": pl.List(pl.List(pl.Int32)),
                "scores": pl.List(pl.Float64),
            }
        )
    )
    entities = frame.select(pl.col("entities").explode()).unnest("entities")
    assert entities.height >= 3
    assert all(len(b) == len(s) for b, s in zip(entities["boxes"].to_list(), entities["scores"].to_list()))
    assert entities.select(pl.col("scores").list.min().min()).item() > 0.0
    found_frame = pl.read_parquet(found)
    assert found_frame.schema["scores"] == pl.List(pl.Float64)
    assert found_frame.schema["boxes_px"] == pl.List(pl.List(pl.Int32))
    assert found_frame.filter(pl.col("scores").list.len() > 0).height >= 1
