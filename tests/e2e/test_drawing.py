"""drawing/ and api.draw on real pixels: draw, write, read the file back, look where the box is."""

import json
import os
import time
from html.parser import HTMLParser
from urllib.parse import unquote

import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw
from shapes import save_rotated_jpeg

from kosmos_cli import InputError, UsageError, draw, tasks
from kosmos_cli.drawing import (
    PALETTE,
    Drawer,
    Shape,
    annotate,
    color,
    font_size,
    input_root,
    label_box,
    line_width,
    luminance,
    shapes_of,
    text_color,
)
from kosmos_cli.drawing.render import _font
from kosmos_cli.output.formats import records_table
from kosmos_cli.tasks import Find, FindRecord, GroundRecord, ReferRecord
from kosmos_cli.tasks.records import Entity

GREY = (128, 128, 128)


def find_row(path, box, size, phrase="a dog", status="ok"):
    record = FindRecord(
        path=str(path),
        width=size[0],
        height=size[1],
        status=status,
        phrase=phrase,
        boxes=[[box[0] / size[0], box[1] / size[1], box[2] / size[0], box[3] / size[1]]],
        boxes_px=[list(box)],
        error=None if status == "ok" else "file not found",
    )
    return record.to_dict()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def close(a, b, tol):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def check_box(img, box, rgb, background, tol=0):
    """The entity's colour runs along all four sides just inside the box; inside and outside are untouched."""
    x1, y1, x2, y2 = box
    lw = line_width(*img.size)
    band = 1 + lw // 2  # the middle of the coloured band, inside the 1-pixel edge
    px = img.convert("RGB").load()
    for t in (0.25, 0.5, 0.75):
        x = int(x1 + t * (x2 - x1))
        y = int(y1 + t * (y2 - y1))
        assert close(px[x1 + band, y], rgb, tol), ("left", px[x1 + band, y])
        assert close(px[x2 - 1 - band, y], rgb, tol), ("right", px[x2 - 1 - band, y])
        assert close(px[x, y1 + band], rgb, tol), ("top", px[x, y1 + band])
        assert close(px[x, y2 - 1 - band], rgb, tol), ("bottom", px[x, y2 - 1 - band])
        inside = (x1 + lw + 2 + 3, y)
        assert close(px[inside], background, tol), ("inside", px[inside])
    for outside in ((x1 - 3, (y1 + y2) // 2), (x2 + 2, (y1 + y2) // 2), ((x1 + x2) // 2, y2 + 2)):
        assert close(px[outside], background, tol), ("outside", outside, px[outside])


@pytest.mark.parametrize("ext, tol", [(".png", 0), (".jpg", 40)])
def test_a_drawn_box_is_where_the_box_is(tmp_path, ext, tol):
    src = tmp_path / "photos" / f"a{ext}"
    src.parent.mkdir()
    Image.new("RGB", (400, 300), GREY).save(src, quality=95)
    rows = [find_row(src, (60, 80, 300, 260), (400, 300))]
    summary = draw(write_jsonl(tmp_path / "r.jsonl", rows), str(tmp_path / "out"))
    assert summary.drawn == 1
    out = tmp_path / "out" / f"a{ext}"
    with Image.open(out) as img:
        assert img.size == (400, 300) and img.format == ("PNG" if ext == ".png" else "JPEG")
        check_box(img, (60, 80, 300, 260), PALETTE[0], GREY, tol)


def test_each_entity_gets_its_own_colour_and_every_box_is_drawn(tmp_path):
    img = Image.new("RGB", (480, 320), GREY)
    row = GroundRecord(
        path="x.png",
        width=480,
        height=320,
        caption="a dog and two cats",
        entities=[
            Entity("a dog", 0, 5, [], [[20, 40, 200, 300]]),
            Entity("two cats", 10, 18, [], [[250, 30, 460, 140], [250, 180, 460, 300]]),
        ],
    ).to_dict()
    annotate(img, shapes_of(row))
    check_box(img, (20, 40, 200, 300), PALETTE[0], GREY)
    check_box(img, (250, 30, 460, 140), PALETTE[1], GREY)
    check_box(img, (250, 180, 460, 300), PALETTE[1], GREY)


def test_boxes_follow_the_displayed_image_of_an_exif_rotated_jpeg(tmp_path):
    src = tmp_path / "rotated.jpg"
    save_rotated_jpeg(Image.new("RGB", (400, 240), GREY), src, 6)
    rows = [find_row(src, (220, 40, 380, 200), (400, 240))]
    draw(write_jsonl(tmp_path / "r.jsonl", rows), str(tmp_path / "out"))
    with Image.open(tmp_path / "out" / "rotated.jpg") as img:
        assert img.size == (400, 240)
        check_box(img, (220, 40, 380, 200), PALETTE[0], GREY, tol=40)


def test_boxes_are_scaled_when_the_image_changed_size(tmp_path):
    src = tmp_path / "a.png"
    Image.new("RGB", (400, 300), GREY).save(src)
    rows = [find_row(src, (30, 40, 150, 130), (200, 150))]  # recorded at half the size
    draw(write_jsonl(tmp_path / "r.jsonl", rows), str(tmp_path / "out"))
    with Image.open(tmp_path / "out" / "a.png") as img:
        check_box(img, (60, 80, 300, 260), PALETTE[0], GREY)


def test_line_width_and_font_grow_with_the_image():
    assert line_width(224, 224) == 2 and line_width(4000, 3000) == 16
    assert font_size(224, 224) == 12 and font_size(3600, 2400) == 100
    big = Image.new("RGB", (2000, 1500), GREY)
    annotate(big, shapes_of(find_row("x", (100, 200, 1800, 1400), (2000, 1500))))
    check_box(big, (100, 200, 1800, 1400), PALETTE[0], GREY)
    assert big.getpixel((100 + line_width(2000, 1500), 800)) == PALETTE[0]  # the band is line_width wide


def test_text_contrasts_with_every_label_colour():
    for rgb in PALETTE:
        a, b = sorted([luminance(rgb), luminance(text_color(rgb))])
        assert (b + 0.05) / (a + 0.05) >= 4.5, rgb
    assert text_color((255, 255, 0)) == (0, 0, 0) and text_color((0, 0, 90)) == (255, 255, 255)


def test_labels_look_the_same_on_light_and_dark_pictures():
    shapes = shapes_of(find_row("x", (40, 60, 200, 180), (300, 200), phrase="a red car"))
    light = annotate(Image.new("RGB", (300, 200), (255, 255, 255)), shapes)
    dark = annotate(Image.new("RGB", (300, 200), (0, 0, 0)), shapes)
    font = _font(font_size(300, 200))
    (left, top, right, bottom), text, _ = label_box(ImageDraw.Draw(light), "a red car", font, 40, 60, 300, 200)
    assert text == "a red car" and bottom <= 60  # above the box
    region = (left, top, right, bottom)
    assert light.crop(region).tobytes() == dark.crop(region).tobytes()  # filled: the background never shows
    colours = {c for _, c in light.crop(region).getcolors(10000)}
    assert PALETTE[0] in colours and text_color(PALETTE[0]) in colours


@pytest.mark.parametrize(
    "x, y, where",
    [
        (0, 0, "inside at the top"),
        (290, 5, "pushed left"),
        (10, 195, "pulled up"),
        (100, 100, "above"),
    ],
)
def test_labels_stay_inside_the_picture(x, y, where):
    img = Image.new("RGB", (300, 200))
    font = _font(font_size(300, 200))
    (left, top, right, bottom), text, _ = label_box(ImageDraw.Draw(img), "a long phrase", font, x, y, 300, 200)
    assert 0 <= left < right <= 300 and 0 <= top < bottom <= 200, where
    assert text == "a long phrase"
    if where == "above":
        assert bottom <= y


def test_a_label_too_long_for_the_picture_is_cut_short():
    img = Image.new("RGB", (120, 80))
    font = _font(font_size(120, 80))
    (left, _, right, _), text, _ = label_box(ImageDraw.Draw(img), "a very long description " * 5, font, 0, 30, 120, 80)
    assert text.endswith("…") and len(text) < 40 and 0 <= left < right <= 120


def test_layout_below_the_common_folder_and_names_that_do_not_collide(tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for name in ("a.png", "a.bmp", "b.JPG", "sub/c.webp"):
        Image.new("RGB", (64, 48), GREY).save(photos / name, format="JPEG" if name.endswith("JPG") else None)
    rows = [find_row(photos / "a.png", (4, 4, 40, 40), (64, 48), phrase=p) for p in ("a dog", "a cat")]
    rows += [find_row(photos / n, (4, 4, 40, 40), (64, 48)) for n in ("a.bmp", "b.JPG", "sub/c.webp")]
    rows.append(find_row(photos / "gone.png", (4, 4, 40, 40), (64, 48), status="error"))
    out = tmp_path / "out"
    written = []
    summary = draw(write_jsonl(tmp_path / "r.jsonl", rows), str(out), on_drawn=written.append)
    assert [os.path.relpath(p, out) for p in written] == ["a.png", "a-2.png", "a-3.png", "b.JPG", "sub/c.png"]
    assert (summary.drawn, summary.skipped, summary.failed) == (5, 1, 0)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        ".kosmos-drawn",
        "a-2.png",
        "a-3.png",
        "a.png",
        "b.JPG",
        "sub",
        "sub/c.png",
    ]


def test_relative_paths_are_found_beside_the_results_file(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    Image.new("RGB", (64, 48), GREY).save(tmp_path / "run" / "a.png")
    results = write_jsonl(tmp_path / "run" / "r.jsonl", [find_row("a.png", (4, 4, 40, 40), (64, 48))])
    monkeypatch.chdir(tmp_path)
    assert draw(results, str(tmp_path / "out")).drawn == 1
    assert (tmp_path / "out" / "a.png").exists()


def test_an_image_that_cannot_be_opened_is_counted_and_the_rest_drawn(tmp_path):
    Image.new("RGB", (64, 48), GREY).save(tmp_path / "a.png")
    rows = [find_row(tmp_path / name, (4, 4, 40, 40), (64, 48)) for name in ("gone.png", "a.png")]
    summary = draw(write_jsonl(tmp_path / "r.jsonl", rows), str(tmp_path / "out"))
    assert (summary.drawn, summary.failed) == (1, 1) and "gone.png: file not found" in summary.failures[0]


def test_ground_refer_and_find_records_from_parquet(tmp_path):
    src = tmp_path / "a.png"
    Image.new("RGB", (200, 160), GREY).save(src)
    records = {
        "ground": GroundRecord(
            path=str(src),
            width=200,
            height=160,
            caption="a dog",
            entities=[Entity("a dog", 0, 5, [[0.1, 0.1, 0.6, 0.6]], [[20, 16, 120, 96]])],
        ),
        "refer": ReferRecord(
            path=str(src),
            width=200,
            height=160,
            box_px=[20.0, 16.0, 120.0, 96.0],
            box_model_px=[18, 15, 122, 98],
            description="a dog",
        ),
        "find": FindRecord(
            path=str(src),
            width=200,
            height=160,
            phrase="a dog",
            boxes=[[0.1, 0.1, 0.6, 0.6]],
            boxes_px=[[20, 16, 120, 96]],
        ),
    }
    for task, record in records.items():
        results = tmp_path / f"{task}.parquet"
        pq.write_table(records_table([record], tasks.get(task)), results)
        out = tmp_path / task
        assert draw(str(results), str(out)).drawn == 1, task
        with Image.open(out / "a.png") as img:
            check_box(img, (20, 16, 120, 96), PALETTE[0], GREY)


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.marks = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("a", "img"):
            self.links.append(attrs.get("href") or attrs.get("src"))
        if tag == "mark":
            self.marks.append(attrs["style"])


def test_html_gallery_opens_from_the_folder(tmp_path):
    photos = tmp_path / "my photos"
    photos.mkdir()
    for name in ("a #1.png", "b.png"):
        Image.new("RGB", (64, 48), GREY).save(photos / name)
    ground = GroundRecord(
        path=str(photos / "a #1.png"),
        width=64,
        height=48,
        caption='a <b>dog</b> & "cat"',
        entities=[Entity("<b>dog</b>", 2, 12, [], [[4, 4, 30, 30]]), Entity('"cat"', 15, 20, [], [[30, 10, 60, 40]])],
    ).to_dict()
    bad = GroundRecord(path=str(photos / "b.png"), status="error", error="cannot decode").to_dict()
    out = tmp_path / "out"
    summary = draw(write_jsonl(tmp_path / "r.jsonl", [ground, bad]), str(out), html=True)
    assert summary.index == str(out / "index.html") and summary.drawn == 1
    page = (out / "index.html").read_text()
    assert "<b>dog</b>" not in page and "&lt;b&gt;dog&lt;/b&gt;" in page and "&amp;" in page
    parser = Links()
    parser.feed(page)
    assert parser.links and all(not link.startswith(("/", "file:", "http")) for link in parser.links)
    for link in parser.links:
        assert (out / unquote(link)).is_file(), link
    assert parser.marks == [
        f"background:#{'%02x%02x%02x' % PALETTE[i]};color:#{'%02x%02x%02x' % text_color(PALETTE[i])}" for i in (0, 1)
    ]
    assert not list(out.glob("*.tmp"))


def test_files_that_are_not_results_are_refused_before_anything_is_written(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    good = find_row(tmp_path / "a.png", (1, 1, 6, 6), (8, 8))
    cases = {
        "manifest.jsonl": '{"path": "a.png", "phrase": "a dog"}\n' + json.dumps(good) + "\n",
        "text.jsonl": "not json\n" + json.dumps(good) + "\n",
        "a.csv": "path,x1\na.png,1\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match="kosmos"):
            draw(str(tmp_path / name), str(tmp_path / "out"))
    with pytest.raises(InputError, match="not a results file"):
        draw(str(tmp_path / "a.png"), str(tmp_path / "out"))
    with pytest.raises(InputError, match="not found"):
        draw(str(tmp_path / "missing.jsonl"), str(tmp_path / "out"))
    pq.write_table(
        records_table([FindRecord(path="a.png")], Find).drop(["phrase", "status"]), tmp_path / "foreign.parquet"
    )
    with pytest.raises(InputError, match="not a kosmos record"):
        draw(str(tmp_path / "foreign.parquet"), str(tmp_path / "out"))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 nothing")
    with pytest.raises(InputError, match="not a readable Parquet"):
        draw(str(tmp_path / "broken.parquet"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_out_dir_must_not_be_the_images_folder_or_a_file(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    results = write_jsonl(tmp_path / "r.jsonl", [find_row(tmp_path / "a.png", (1, 1, 6, 6), (8, 8))])
    before = (tmp_path / "a.png").read_bytes()
    with pytest.raises(UsageError, match="folder of the images"):
        draw(results, str(tmp_path))
    with pytest.raises(UsageError, match="is a file"):
        draw(results, results)
    assert (tmp_path / "a.png").read_bytes() == before


def test_input_root_is_the_common_folder_of_the_inputs(tmp_path, monkeypatch):
    (tmp_path / "p" / "q").mkdir(parents=True)
    (tmp_path / "p" / "m.csv").write_text("path\n")
    monkeypatch.chdir(tmp_path)
    assert input_root(["p/q"]) == str(tmp_path / "p" / "q")
    assert input_root(["p/q", "p/m.csv"]) == str(tmp_path / "p")
    assert input_root(["p/**/*.jpg"]) == str(tmp_path / "p")
    assert input_root(["-"]) == str(tmp_path)


def test_drawer_keeps_whole_paths_of_images_outside_its_base(tmp_path):
    Image.new("RGB", (32, 32), GREY).save(tmp_path / "x.png")
    with Drawer(str(tmp_path / "out"), str(tmp_path / "elsewhere")) as drawer:
        target = drawer.add(find_row(tmp_path / "x.png", (2, 2, 20, 20), (32, 32)))
    assert target == os.path.join(str(tmp_path / "out"), str(tmp_path / "x.png").lstrip(os.sep))
    assert color(len(PALETTE)) == PALETTE[0]


# -- Background: ground --draw draws on a thread of its own ------------------------------------------------------
def _records(folder, n):
    records = []
    for i in range(n):
        path = folder / f"img{i:02d}.png"
        Image.new("RGB", (120, 90), (20 * i % 255, 128, 128)).save(path)
        records.append(
            FindRecord(
                path=str(path),
                width=120,
                height=90,
                status="ok",
                phrase=f"thing {i}",
                boxes=[[0.1, 0.1, 0.5, 0.6]],
                boxes_px=[[12, 9, 60, 54]],
            )
        )
    return records


def test_background_drawing_writes_what_drawing_in_line_writes(tmp_path):
    """3 threads, one handful waiting at most: same files, same pixels, same gallery, same order of reports;
    an error record and an unreadable image among them are counted the same way."""
    from kosmos_cli.drawing import Background

    records = _records(tmp_path, 10)
    (tmp_path / "img03.png").write_bytes(b"not an image")
    records[6].status, records[6].error = "error", "cannot identify image file"
    rows = [r.to_dict() for r in records]
    with Drawer(str(tmp_path / "inline"), str(tmp_path), html=True) as inline:
        said_inline = [inline.add(row) for row in rows]
    said_bg = []
    with Background(
        Drawer(str(tmp_path / "bg"), str(tmp_path), html=True), threads=3, depth=1, on_row=said_bg.append
    ) as bg:
        for start in range(0, 10, 3):
            bg.add_rows(rows[start : start + 3])
    assert [os.path.basename(t) if t else None for t in said_bg] == [
        os.path.basename(t) if t else None for t in said_inline
    ]
    assert said_inline.count(None) == 2
    for summary in (inline.summary, bg.summary):
        assert (summary.drawn, summary.skipped, summary.failed) == (8, 1, 1)
    names = sorted(os.listdir(tmp_path / "inline"))
    assert names == sorted(os.listdir(tmp_path / "bg")) and len(names) == 10  # 8 images, index.html, the mark
    for name in names:  # same pixels, same gallery in the same order
        assert (tmp_path / "inline" / name).read_bytes() == (tmp_path / "bg" / name).read_bytes(), name


def test_a_write_error_on_the_drawing_thread_reaches_the_caller(tmp_path):
    from kosmos_cli import OutputError
    from kosmos_cli.drawing import Background

    records = _records(tmp_path, 4)
    drawer = Drawer(str(tmp_path / "out"), str(tmp_path))
    (tmp_path / "out" / "img01.png").mkdir()  # where the second image goes: it cannot be written there
    with pytest.raises(OutputError, match="cannot write"):
        with Background(drawer) as bg:
            bg.add_records(records[:2])
            bg._thread.join(timeout=0.01)  # the error may come back here or at the end: either way it comes
            bg.add_records(records[2:])


def test_an_error_reporting_a_row_stops_the_drawing_and_never_blocks_the_feeder(tmp_path):
    """on_row fails on the first row while rows keep coming, one handful waiting at most: the error comes back
    (on an add_rows or at the end) and the rows after it are skipped, not left blocking add_rows."""
    from kosmos_cli.drawing import Background

    records = _records(tmp_path, 12)

    def on_row(target):
        raise RuntimeError("the reader of the results broke")

    with pytest.raises(RuntimeError, match="reader"):
        with Background(
            Drawer(str(tmp_path / "out"), str(tmp_path), html=True), threads=1, depth=1, on_row=on_row
        ) as bg:
            for record in records:
                bg.add_records([record])
    assert not bg._thread.is_alive() and bg.summary.drawn <= 1
    assert not (tmp_path / "out" / "index.html").exists()


def test_an_interrupted_background_drawing_stops_and_leaves_no_gallery(tmp_path):
    from kosmos_cli.drawing import Background

    records = _records(tmp_path, 6)
    with pytest.raises(KeyboardInterrupt):
        with Background(Drawer(str(tmp_path / "out"), str(tmp_path), html=True)) as bg:
            bg.add_records(records)
            raise KeyboardInterrupt
    assert not bg._thread.is_alive()
    assert (
        not any(name.startswith("index.html") for name in os.listdir(tmp_path / "out"))
        if (tmp_path / "out").exists()
        else True
    )


def test_background_drawing_reports_wall_time_not_the_sum_over_threads(tmp_path):
    from kosmos_cli.drawing import Background

    records = _records(tmp_path, 8)
    started = time.perf_counter()
    with Background(
        Drawer(str(tmp_path / "out"), str(tmp_path)), threads=4, on_row=lambda target: time.sleep(0.05)
    ) as bg:  # a slow reader of the results: 0.4 s at least
        bg.add_records(records)
    wall = time.perf_counter() - started
    assert bg.summary.drawn == 8 and 0.4 <= bg.summary.seconds <= wall


# -- any image size draws; a drawing failure is that image's warning --------------------------------------------
@pytest.mark.parametrize("size", [(300, 2), (600, 5), (2, 2), (3, 3), (1, 1), (5, 600), (1, 300)])
def test_every_box_draws_on_an_image_of_any_size(size):
    w, h = size
    boxes = [[0, 0, w, h], [0, 0, 1, 1], [0, 0, 2, 2], [1, 0, 2, h], [0, 0, w, 1], [-5, -5, 1000, 1000], [0, 0, 4, 5]]
    img = Image.new("RGB", size, GREY)
    annotate(img, [Shape("a long label for a small picture", boxes, PALETTE[0], [0.5] * len(boxes))])
    assert img.getpixel((0, 0)) != GREY  # every box there starts at the corner: something was drawn


def test_thin_images_draw_through_kosmos_draw(tmp_path):
    rows = []
    for w, h in [(300, 2), (600, 5), (2, 2), (3, 3)]:
        path = tmp_path / f"{w}x{h}.png"
        Image.new("RGB", (w, h), GREY).save(path)
        rows.append(find_row(path, (0, 0, w, h), (w, h)))
    summary = draw(write_jsonl(tmp_path / "r.jsonl", rows), str(tmp_path / "out"))
    assert (summary.drawn, summary.failed) == (4, 0)


def test_a_drawing_failure_is_that_images_warning_and_the_rest_is_drawn(tmp_path, monkeypatch, caplog):
    import kosmos_cli.drawing.drawer as drawer_module

    real = drawer_module.annotate

    def annotate_but_b(image, shapes, scale):
        if image.size == (50, 40):
            raise ValueError("a bug in the renderer")
        return real(image, shapes, scale)

    monkeypatch.setattr(drawer_module, "annotate", annotate_but_b)
    rows = []
    for name, size in (("a.png", (64, 48)), ("b.png", (50, 40)), ("c.png", (64, 48))):
        Image.new("RGB", size, GREY).save(tmp_path / name)
        rows.append(find_row(tmp_path / name, (1, 1, 20, 20), size))
    summary = draw(write_jsonl(tmp_path / "r.jsonl", rows), str(tmp_path / "out"))
    assert (summary.drawn, summary.failed) == (2, 1)
    assert summary.failures == [f"{tmp_path / 'b.png'}: ValueError: a bug in the renderer"]


def test_ground_draw_survives_a_drawing_failure_and_a_rerun_draws_what_was_in_flight(
    tmp_path, tiny_engine, monkeypatch
):
    import kosmos_cli
    import kosmos_cli.drawing.drawer as drawer_module

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        Image.new("RGB", (40 + i, 30), GREY).save(photos / f"p{i}.png")
    out, drawn = str(tmp_path / "g.jsonl"), tmp_path / "drawn"

    def broken(image, shapes, scale):
        raise ValueError("x1 must be greater than or equal to x0")

    monkeypatch.setattr(drawer_module, "annotate", broken)
    first = kosmos_cli.ground([str(photos)], out, engine=tiny_engine, batch_size=2, draw=str(drawn))
    assert (first.done, first.drawing.drawn, first.drawing.failed) == (5, 0, 5)  # every record written
    monkeypatch.undo()
    again = kosmos_cli.ground([str(photos)], out, engine=tiny_engine, batch_size=2, draw=str(drawn))
    assert (again.done, again.skipped, again.drawing.drawn, again.drawing.failed) == (0, 5, 5, 0)
    assert sorted(p.name for p in drawn.glob("*.png")) == [f"p{i}.png" for i in range(5)]
    for name in ("p1.png", "p3.png"):  # written to the output, not drawn yet when the run stopped
        (drawn / name).unlink()
    last = kosmos_cli.ground([str(photos)], out, engine=tiny_engine, batch_size=2, draw=str(drawn))
    assert (last.skipped, last.drawing.drawn) == (5, 2)
    assert sorted(p.name for p in drawn.glob("*.png")) == [f"p{i}.png" for i in range(5)]
