"""kosmos view over HTTP: the JSON API (filters, sorting, paging, whole records, the export line), the images (every
place a record can name, in the displayed frame) and the refusals (other paths, other hosts, writes, bad results).
Records are written by hand here, so each filter's answer is known; tests/e2e/test_view_browser.py drives the page."""

import dataclasses
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapes
from PIL import Image

from kosmos_cli import export
from kosmos_cli.drawing.colors import PALETTE, text_color
from kosmos_cli.errors import InputError, UsageError
from kosmos_cli.exports import FORMATS
from kosmos_cli.output.formats import records_table
from kosmos_cli.output.reader import read_records
from kosmos_cli.tasks import Find, FindRecord, Ground, GroundRecord, Refer, ReferRecord
from kosmos_cli.tasks.records import Entity
from kosmos_cli.view import start
from kosmos_cli.view.guard import host_allowed
from kosmos_cli.view.index import Index, Query, cards
from kosmos_cli.view.reading import Changed, open_results
from kosmos_cli.view.thumbs import Slow, Thumbnails
from tests.helpers import ROOT
from tests.helpers.serve import ImageServer

RED = (220, 40, 40)


def grey(path, size, box=None, fill=RED):
    """A grey PNG of `size` with a filled rectangle at `box` (displayed pixels)."""
    img = Image.new("RGB", size, (128, 128, 128))
    if box is not None:
        img.paste(fill, box)
    img.save(path, "PNG")
    return img


def ground_row(path, size, caption, found, status="ok", error=None, **extra):
    """A ground record: `found` is [(phrase, [pixel boxes], [scores] or None)], each phrase a part of `caption`."""
    width, height = size if size else (None, None)
    entities = []
    for phrase, boxes, scores in found:
        start = caption.index(phrase)
        normal = [[b[0] / width, b[1] / height, b[2] / width, b[3] / height] for b in boxes]
        entities.append(Entity(phrase, start, start + len(phrase), normal, [list(b) for b in boxes], scores))
    record = GroundRecord(path=path, width=width, height=height, model="m", prompt="<grounding>An image of")
    record.caption, record.entities, record.extra = (caption if status == "ok" else None), entities, extra
    if status != "ok":
        record = dataclasses.replace(record, status="error", error=error)
    return record


def write(records, path, task=Ground):
    if str(path).endswith(".parquet"):
        pq.write_table(records_table(records, task), path)
    else:
        with open(path, "w") as f:
            f.writelines(json.dumps(r.to_dict()) + "\n" for r in records)
    return str(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """photos/ with a PNG, an EXIF-rotated JPEG and a file that is not an image, and results about them."""
    root = tmp_path_factory.mktemp("view")
    photos = root / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        grey(photos / name, (320, 200), (20, 30, 120, 130))
    shown = Image.new("RGB", (300, 200), (128, 128, 128))
    shown.paste(RED, (10, 20, 110, 90))  # top left, as displayed
    shapes.save_rotated_jpeg(shown, photos / "turned.jpg", 6)  # stored 200 x 300, turned
    (photos / "junk.png").write_bytes(b"not an image")
    return root


ROWS = [
    # 0: two classes, scored
    (
        "photos/a.png",
        (320, 200),
        "An image of a red square and two dogs.",
        [
            ("a red square", [[20, 30, 120, 130]], [0.9]),
            ("two dogs", [[150, 20, 300, 180], [200, 10, 250, 60]], [0.2, 0.6]),
        ],
    ),
    # 1: the rotated photo, its box in the displayed frame
    ("photos/turned.jpg", (300, 200), "An image of a red box.", [("a red box", [[10, 20, 110, 90]], [0.45])]),
    # 2: boxes without scores (beam search)
    ("photos/b.png", (320, 200), "An image of a cat.", [("a cat", [[0, 0, 50, 50]], None)]),
    # 3: markup in the caption, to be shown as text
    (
        "photos/c.png",
        (320, 200),
        "An image of <script>alert(1)</script> a <b>big</b> dog.",
        [
            ("a <b>big</b> dog", [[5, 5, 60, 60]], [0.7]),
        ],
    ),
]


@pytest.fixture(scope="module")
def results(folder):
    records = [ground_row(*row, source="web" if i == 0 else None) for i, row in enumerate(ROWS)]
    records.append(ground_row("photos/missing.png", None, "", [], status="error", error="file not found"))
    records.append(ground_row("photos/junk.png", None, "", [], status="error", error="not an image Pillow can read"))
    return write(records, folder / "results.jsonl")


@pytest.fixture(scope="module")
def viewer(results):
    with start(results) as running:
        yield running


def get(viewer, path, headers=None):
    """(status, headers, body) of a GET; an HTTP error is an answer too."""
    request = urllib.request.Request(viewer.url.rstrip("/") + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def api(viewer, path):
    status, _, body = get(viewer, path)
    assert status == 200, body
    return json.loads(body)


def rows(viewer, query=""):
    return [c["row"] for c in api(viewer, f"/api/records?{query}")["cards"]]


def drawn(card):
    return [(e["label"], b[:4]) for e in card["entities"] for b in e["boxes"]]


# -- the API -------------------------------------------------------------------------------------------------
def test_info_says_the_task_and_draws_colours_and_facets_what_the_filters_offer(viewer):
    info = api(viewer, "/api/info")
    assert (info["task"], info["records"], info["name"]) == ("ground", 6, "results.jsonl")
    assert info["palette"] == [{"fill": "#%02x%02x%02x" % c, "text": "#%02x%02x%02x" % text_color(c)} for c in PALETTE]
    facets = api(viewer, "/api/facets")
    assert (facets["records"], facets["errors"], facets["scored"]) == (6, 2, True)
    assert {c["value"] for c in facets["classes"]} == {"red square", "two dogs", "red box", "cat", "<b>big</b> dog"}


def test_a_card_has_every_box_of_its_record_with_its_phrase_colour_and_score(viewer):
    [card] = api(viewer, "/api/records?limit=1")["cards"]
    assert (card["row"], card["path"], card["width"], card["height"], card["boxes"]) == (0, "photos/a.png", 320, 200, 3)
    assert [(e["label"], e["color"], e["boxes"]) for e in card["entities"]] == [
        ("a red square", 0, [[20, 30, 120, 130, 0.9]]),
        ("two dogs", 1, [[150, 20, 300, 180, 0.2], [200, 10, 250, 60, 0.6]]),
    ]
    assert card["html"] == (
        'An image of <mark class="c0" data-e="0">a red square</mark> and <mark class="c1" data-e="1">two dogs</mark>.'
    )


def test_pages_by_offset_and_limit(viewer):
    assert rows(viewer, "limit=2") == [0, 1]
    page = api(viewer, "/api/records?offset=4&limit=10")
    assert (page["total"], [c["row"] for c in page["cards"]]) == (6, [4, 5])
    assert api(viewer, "/api/records?offset=99")["cards"] == []


def test_a_page_holds_at_most_200_cards(tmp_path):
    grey(tmp_path / "x.png", (10, 10))
    many = write(
        [ground_row("x.png", (10, 10), "An image of x.", [("x", [[0, 0, 5, 5]], [0.5])])] * 250,
        tmp_path / "many.parquet",
    )
    with start(many) as running:
        page = api(running, "/api/records?limit=1000")
        assert (page["total"], len(page["cards"])) == (250, 200)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("DOGS", [0]),  # any case
        ("red", [0, 1]),  # in the caption
        ("turned", [1]),  # in the path
        ("pillow", [5]),  # in the error message
        ("<script>", [3]),
        ("nowhere", []),
    ],
)
def test_text_filter_looks_in_captions_errors_and_paths(viewer, text, expected):
    assert rows(viewer, f"text={urllib.request.quote(text)}") == expected


def test_classes_match_as_export_matches_them_and_only_their_boxes_are_drawn(viewer):
    cards = api(viewer, "/api/records?classes=dog")["cards"]  # "two dogs" and "a <b>big</b> dog" are dog
    assert [c["row"] for c in cards] == [0, 3]
    assert drawn(cards[0]) == [("two dogs", [150, 20, 300, 180]), ("two dogs", [200, 10, 250, 60])]
    assert rows(viewer, "classes=square,cat") == [0, 2]
    assert rows(viewer, "classes=horse") == []


def test_min_score_hides_the_boxes_under_it_and_those_without_a_score(viewer):
    cards = {c["row"]: c for c in api(viewer, "/api/records?min_score=0.5")["cards"]}
    assert sorted(cards) == [0, 1, 2, 3, 4, 5]  # records stay; boxes go
    assert drawn(cards[0]) == [("a red square", [20, 30, 120, 130]), ("two dogs", [200, 10, 250, 60])]
    assert drawn(cards[1]) == [] and drawn(cards[2]) == []  # 0.45; no score
    assert cards[0]["boxes"] == 3  # what the record has, for "2 of 3 boxes"


def test_status_filter(viewer):
    assert rows(viewer, "status=error") == [4, 5]
    assert rows(viewer, "status=ok") == [0, 1, 2, 3]
    errors = api(viewer, "/api/records?status=error")["cards"]
    assert [c["error"] for c in errors] == ["file not found", "not an image Pillow can read"]


@pytest.mark.parametrize(
    "query, expected",
    [
        ("sort=best", [0, 3, 1, 2, 4, 5]),  # best box 0.9, 0.7, 0.45; then no scored box, as written
        ("sort=worst", [0, 1, 3, 2, 4, 5]),  # worst box 0.2, 0.45, 0.7
        ("sort=boxes", [0, 1, 2, 3, 4, 5]),
        ("sort=boxes&min_score=0.5", [0, 3, 1, 2, 4, 5]),  # the boxes shown count
        ("sort=path", [0, 2, 3, 5, 4, 1]),
        ("sort=best&min_score=0.5&status=ok", [0, 3, 1, 2]),
    ],
)
def test_sorts(viewer, query, expected):
    assert rows(viewer, query) == expected


@pytest.mark.parametrize(
    "query, message",
    [
        ("min_score=2", "min_score 2.0: a score is a number from 0 to 1"),
        ("min_score=x", "min_score 'x': a score is a number from 0 to 1"),
        ("status=done", "status 'done': ok or error"),
        ("sort=size", "sort 'size': one of file, path, best, worst, boxes"),
        ("classes=dog,Dog", "'Dog' is named twice"),
        ("offset=-1", "offset '-1': a whole number"),
        ("phrase=x", "phrase is for the results of kosmos find"),
        ("region=1,2,3,4", "region is for the results of kosmos refer"),
    ],
)
def test_a_query_value_that_cannot_be_used_is_a_400_saying_why(viewer, query, message):
    status, _, body = get(viewer, f"/api/records?{query}")
    assert status == 400 and message in json.loads(body)["error"]


def test_a_whole_record_with_its_carried_columns_and_where_it_stands(viewer):
    answer = api(viewer, "/api/record/0?sort=best")
    assert answer["record"]["source"] == "web" and answer["record"]["prompt"] == "<grounding>An image of"
    assert (answer["position"], answer["total"]) == (0, 6)
    assert api(viewer, "/api/record/1?sort=best")["position"] == 2
    assert api(viewer, "/api/record/1?status=error")["position"] is None  # shown alone, outside the view
    assert get(viewer, "/api/record/6")[0] == 404


def test_record_text_is_escaped(viewer):
    [card] = api(viewer, "/api/records?text=script")["cards"]
    assert "<script>" not in card["html"] and "<b>" not in card["html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in card["html"]
    assert '<mark class="c0" data-e="0">a &lt;b&gt;big&lt;/b&gt; dog</mark>' in card["html"]


def test_jsonl_parquet_and_a_folder_of_parquet_parts_give_the_same_cards(folder):
    records = [ground_row(*row) for row in ROWS]
    parts = folder / "same.parquet.parts"
    parts.mkdir()
    write(records[:2], parts / "0001.parquet")
    write(records[2:], parts / "0002.parquet")
    table = folder / "same.parquet"
    pq.write_table(records_table(records, Ground), table, row_group_size=2)
    lines = [json.dumps(r.to_dict()) for r in records]
    (folder / "blank.jsonl").write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n")
    (folder / "torn.jsonl").write_text("\n".join(lines) + '\n{"path": "photos/a.pn')  # a run writing its last line
    sources = [
        write(records, folder / "same.jsonl"),
        str(table),
        str(parts),
        *(str(folder / n) for n in ("blank.jsonl", "torn.jsonl")),
    ]
    seen = []
    for source in sources:
        with start(source) as running:
            seen.append(api(running, "/api/records?sort=best&min_score=0.3")["cards"])
        # the first page, read before the index is built, is the index's own
        results = open_results(source)
        assert cards(results.task, results.head(1, 2), range(1, 3), Query()) == Index(results).cards([1, 2], Query())
        assert [results.image_path(r) for r in range(4)] == [r[0] for r in ROWS]
    assert all(s == seen[0] for s in seen) and len(seen[0]) == 4


def test_a_dataset_folder_shows_its_parts_alone_in_run_order(folder):
    """A file kosmos did not name (a results file moved in, a backup) is no part of a dataset: view leaves it out."""
    records = [ground_row(*row) for row in ROWS]
    dataset = folder / "ds"
    dataset.mkdir()
    write(records[2:], dataset / "part-20261201T000000000000-r0-000001.parquet")
    write(records[:2], dataset / "part-20261130T000000000000-r0-000001.parquet")  # the older run, listed first
    write([ground_row("photos/backup.png", (10, 10), "A backup.", [])], dataset / "backup-2026-11.parquet")
    with start(str(dataset)) as running:
        shown = [c["path"] for c in api(running, "/api/records")["cards"]]
    assert shown == [r[0] for r in ROWS]


@pytest.mark.parametrize("name", ["ground", "refer", "find"])
@pytest.mark.parametrize("ending", ["jsonl", "parquet"])
def test_results_written_before_tasks_and_scores_are_shown(name, ending):
    legacy = os.path.join(ROOT, "tests", "fixtures", "legacy-outputs", f"{name}.{ending}")
    rows = list(read_records(legacy))
    with start(legacy) as running:
        page = api(running, "/api/records")
        assert page["total"] == len(rows) and api(running, "/api/info")["task"] == name
        for card, row in zip(page["cards"], rows):
            boxes = [b for e in row.get("entities") or [row] for b in e.get("boxes_px") or []] or (
                [row["box_px"]] if name == "refer" else []
            )
            assert [b[:4] for e in card["entities"] for b in e["boxes"]] == boxes
            assert all(b[4] is None for e in card["entities"] for b in e["boxes"])  # no scores then
        assert api(running, "/api/records?min_score=0.1")["cards"][0]["entities"][0]["boxes"] == []
        assert image_of(running, 0).size == (rows[0]["width"], rows[0]["height"])


# -- images ---------------------------------------------------------------------------------------------------
def image_of(viewer, row, size=512):
    status, headers, body = get(viewer, f"/image/{row}?size={size}")
    assert status == 200 and headers["Content-Type"] == "image/jpeg", body
    return Image.open(io.BytesIO(body))


def test_an_exif_rotated_photo_is_sent_as_displayed_so_its_pixel_boxes_land_on_it(viewer):
    img = image_of(viewer, 1)
    assert img.size == (300, 200)  # stored 200 x 300, turned by its EXIF orientation
    assert not img.getexif().get(0x0112)
    r, g, b = img.getpixel((60, 55))  # the middle of the record's box [10, 20, 110, 90]
    assert r > 180 and g < 90 and b < 90
    assert max(img.getpixel((200, 150))) - min(img.getpixel((200, 150))) < 20  # grey outside it


def test_images_come_no_larger_than_the_size_asked(viewer):
    assert image_of(viewer, 0, 256).size == (256, 160)
    assert image_of(viewer, 0, 2048).size == (320, 200)  # never enlarged
    for size in (300, 4096):  # a size not made is a request to fix, not a missing image
        status, _, body = get(viewer, f"/image/0?size={size}")
        assert (
            status == 400 and json.loads(body)["error"] == f"size {size}: one of 256, 512, 1024, 2048 (pixels a side)"
        )


def test_an_image_that_cannot_be_read_says_why(viewer):
    status, _, body = get(viewer, "/image/4")
    assert (status, body) == (422, b"file not found\n")
    assert get(viewer, "/image/5")[:3:2] == (422, b"not an image Pillow can read\n")


def test_images_from_urls_shards_and_image_tables(tmp_path):
    png = io.BytesIO()
    grey(png, (40, 30), (0, 0, 20, 15))
    data = png.getvalue()
    with tarfile.open(tmp_path / "shard.tar", "w") as tar:
        info = tarfile.TarInfo("s1.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    pq.write_table(pa.table({"key": ["k1"], "png": [data]}), tmp_path / "table.parquet")
    with ImageServer() as server:
        server.files["/a.png"] = data
        paths = [server.url("/a.png"), "shard.tar#s1", str(tmp_path / "table.parquet") + "#k1"]
        results = write(
            [ground_row(p, (40, 30), "An image of x.", [("x", [[0, 0, 20, 15]], [0.5])]) for p in paths],
            tmp_path / "r.jsonl",
        )
        with start(results) as running:
            for row in range(3):
                img = image_of(running, row)
                assert img.size == (40, 30) and img.getpixel((5, 5))[0] > 180


def test_the_image_cache_stays_within_its_bound(folder):
    thumbs = Thumbnails(cache_bytes=6000)
    sizes = []
    for size in (256, 512, 1024, 2048):
        thumbs.get(str(folder / "photos" / "a.png"), size)
        thumbs.get(str(folder / "photos" / "turned.jpg"), size)
        sizes.append(thumbs.held)
    assert 0 < max(sizes) <= 6000


# -- refusals -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/image/../../etc/passwd",
        "/image/..%2f..%2fetc%2fpasswd",
        "/image//etc/passwd",
        "/image/%2Fetc%2Fpasswd",
        "/etc/passwd",
        "//etc/passwd",
        "/photos/a.png",
        "/results.jsonl",
        "/static/../server.py",
        "/static/%2e%2e/server.py",
        "/static/reading.py",
        "/static/index.html/..",
        "/image/-1",
        "/image/1e3",
        "/image/6",
        "/image/0/../../results.jsonl",
        "/api/record/6",
        "/api/nothing",
    ],
)
def test_nothing_but_the_images_of_the_results_is_served(viewer, path):
    status, _, body = get(viewer, path)
    assert status == 404, body


def test_it_only_reads(viewer, folder):
    before = {p: os.stat(folder / p).st_mtime_ns for p in os.listdir(folder)}
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        request = urllib.request.Request(viewer.url + "api/records", data=b"{}", method=method)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 501
    for path in ("/api/records?sort=best", "/image/0", "/image/1?size=2048", "/api/shown.jsonl?text=red"):
        assert get(viewer, path)[0] == 200
    assert {p: os.stat(folder / p).st_mtime_ns for p in os.listdir(folder)} == before


def test_a_request_naming_another_host_is_refused(viewer):
    assert get(viewer, "/api/info", {"Host": "attacker.example:80"})[0] == 403
    assert get(viewer, "/image/0", {"Host": f"evil.test:{viewer.port}"})[0] == 403
    assert get(viewer, "/api/info", {"Host": f"localhost:{viewer.port}"})[0] == 200


def test_the_page_is_served_with_a_strict_content_policy(viewer):
    status, headers, body = get(viewer, "/")
    assert status == 200 and b'<script src="/static/view.js"' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    for name in ("view.js", "view.css"):
        assert get(viewer, f"/static/{name}")[0] == 200


# -- the export line ----------------------------------------------------------------------------------------------
def test_the_export_line_says_the_boxes_shown_and_saves_exactly_the_records_shown(viewer, results, tmp_path):
    plain = api(viewer, "/api/export")
    assert plain["command"] == f"kosmos export {results} --to coco export.json"
    assert plain["exact"] and "shown_command" not in plain

    narrowed = api(viewer, "/api/export?classes=dog,square&min_score=0.5&to=yolo")
    assert narrowed["command"] == f"kosmos export {results} --to yolo dataset/ --classes dog,square --min-score 0.5"
    assert not narrowed["exact"] and (narrowed["shown"], narrowed["boxes"]) == (2, 3)
    assert (
        narrowed["shown_command"] == "kosmos export shown.jsonl --to yolo dataset/ --classes dog,square --min-score 0.5"
    )

    status, headers, body = get(viewer, "/api/shown.jsonl?classes=dog,square&min_score=0.5")
    assert status == 200 and headers["Content-Disposition"] == 'attachment; filename="shown.jsonl"'
    shown = tmp_path / "shown.jsonl"
    shown.write_bytes(body)
    lines = [json.loads(line) for line in body.splitlines()]
    here = os.path.dirname(results)
    assert [row["path"] for row in lines] == [os.path.join(here, "photos", n) for n in ("a.png", "c.png")]
    os.chdir(tmp_path)  # the saved file exports from anywhere: its paths are absolute
    try:
        summary = export(str(shown), "coco", str(tmp_path / "out.json"), classes="dog,square", min_score=0.5)
    finally:
        os.chdir(ROOT)
    coco = json.loads((tmp_path / "out.json").read_text())
    assert (summary.images, summary.boxes) == (2, 3)
    assert sorted(len([a for a in coco["annotations"] if a["image_id"] == i["id"]]) for i in coco["images"]) == [1, 2]


def test_names_with_spaces_are_quoted_in_the_export_line(tmp_path):
    grey(tmp_path / "x.png", (10, 10))
    results = write(
        [ground_row("x.png", (10, 10), "An image of a dog.", [("a dog", [[0, 0, 5, 5]], [0.5])])],
        tmp_path / "my results.jsonl",
    )
    with start(results) as running:
        line = api(running, "/api/export?classes=traffic+light,dog")["command"]
    assert line == f"kosmos export '{results}' --to coco export.json --classes 'traffic light,dog'"


def test_refer_records_are_not_offered_for_export(tmp_path):
    grey(tmp_path / "x.png", (100, 80))
    record = ReferRecord(path="x.png", width=100, height=80, box_px=[10.0, 10.0, 50.0, 40.0], description="a grey box")
    with start(write([record], tmp_path / "refer.jsonl", Refer)) as running:
        offer = api(running, "/api/export")
    assert not offer["possible"] and "refer records" in offer["note"]


# -- find and refer ---------------------------------------------------------------------------------------------
def test_find_is_filtered_by_its_phrase_and_refer_by_its_region(tmp_path):
    grey(tmp_path / "x.png", (100, 80))
    finds = [
        FindRecord(
            path="x.png",
            width=100,
            height=80,
            phrase=p,
            boxes=[[0, 0, 0.5, 0.5]] * n,
            boxes_px=[[0, 0, 50, 40]] * n,
            scores=[0.5] * n,
        )
        for p, n in (("a dog", 1), ("a cat", 0), ("a dog", 2))
    ]
    with start(write(finds, tmp_path / "find.parquet", Find)) as running:
        assert rows(running, "phrase=a+dog") == [0, 2]
        assert [c["boxes"] for c in api(running, "/api/records?phrase=a+dog")["cards"]] == [1, 2]
        assert {p["value"]: p["count"] for p in api(running, "/api/facets")["phrases"]} == {"a dog": 2, "a cat": 1}
        assert rows(running, "sort=boxes") == [2, 0, 1]
    regions = [
        ReferRecord(path="x.png", width=100, height=80, box_px=b, description=d)
        for b, d in (([10.0, 10.0, 50.0, 40.0], "a grey box"), ([0.0, 0.0, 20.5, 30.0], "a corner"))
    ]
    with start(write(regions, tmp_path / "refer.jsonl", Refer)) as running:
        assert rows(running, "region=0,0,20.5,30") == [1]
        assert rows(running, "region=10,+10,+50,+40") == [0]
        assert rows(running, "text=corner") == [1]
        [card] = api(running, "/api/records?region=0,0,20.5,30")["cards"]
        assert drawn(card) == [("a corner", [0, 0, 20.5, 30])]
        assert {r["value"] for r in api(running, "/api/facets")["regions"]} == {"10,10,50,40", "0,0,20.5,30"}


# -- results that cannot be read, and the server's life ------------------------------------------------------------
def _unreadable(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "text.jsonl").write_text("hello\n")
    (tmp_path / "other.jsonl").write_text('{"name": "x"}\n')
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "binary.jsonl").write_bytes(bytes(range(256)) + b"\n")
    pq.write_table(pa.table({"name": ["x"]}), tmp_path / "foreign.parquet")
    (tmp_path / "nothing").mkdir()
    mixed = [
        json.dumps(ground_row("x.png", (10, 10), "An image of x.", [("x", [[0, 0, 5, 5]], [0.5])]).to_dict()),
        json.dumps(FindRecord(path="x.png", phrase="x").to_dict()),
    ]
    (tmp_path / "mixed.jsonl").write_text("\n".join(mixed) + "\n")
    return {
        "gone.jsonl": "results file not found",
        "empty.jsonl": "holds no records",
        "text.jsonl": "line 1 is not JSON",
        "other.jsonl": "line 1 is not a kosmos record",
        "junk.parquet": "is not a readable Parquet file",
        "binary.jsonl": "line 1 is not JSON",
        "foreign.parquet": "is not a kosmos record",
        "nothing": "a folder without Parquet parts",
        "mixed.jsonl": "holds ground and find records",
    }


def test_results_that_cannot_be_read_are_refused_before_anything_listens(tmp_path):
    for name, message in _unreadable(tmp_path).items():
        with pytest.raises(InputError, match=message):
            start(str(tmp_path / name))


def test_the_command_says_unreadable_results_in_one_line(tmp_path):
    cases = _unreadable(tmp_path)
    for name in ("gone.jsonl", "text.jsonl", "foreign.parquet"):
        done = subprocess.run(
            [sys.executable, "-m", "kosmos_cli", "view", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = done.stderr.splitlines()
        assert done.returncode == 2 and done.stdout == "", done.stderr
        assert len(lines) == 1 and lines[0].startswith("kosmos: error: ") and cases[name] in lines[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_command_serves_until_ctrl_c(results):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kosmos_cli", "view", results, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(url + "api/info", timeout=30) as answer:
            assert json.loads(answer.read())["records"] == 6
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and out == ""
    assert err.splitlines() == [
        f"kosmos view: 6 ground records of {results} at {url} (Ctrl-C to stop)",
        "kosmos view: stopped",
    ]
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)


def test_a_port_in_use_is_a_usage_error_naming_the_port(results):
    with start(results) as running:
        with pytest.raises(UsageError, match=f"port {running.port} is in use: pass another port"):
            start(results, port=running.port)
    with pytest.raises(UsageError, match="a port number from 0 to 65535"):
        start(results, port=70000)


# -- what must never stall: special files, slow images -----------------------------------------------------------
def test_records_of_named_pipes_are_refused_at_once_and_hold_up_no_other_image(tmp_path):
    os.mkfifo(tmp_path / "pipe1.png")
    os.mkfifo(tmp_path / "pipe2.png")
    os.mkfifo(tmp_path / "pipe.tar")
    grey(tmp_path / "x.png", (40, 30))
    found = [("x", [[0, 0, 5, 5]], [0.5])]
    paths = ["pipe1.png", "pipe2.png", "pipe.tar#k", "x.png"]
    results = write([ground_row(p, (40, 30), "An image of x.", found) for p in paths], tmp_path / "r.jsonl")
    with start(results) as running:
        began = time.monotonic()
        for row in (0, 1, 0, 1, 2):  # asked again: still no read left waiting
            status, _, body = get(running, f"/image/{row}")
            assert (status, body) == (422, b"not a regular file (a named pipe)\n")
        assert image_of(running, 3).size == (40, 30)
        assert time.monotonic() - began < 10


def test_a_named_pipe_as_the_results_is_refused_in_one_line(tmp_path):
    os.mkfifo(tmp_path / "r.jsonl")
    with pytest.raises(InputError, match=r"r.jsonl: not a regular file \(a named pipe\): pass the .jsonl"):
        start(str(tmp_path / "r.jsonl"))
    parts = tmp_path / "parts"
    parts.mkdir()
    os.mkfifo(parts / "0001.parquet")
    with pytest.raises(InputError, match="0001.parquet: not a regular file"):
        start(str(parts))


def test_a_slow_image_is_given_up_on_in_time_and_holds_up_no_other(folder):
    thumbs = Thumbnails(wait=0.5, at_once=2)
    with ImageServer() as server:
        for n in (1, 2, 3):  # more slow images than decodes at once
            server.files[f"/a{n}.png"] = (folder / "photos" / "a.png").read_bytes()
            began = time.monotonic()
            with pytest.raises(Slow, match=r"took more than 0.5s to read: try again later"):
                thumbs.get(server.url(f"/slow/3/a{n}.png"), 256)
            assert time.monotonic() - began < 2
        began = time.monotonic()
        assert Image.open(io.BytesIO(thumbs.get(str(folder / "photos" / "b.png"), 256))).size == (256, 160)
        assert time.monotonic() - began < 2  # while the slow ones are still being read
        time.sleep(3)  # the slow ones finish meanwhile: kept, as any image made
        assert Image.open(io.BytesIO(thumbs.get(server.url("/slow/3/a1.png"), 256))).size == (256, 160)


# -- the Host a request names, and its request line --------------------------------------------------------------
def raw(port, request: bytes) -> tuple[int, bytes]:
    """(status, body) of a request sent as raw bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize(
    "host, status",
    [
        ("127.0.0.1:{port}", 200),
        ("127.9.8.7:{port}", 200),  # 127.0.0.0/8 is loopback
        ("localhost:{port}", 200),
        ("LOCALHOST:{port}", 200),
        ("[::1]:{port}", 200),
        ("127.0.0.1.attacker.example:{port}", 403),  # a name that begins like an address
        ("127.attacker.example:{port}", 403),
        ("localhost.attacker.example:{port}", 403),
        ("attacker.example:{port}", 403),
        ("127.0.0.1:1", 403),  # another port
        ("127.0.0.1", 403),  # no port: only for port 80
        ("127.0.0.1:{port}:{port}", 403),
        ("[::1]x:{port}", 403),
        ("[::1:{port}", 403),
        ("10.0.0.1:{port}", 403),
        ("", 403),
    ],
)
def test_only_a_host_naming_this_loopback_server_is_answered(viewer, host, status):
    request = f"GET /api/info HTTP/1.1\r\nHost: {host.format(port=viewer.port)}\r\nConnection: close\r\n\r\n"
    assert raw(viewer.port, request.encode())[0] == status


def test_a_request_without_a_host_is_refused(viewer):
    assert raw(viewer.port, b"GET /api/info HTTP/1.0\r\n\r\n")[0] == 403


@pytest.mark.parametrize(
    "target, status",
    [
        ("http://other.example/api/info", 400),
        ("http://127.0.0.1:{port}/api/info", 400),  # a whole URL, even naming this server
        ("HTTP://other/", 400),
        ("*", 400),
        ("//other.example/api/info", 404),  # a path, not a host: nothing is there
        ("/api/info", 200),
    ],
)
def test_only_an_origin_form_request_line_is_answered(viewer, target, status):
    target = target.format(port=viewer.port)
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{viewer.port}\r\nConnection: close\r\n\r\n"
    got, body = raw(viewer.port, request.encode())
    assert got == status, body
    if status == 400:
        assert body == b"only a path is asked for here, not a whole URL\n"


@pytest.mark.parametrize(
    "bound, host, allowed",
    [
        ("192.168.1.5", "192.168.1.5:8000", True),  # --host names another interface: that one
        ("192.168.1.5", "192.168.1.6:8000", False),
        ("192.168.1.5", "localhost:8000", False),
        ("192.168.1.5", "attacker.example:8000", False),
        ("192.168.1.5", "192.168.1.5:8001", False),
        ("0.0.0.0", "192.168.1.5:8000", True),  # every interface: any address, never a name but localhost
        ("0.0.0.0", "localhost:8000", True),
        ("0.0.0.0", "attacker.example:8000", False),
        ("::", "[fe80::1]:8000", True),
        ("fe80::1", "[FE80::1]:8000", True),
        ("fe80::1", "[fe80::2]:8000", False),
        ("myhost.lan", "myhost.lan:8000", True),  # --host names this machine by a name: that name
        ("myhost.lan", "other.lan:8000", False),
        ("127.0.0.1", "127.0.0.1:8000", True),
        ("127.0.0.1", "127.000.0.1:8000", False),  # not an address Python or a browser writes
    ],
)
def test_the_host_must_name_the_interface_listened_on(bound, host, allowed):
    assert host_allowed(host, bound, 8000) is allowed


def test_a_server_on_every_interface_answers_addresses_but_not_names(results):
    with start(results, host="0.0.0.0") as running:
        for host, status in (
            (f"127.0.0.1:{running.port}", 200),
            (f"192.0.2.7:{running.port}", 200),
            (f"attacker.example:{running.port}", 403),
        ):
            request = f"GET /api/info HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            assert raw(running.port, request.encode())[0] == status


# -- a results file that changes under the viewer ----------------------------------------------------------------
def replace(path, records, task=Ground):
    """Write `records` beside `path` and rename over it, as kosmos's own rewrites do (--prune, --overwrite)."""
    tmp = f"{path}.tmp{os.path.splitext(str(path))[1]}"
    write(records, tmp, task)
    os.replace(tmp, path)


def few(tmp_path, n, name="r.jsonl"):
    for i in range(n):
        grey(tmp_path / f"{i}.png", (40 + i, 30))
    return [
        ground_row(f"{i}.png", (40 + i, 30), f"An image of x{i}.", [(f"x{i}", [[0, 0, 5, 5]], [0.5])]) for i in range(n)
    ]


@pytest.mark.parametrize("name", ["r.jsonl", "r.parquet"])
def test_a_results_file_rewritten_under_the_viewer_is_read_again(tmp_path, name):
    records = few(tmp_path, 5)
    path = write(records, tmp_path / name)
    with start(path) as running:
        assert api(running, "/api/info")["records"] == 5 and api(running, "/api/info")["version"] == 1
        assert image_of(running, 4).size == (44, 30)
        replace(path, records[3:])  # a --prune left two
        info = api(running, "/api/info")
        assert (info["records"], info["version"]) == (2, 2)
        page = api(running, "/api/records")
        assert [c["path"] for c in page["cards"]] == ["3.png", "4.png"] and page["version"] == 2
        assert api(running, "/api/record/0")["record"]["path"] == "3.png"
        assert image_of(running, 0).size == (43, 30)
        assert get(running, "/image/4")[0] == 404
        assert api(running, "/api/facets")["records"] == 2
        status, _, body = get(running, "/api/shown.jsonl")
        assert status == 200 and [json.loads(line)["path"] for line in body.splitlines()] == [
            str(tmp_path / "3.png"),
            str(tmp_path / "4.png"),
        ]
        # what the page asks of the reading it showed is refused, so it reloads
        status, _, body = get(running, "/api/records?offset=60&v=1")
        assert status == 409 and json.loads(body) == {
            "error": f"{path} changed since the page read it: reload the page",
            "version": 2,
        }
        assert get(running, "/image/0?v=1")[0] == 409
        assert get(running, "/api/records?v=2")[0] == 200


def test_records_added_to_the_results_keep_the_page_going(tmp_path):
    records = few(tmp_path, 6)
    path = write(records[:3], tmp_path / "r.jsonl")
    parts = tmp_path / "parts"
    parts.mkdir()
    write(records[:3], parts / "part-0001.parquet")
    for results, more in (
        (path, lambda: open(path, "a").writelines(json.dumps(r.to_dict()) + "\n" for r in records[3:])),
        (str(parts), lambda: write(records[3:], parts / "part-0002.parquet")),
    ):
        with start(results) as running:
            assert api(running, "/api/facets")["records"] == 3
            more()  # a run appending, a part added
            info = api(running, "/api/info")
            assert (info["records"], info["version"]) == (6, 1)  # the page's record numbers still hold
            assert rows(running, "v=1") == [0, 1, 2, 3, 4, 5]
            assert api(running, "/api/record/5?v=1")["record"]["path"] == "5.png"


def test_a_jsonl_cut_short_under_the_viewer_shows_its_whole_lines(tmp_path):
    records = few(tmp_path, 6)
    path = write(records, tmp_path / "r.jsonl")
    lines = open(path, "rb").read().splitlines(keepends=True)
    with start(path) as running:
        assert api(running, "/api/info")["records"] == 6
        with open(path, "r+b") as f:  # in place, in the middle of line 4
            f.truncate(sum(map(len, lines[:3])) + 10)
        assert api(running, "/api/info")["records"] == 3
        assert [c["path"] for c in api(running, "/api/records")["cards"]] == ["0.png", "1.png", "2.png"]
        status, _, body = get(running, "/api/shown.jsonl")
        assert status == 200 and len(body.splitlines()) == 3


def test_a_results_file_that_cannot_be_read_after_a_change_says_so_until_it_can(tmp_path):
    records = few(tmp_path, 3)
    path = write(records, tmp_path / "r.jsonl")
    with start(path) as running:
        assert api(running, "/api/info")["records"] == 3
        (tmp_path / "r.jsonl").write_text("not json\n")
        for route in ("/api/info", "/api/records", "/image/0"):
            status, headers, body = get(running, route)
            assert status == 503 and headers["Retry-After"] == "1"
            assert json.loads(body)["error"] == (
                f"{path} changed and cannot be read now: {path} line 1 is not JSON: pass the .jsonl or .parquet file "
                "written by kosmos ground, refer or find"
            )
        replace(path, records[:1])
        assert api(running, "/api/info")["records"] == 1


def test_a_record_no_longer_where_it_was_is_changed_never_another_record(tmp_path):
    records = few(tmp_path, 4)
    path = write(records, tmp_path / "r.jsonl")
    results = open_results(path)
    with open(path, "r+b") as f:  # rewritten in place: other records at the same offsets
        f.seek(0)
        f.write(b"\n".join(json.dumps(r.to_dict()).encode() for r in records[2:]) + b"\n")
        f.truncate()
    with pytest.raises(Changed, match="r.jsonl changed while it was viewed: record 0 is not where it was"):
        results.record(0)
    with pytest.raises(Changed):
        list(results.rows())
    table = tmp_path / "t.parquet"
    write(records, table)
    results = open_results(str(table))
    replace(table, records[:1])
    with pytest.raises(Changed, match="t.parquet changed: .*t.parquet was rewritten"):
        results.table()


def test_a_download_cut_short_by_a_change_reads_as_cut_short(tmp_path):
    grey(tmp_path / "x.png", (40, 30))
    found = [("x", [[0, 0, 5, 5]], [0.5])]
    many = [ground_row("x.png", (40, 30), "An image of x " + "y" * 200 + ".", found) for _ in range(20000)]
    path = write(many, tmp_path / "r.jsonl")
    size = os.path.getsize(path)
    with start(path) as running:
        assert api(running, "/api/facets")["records"] == 20000  # indexed: the download starts at once
        with urllib.request.urlopen(running.url + "api/shown.jsonl", timeout=30) as answer:
            assert answer.headers["Transfer-Encoding"] == "chunked" and answer.headers["Content-Length"] is None
            first = answer.read(1000)  # the server is blocked on a full socket, well before the end
            with open(path, "r+b") as f:
                f.truncate(size // 10)
            with pytest.raises(http.client.IncompleteRead):
                answer.read()
        assert first.startswith(b'{"path": ')
        # and a whole download ends as whole: its last chunk is sent
        status, headers, body = get(running, "/api/shown.jsonl")
        assert status == 200 and len(body.splitlines()) == api(running, "/api/info")["records"]


# -- tracebacks and words -----------------------------------------------------------------------------------------
def test_a_record_nested_500_deep_is_shown_to_a_bounded_depth(tmp_path):
    grey(tmp_path / "x.png", (40, 30))
    deep: list = []
    inner = deep
    for _ in range(500):
        inner.append([])
        inner = inner[0]
    record = ground_row("x.png", (40, 30), "An image of x.", [("x", [[0, 0, 5, 5]], [0.5])], deep=deep)
    path = write([record], tmp_path / "r.jsonl")  # a carried column, or a hand-edited file
    with start(path) as running:
        shown = api(running, "/api/record/0")["record"]["deep"]
        depth = 0
        while isinstance(shown, list):
            shown, depth = shown[0], depth + 1
        assert shown == "(nested more than 64 deep: see the results file)" and depth == 63
        status, _, body = get(running, "/api/shown.jsonl")
        assert status == 200 and json.loads(body)["path"] == str(tmp_path / "x.png")
    line = '{"path": "x.png", "task": "ground", "status": "ok", "deep": ' + "[" * 100000 + "]" * 100000 + "}\n"
    (tmp_path / "deeper.jsonl").write_text(line)
    with pytest.raises(InputError, match="deeper.jsonl line 1 is nested too deep to read"):
        start(str(tmp_path / "deeper.jsonl"))


def test_a_file_mtime_is_shown_as_a_date(tmp_path):
    grey(tmp_path / "x.png", (40, 30))
    record = ground_row("x.png", (40, 30), "An image of x.", [("x", [[0, 0, 5, 5]], [0.5])])
    record.file_mtime = 1796687999.75
    with start(write([record], tmp_path / "r.jsonl")) as running:
        answer = api(running, "/api/record/0")
    assert answer["record"]["file_mtime"] == 1796687999.75  # as stored
    assert answer["readable"] == {"file_mtime": "2026-12-07T23:59:59Z"}


def test_an_export_format_that_is_not_one_is_a_400_naming_them(viewer):
    for to in ("../../etc", "COCO", "x"):
        status, _, body = get(viewer, f"/api/export?to={urllib.request.quote(to)}")
        assert status == 400 and json.loads(body)["error"] == f"to {to!r}: one of {', '.join(FORMATS)}"
    assert api(viewer, "/api/export?to=")["command"].endswith("--to coco export.json")


def test_an_address_not_of_this_machine_is_said_so_not_a_port(results):
    with pytest.raises(UsageError) as caught:
        start(results, host="8.8.8.8")
    assert caught.value.render("--host") == (
        "--host 8.8.8.8: not an address of this machine (pass one of its own: 127.0.0.1 for this machine alone, "
        "0.0.0.0 for every interface)"
    )
    done = subprocess.run(
        [sys.executable, "-m", "kosmos_cli", "view", results, "--host", "8.8.8.8"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "kosmos: error: --host 8.8.8.8: not an address of this machine (pass one of its own: 127.0.0.1 for this "
        "machine alone, 0.0.0.0 for every interface)"
    ]


def test_remote_results_are_refused_in_one_line(tmp_path):
    for url in ("s3://bucket/results.parquet", "https://example.com/r.jsonl"):
        done = subprocess.run(
            [sys.executable, "-m", "kosmos_cli", "view", url], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.splitlines() == [
            f"kosmos: error: {url}: kosmos view reads local results: copy the results file (or folder of parts) "
            "here first, then view the copy"
        ]


def test_open_without_a_browser_says_so_and_still_serves(results, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(BROWSER="/bin/false", PATH=str(tmp_path))  # no browser to be found
    proc = subprocess.Popen(
        [sys.executable, "-m", "kosmos_cli", "view", results, "--port", str(port), "--open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = proc.stdout.readline().strip()
        assert proc.stderr.readline().startswith("kosmos view: 6 ground records")
        assert proc.stderr.readline() == f"kosmos view: no browser could be opened here: open {url} yourself\n"
        with urllib.request.urlopen(url + "api/info", timeout=30) as answer:
            assert json.loads(answer.read())["records"] == 6
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and err == "kosmos view: stopped\n"


def test_an_image_whose_name_is_not_valid_unicode_is_shown_as_draw_opens_it(tmp_path):
    """The name is recorded with `\\xNN` escapes (inputs/names.py): the page opens it by its original bytes, as draw."""
    from kosmos_cli.inputs.names import recorded

    name = os.fsdecode(b"caf\xe9.png")
    grey(tmp_path / name, (40, 30))
    found = [("x", [[0, 0, 5, 5]], [0.5])]
    path = write([ground_row(recorded(name), (40, 30), "An image of x.", found)], tmp_path / "r.jsonl")
    with start(path) as running:
        assert image_of(running, 0).size == (40, 30)
