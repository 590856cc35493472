"""kosmos view in a real browser: headless Chromium from the system's packages (Debian: chromium, chromium-driver;
.ci/browser installs them), driven by selenium through /usr/bin/chromedriver, never a downloaded one.

The results are the shapes model's own: scenes grounded, found and referred by tests/fixtures/kosmos2-shapes,
one of them a JPEG stored turned with an EXIF orientation. What the page draws is checked against the records:
boxes in number and place (within a pixel at the displayed scale), the image under them in the displayed frame,
every filter, the sorts, the address, the detail view and its keys, the export line. A screenshot of the grid is
kept (its path is printed)."""

import json
import os
import random
import shutil
import time
import urllib.parse

import pytest
import shapes
from PIL import Image

from kosmos_cli import find, ground, refer
from kosmos_cli.exports.classes import Classes
from kosmos_cli.output.reader import read_records
from kosmos_cli.tasks import GroundRecord
from kosmos_cli.view import start

selenium = pytest.importorskip("selenium", reason="needs selenium (pip install -e '.[test]')")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER),
        reason="needs Chromium and its driver from the system's packages (Debian: apt-get install chromium "
        "chromium-driver; .ci/browser does it)",
    ),
]


# -- the results ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Six scenes, one a JPEG stored turned (EXIF 6), and a file that is not an image: path -> (w, h, shapes)."""
    folder = tmp_path_factory.mktemp("view-scenes")
    rng = random.Random(2024)
    truth = {}
    for i in range(6):
        width, height = shapes.CLI_SIZES[i % len(shapes.CLI_SIZES)]
        img, objs = shapes.make_scene(rng, width, height, noisy=False)
        if i == 2:
            path = folder / "scene_2_exif6.jpg"
            shapes.save_rotated_jpeg(img, path, 6)
        else:
            path = folder / f"scene_{i}.png"
            img.save(path)
        truth[str(path)] = (width, height, objs)
    (folder / "broken.png").write_bytes(b"not an image")
    return folder, truth


@pytest.fixture(scope="module")
def grounded(shapes_engine, scenes, tmp_path_factory):
    folder, _ = scenes
    out = str(tmp_path_factory.mktemp("view-out") / "grounded.parquet")
    ground([str(folder)], out, engine=shapes_engine)
    rows = list(read_records(out))
    assert sum(r["status"] == "error" for r in rows) == 1 and any(r["path"].endswith("exif6.jpg") for r in rows)
    return out, rows


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager, were it ever asked, downloads nothing
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)  # the system's driver: no download
    driver.set_script_timeout(20)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def viewer(grounded):
    with start(grounded[0]) as running:
        yield running


# -- reading the page -------------------------------------------------------------------------------------------
def settled(read, expected, timeout=15.0):
    """What `read()` gives once it gives `expected`, or what it gives at the end of `timeout` (then the assertion
    that follows shows it): the page loads a little after each change."""
    end = time.monotonic() + timeout
    while True:
        got = read()
        if got == expected or time.monotonic() > end:
            return got
        time.sleep(0.05)


def open_page(driver, url):
    driver.get(url)
    assert settled(lambda: driver.execute_script("return document.body.dataset.ready || null"), "true") == "true"


def grid(driver):
    return driver.execute_script("return [...document.querySelectorAll('#grid .card')].map(c => +c.dataset.row)")


def boxes_per_card(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#grid .card')].map(c => c.querySelectorAll('g.box').length)"
    )


def change(driver, name, value):
    """Set a filter as a person would: a list's option picked, a field's value changed."""
    driver.execute_script(
        "const f = document.getElementById('filters').elements[arguments[0]];"
        "f.value = arguments[1]; f.dispatchEvent(new Event('change', {bubbles: true}));",
        name,
        value,
    )


GEOMETRY = """
const scope = document.querySelector(arguments[0]);
return [...scope.querySelectorAll(arguments[1])].map(holder => {
  const img = holder.querySelector('.pic img');
  const r = img.getBoundingClientRect();
  const boxes = [...holder.querySelectorAll('g.box rect.line')].map(rect => {
    const b = rect.getBBox(), m = rect.getScreenCTM();
    return [b.x * m.a + m.e, b.y * m.d + m.f, (b.x + b.width) * m.a + m.e, (b.y + b.height) * m.d + m.f];
  });
  return {row: +(holder.dataset.row ?? -1), img: [r.left, r.top, r.width, r.height], boxes: boxes,
          natural: [img.naturalWidth, img.naturalHeight]};
});
"""


def pixel_boxes(row):
    return [b for e in row.get("entities") or [] for b in e["boxes_px"]]


def assert_boxes_where_the_record_says(drawn, row):
    """`drawn` (GEOMETRY of one picture): as many boxes as the record has, each within 1 px of its pixel box at the
    displayed scale, over an image shown at the record's width x height."""
    left, top, width, height = drawn["img"]
    scale = width / row["width"]
    assert abs(height - row["height"] * scale) <= 1, (drawn, row["path"])
    expected = [
        [left + b[0] * scale, top + b[1] * scale, left + b[2] * scale, top + b[3] * scale] for b in pixel_boxes(row)
    ]
    assert len(drawn["boxes"]) == len(expected), row["path"]
    for got, want in zip(drawn["boxes"], expected):
        assert max(abs(g - w) for g, w in zip(got, want)) <= 1, (row["path"], got, want)


def images_loaded(driver, scope="#grid"):
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' .pic img')].every(i => i.complete)", scope
    )


# -- the grid -----------------------------------------------------------------------------------------------------
def test_cards_draw_each_records_boxes_where_its_pixel_boxes_are_over_the_displayed_image(
    browser, viewer, grounded, scenes, tmp_path_factory, capsys
):
    _, rows = grounded
    _, truth = scenes
    open_page(browser, viewer.url)
    assert grid(browser) == list(range(len(rows)))
    assert settled(lambda: images_loaded(browser), True)
    drawn = browser.execute_script(GEOMETRY, "#grid", ".card")
    for picture in drawn:
        row = rows[picture["row"]]
        if row["status"] != "ok":
            assert picture["boxes"] == []
            continue
        assert_boxes_where_the_record_says(picture, row)
        w, h = picture["natural"]
        assert abs(w / h - row["width"] / row["height"]) < 0.02, row["path"]  # sent as displayed, turned or not

    # the image under the boxes is in the displayed frame: each true shape's middle shows the shape's colour there
    browser.execute_script("document.querySelectorAll('#grid .pic svg').forEach(s => s.style.visibility = 'hidden')")
    shot = tmp_path_factory.mktemp("view-shots") / "images.png"
    browser.save_screenshot(str(shot))
    with Image.open(shot) as screen:
        screen = screen.convert("RGB")
        for picture in drawn:
            row = rows[picture["row"]]
            if row["status"] != "ok":
                continue
            width, height, objs = truth[row["path"]]
            left, top, shown, _ = picture["img"]
            scale = shown / width
            for obj in objs:
                x = left + (obj.box[0] + obj.box[2]) / 2 * scale
                y = top + (obj.box[1] + obj.box[3]) / 2 * scale
                pixel = screen.getpixel((int(x), int(y)))
                assert max(abs(p - c) for p, c in zip(pixel, shapes.COLORS[obj.color])) < 40, (row["path"], obj)
    browser.execute_script("document.querySelectorAll('#grid .pic svg').forEach(s => s.style.visibility = '')")

    kept = tmp_path_factory.mktemp("view-artefacts") / "grid.png"
    browser.save_screenshot(str(kept))
    with capsys.disabled():
        print(f"\nscreenshot of the grid: {kept}")
    assert kept.stat().st_size > 10_000


def _classes(phrase, named):
    return Classes(named).key(phrase) is not None


def test_each_filter_changes_the_grid_as_its_records_say(browser, viewer, grounded):
    _, rows = grounded
    every = range(len(rows))
    open_page(browser, viewer.url)

    # text, typed: in the captions (and paths and errors)
    word = "circle"
    field = browser.find_element(By.NAME, "text")
    field.send_keys(word)
    expected = [i for i in every if word in ((rows[i]["caption"] or "") + rows[i]["path"] + (rows[i]["error"] or ""))]
    assert 0 < len(expected) < len(rows)
    assert settled(lambda: grid(browser), expected) == expected
    field.clear()
    change(browser, "text", "")
    assert settled(lambda: grid(browser), list(every)) == list(every)

    # classes, matched as export matches them: records with a box of the class, and only those boxes drawn
    change(browser, "classes", "square")
    expected = [i for i in every if any(_classes(e["phrase"], ["square"]) for e in rows[i]["entities"] or [])]
    assert 0 < len(expected) < len(rows)
    assert settled(lambda: grid(browser), expected) == expected
    counts = [
        sum(len(e["boxes_px"]) for e in rows[i]["entities"] if _classes(e["phrase"], ["square"])) for i in expected
    ]
    assert boxes_per_card(browser) == counts
    change(browser, "classes", "")

    # a minimum score: every record stays, boxes under it are hidden
    scores = sorted(s for r in rows for e in r["entities"] or [] for s in e["scores"])
    threshold = round(scores[len(scores) // 2], 2)
    change(browser, "min_score", str(threshold))
    expected = [sum(s >= threshold for e in r["entities"] or [] for s in e["scores"]) for r in rows]
    assert 0 < sum(expected) < len(scores)
    assert settled(lambda: boxes_per_card(browser), expected) == expected
    assert grid(browser) == list(every)

    # sorted by best score: the records with a box shown first, best first
    change(browser, "sort", "best")
    best = {
        i: max([s for e in rows[i]["entities"] or [] for s in e["scores"] if s >= threshold], default=None)
        for i in every
    }
    expected = sorted((i for i in every if best[i] is not None), key=lambda i: -best[i])
    expected += [i for i in every if best[i] is None]
    assert settled(lambda: grid(browser), expected) == expected

    # the address keeps the filters: opened afresh, it shows the same
    address = browser.current_url
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(address).query)
    assert query == {"min_score": [str(threshold)], "sort": ["best"]}
    open_page(browser, address)
    assert grid(browser) == expected and boxes_per_card(browser) == [
        sum(s >= threshold for e in rows[i]["entities"] or [] for s in e["scores"]) for i in expected
    ]
    assert browser.find_element(By.NAME, "min_score").get_attribute("value") == str(threshold)
    assert browser.find_element(By.NAME, "sort").get_attribute("value") == "best"

    # status: the error record alone, with its message
    open_page(browser, viewer.url + "?status=error")
    [broken] = [i for i in every if rows[i]["status"] == "error"]
    assert grid(browser) == [broken]
    assert browser.find_element(By.CSS_SELECTOR, "#grid .card .error-text").text == rows[broken]["error"]


def test_the_export_line_offered_exports_what_is_shown(browser, viewer, grounded):
    results, _ = grounded
    open_page(browser, viewer.url + "?classes=square&min_score=0.2")
    browser.find_element(By.ID, "export-toggle").click()
    command = browser.find_element(By.ID, "export-command")
    expected = f"kosmos export {results} --to coco export.json --classes square --min-score 0.2"
    assert settled(lambda: command.text, expected) == expected
    narrowed = browser.find_element(By.ID, "export-shown-command")
    expected = "kosmos export shown.jsonl --to coco export.json --classes square --min-score 0.2"
    assert settled(lambda: narrowed.text, expected) == expected
    link = browser.find_element(By.ID, "export-download").get_attribute("href")
    assert link == viewer.url + "api/shown.jsonl?classes=square&min_score=0.2&v=1"  # v: the reading shown
    browser.find_element(By.CSS_SELECTOR, "#export-to option[value='yolo']").click()
    expected = f"kosmos export {results} --to yolo dataset/ --classes square --min-score 0.2"
    assert settled(lambda: command.text, expected) == expected


# -- the detail view ------------------------------------------------------------------------------------------------
def test_the_detail_view_labels_every_box_links_phrases_and_boxes_and_keys_move_through_it(browser, viewer, grounded):
    _, rows = grounded
    first = next(i for i, r in enumerate(rows) if r["status"] == "ok" and len(r["entities"]) >= 2)
    open_page(browser, viewer.url)
    browser.find_element(By.CSS_SELECTOR, f"#grid .card[data-row='{first}']").click()
    detail = browser.find_element(By.ID, "detail")
    assert detail.is_displayed()
    assert browser.find_element(By.ID, "position").text == f"{first + 1} / {len(rows)}"
    assert browser.find_element(By.ID, "detail-path").text == rows[first]["path"]
    assert settled(lambda: images_loaded(browser, "#stage"), True)
    [picture] = browser.execute_script(GEOMETRY, "#detail", "#stage")
    assert_boxes_where_the_record_says(picture, rows[first])
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#stage .label")]
    entities = rows[first]["entities"]
    assert labels == [f"{e['phrase']} {s:.2f}" for e in entities for s in e["scores"]]
    assert "prompt" in browser.find_element(By.ID, "detail-fields").text  # the whole record

    # hovering a phrase lights its boxes; hovering a box's line lights it and its phrase
    lit = "return [...document.querySelectorAll('#detail .lit')].map(n => n.tagName.toLowerCase() + n.dataset.e)"
    ActionChains(browser).move_to_element(
        browser.find_element(By.CSS_SELECTOR, "#detail-text mark[data-e='1']")
    ).perform()
    assert sorted(browser.execute_script(lit)) == sorted(
        ["mark1"] + ["g1", "div1", "li1"] * len(entities[1]["boxes_px"])
    )
    ActionChains(browser).move_to_element(
        browser.find_element(By.CSS_SELECTOR, "#detail-boxes li[data-e='0']")
    ).perform()
    assert sorted(browser.execute_script(lit)) == ["div0", "g0", "li0", "mark0"]

    # keys: right, left, Esc; the address names the record open
    def press(key):
        ActionChains(browser).send_keys(key).perform()

    press(Keys.ARROW_RIGHT)
    assert (
        settled(lambda: browser.find_element(By.ID, "detail-path").text, rows[first + 1]["path"])
        == rows[first + 1]["path"]
    )
    assert f"open={first + 1}" in browser.current_url
    press(Keys.ARROW_LEFT)
    assert settled(lambda: browser.find_element(By.ID, "detail-path").text, rows[first]["path"]) == rows[first]["path"]
    press(Keys.ESCAPE)
    assert not detail.is_displayed() and "open=" not in browser.current_url
    focused = browser.execute_script("return +document.activeElement.dataset.row")
    assert focused == first  # back on the card it came from

    # in the grid: arrows move between cards, Enter opens one; an address with open= opens that record
    press(Keys.ARROW_RIGHT)
    assert browser.execute_script("return +document.activeElement.dataset.row") == first + 1
    press(Keys.ENTER)
    assert (
        settled(lambda: browser.find_element(By.ID, "detail-path").text, rows[first + 1]["path"])
        == rows[first + 1]["path"]
    )
    open_page(browser, viewer.url + f"?sort=path&open={first}")
    assert settled(lambda: browser.find_element(By.ID, "detail-path").text, rows[first]["path"]) == rows[first]["path"]
    assert browser.find_element(By.ID, "detail").is_displayed()


# -- find and refer ----------------------------------------------------------------------------------------------
def test_find_by_phrase_and_refer_by_region(browser, shapes_engine, scenes, tmp_path):
    folder, truth = scenes
    images = sorted(truth)[:2]
    found = str(tmp_path / "found.jsonl")
    find(images, found, phrases=["a red circle", "a blue square"], engine=shapes_engine)
    rows = list(read_records(found))
    with start(found) as running:
        open_page(browser, running.url)
        change(browser, "phrase", "a blue square")
        expected = [i for i, r in enumerate(rows) if r["phrase"] == "a blue square"]
        assert len(expected) == 2 and settled(lambda: grid(browser), expected) == expected
        assert boxes_per_card(browser) == [len(rows[i]["boxes_px"]) for i in expected]
        marks = browser.find_elements(By.CSS_SELECTOR, "#grid .card .text mark")
        assert [m.text for m in marks] == ["a blue square"] * 2

    referred = str(tmp_path / "referred.jsonl")
    refer(images, referred, boxes=["10,10,100,100", "0,0,60,60"], engine=shapes_engine)
    rows = list(read_records(referred))
    with start(referred) as running:
        open_page(browser, running.url + "?region=0,0,60,60")
        expected = [i for i, r in enumerate(rows) if r["box_px"] == [0.0, 0.0, 60.0, 60.0]]
        assert len(expected) == 2 and grid(browser) == expected
        drawn = browser.execute_script(GEOMETRY, "#grid", ".card")
        for picture in drawn:
            row = rows[picture["row"]]
            assert_boxes_where_the_record_says(picture, {**row, "entities": [{"boxes_px": [row["box_px"]]}]})
        assert browser.find_element(By.NAME, "region").get_attribute("value") == "0,0,60,60"


# -- record text is text ---------------------------------------------------------------------------------------------
def test_record_text_is_shown_as_text_never_run(browser, tmp_path):
    Image.new("RGB", (64, 48), (90, 90, 90)).save(tmp_path / "x.png")
    evil = '<img src=x onerror="window.pwned=1">'
    caption = f"An image of {evil} a <b>cat</b>."
    phrase = "a <b>cat</b>"
    start_at = caption.index(phrase)
    from kosmos_cli.tasks.records import Entity

    record = GroundRecord(path="x.png", width=64, height=48, model=evil, caption=caption)
    record.entities = [Entity(phrase, start_at, start_at + len(phrase), [[0, 0, 0.5, 0.5]], [[0, 0, 32, 24]], [0.5])]
    record.extra = {"note": evil}
    results = tmp_path / "evil.jsonl"
    results.write_text(json.dumps(record.to_dict()) + "\n")
    with start(str(results)) as running:
        open_page(browser, running.url + "?text=" + urllib.parse.quote("<b>cat"))
        assert grid(browser) == [0]
        assert browser.find_element(By.CSS_SELECTOR, "#grid .card .text").text == caption
        browser.find_element(By.CSS_SELECTOR, "#grid .card").click()
        fields = browser.find_element(By.ID, "detail-fields")
        assert settled(lambda: evil in fields.text, True)
        assert browser.find_element(By.CSS_SELECTOR, "#stage .label").text == f"{phrase} 0.50"
        assert browser.execute_script("return window.pwned === undefined && !document.querySelector('img[src=x]')")
    assert sorted(os.listdir(tmp_path)) == ["evil.jsonl", "x.png"]  # nothing written beside the results
