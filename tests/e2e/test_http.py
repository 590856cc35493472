"""Images behind http(s) URLs, from a real server in the test process (tests/helpers/serve.py): fetched by the
loaders on kept connections, with a deadline, retries after 429/503/cut bodies, a size cap; what fails is that
image's error record; a stopped run does not wait for its fetches; records keep the URL, resume keys on it without
fetching again, and the shapes model boxes what it fetched."""

import contextlib
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from urllib.parse import quote

import httpcore
import pytest
import shapes  # tools/shapes.py

from kosmos_cli import ground
from kosmos_cli.errors import InputError
from kosmos_cli.inputs.locations import FetchOptions, Unreadable, http, open_image
from kosmos_cli.inputs.locations.http import fetch_bytes
from kosmos_cli.output.reader import read_records
from kosmos_cli.run.threads import ordered_map
from tests.helpers import ROOT, SHAPES_MODEL, killed_after, kosmos, kosmos_process, one_error_line, rows_of
from tests.helpers.serve import ImageServer, self_signed

FAST = FetchOptions(timeout=2, retries=2)


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server():
    with ImageServer() as served:
        rng = random.Random(4242)
        served.truth = {}
        for i in range(8):
            width, height = shapes.CLI_SIZES[i % len(shapes.CLI_SIZES)]
            img, objs = shapes.make_scene(rng, width, height)
            served.files[f"/scenes/s{i}.png"] = _png(img)
            served.truth[f"/scenes/s{i}.png"] = (width, height, objs)
        served.files["/notes.txt"] = b"not an image at all"
        served.files["/big.png"] = served.files["/scenes/s0.png"] + b"\0" * (2 << 20)
        yield served


# -- fetching ------------------------------------------------------------------------------------------------------


def test_an_image_comes_whole(server):
    assert fetch_bytes(server.url("/scenes/s1.png"), FAST) == server.files["/scenes/s1.png"]


def test_a_404_fails_at_once_without_retrying(server):
    with pytest.raises(Unreadable, match=r"^HTTP 404 Not Found$"):
        fetch_bytes(server.url("/missing.png"), FAST)
    assert server.hits["/missing.png"] == 1


def test_503_and_429_are_tried_again_until_the_image_comes(server):
    assert fetch_bytes(server.url("/flaky/2/scenes/s2.png"), FAST) == server.files["/scenes/s2.png"]
    assert server.hits["/flaky/2/scenes/s2.png"] == 3
    assert fetch_bytes(server.url("/busy/scenes/s3.png"), FAST) == server.files["/scenes/s3.png"]
    assert server.hits["/busy/scenes/s3.png"] == 2


def test_retries_are_bounded(server):
    with pytest.raises(Unreadable, match=r"HTTP 503 Service Unavailable \(after 3 tries\)"):
        fetch_bytes(server.url("/flaky/9/scenes/s4.png"), FAST)
    assert server.hits["/flaky/9/scenes/s4.png"] == 3  # the first try and FAST's 2 retries


def test_a_redirect_is_followed(server):
    assert fetch_bytes(server.url("/moved/scenes/s5.png"), FAST) == server.files["/scenes/s5.png"]


def test_a_body_cut_short_is_an_error_not_half_an_image(server):
    with pytest.raises(Unreadable, match=r"closed before the whole image came \(\d+ of \d+ bytes\)"):
        fetch_bytes(server.url("/cut/scenes/s6.png"), FAST)
    assert server.hits["/cut/scenes/s6.png"] == 3  # a cut body is worth another try


def test_a_slow_server_times_out(server):
    started = time.monotonic()
    with pytest.raises(Unreadable, match=r"timed out after 0.5 s"):
        fetch_bytes(server.url("/slow/3/scenes/s7.png"), FetchOptions(timeout=0.5, retries=0))
    assert time.monotonic() - started < 2.5


def test_a_redirect_to_anything_but_http_is_refused_at_once(server):
    with pytest.raises(Unreadable, match=r"^redirected to ftp://127.0.0.1/scenes/s5.png: only http and https are"):
        fetch_bytes(server.url("/ftp/scenes/s5.png"), FAST)
    assert server.hits["/ftp/scenes/s5.png"] == 1  # not tried again


@pytest.mark.parametrize(
    "location, refused",
    [
        ("file:///etc/passwd", "file:///etc/passwd"),
        ("ftp://user:secret@127.0.0.1/x.png", "ftp://***@127.0.0.1/x.png"),  # credentials are never said
    ],
)
def test_a_redirect_to_a_file_or_with_credentials_is_refused_and_nothing_secret_is_said(server, location, refused):
    path = "/to/" + quote(location, safe="")
    with pytest.raises(Unreadable, match=rf"^redirected to {re.escape(refused)}: only http and https are followed$"):
        fetch_bytes(server.url(path), FAST)
    assert server.hits[path] == 1


def test_redirects_are_followed_ten_times_at_most(server):
    with pytest.raises(Unreadable, match=r"^redirected more than 10 times$"):
        fetch_bytes(server.url("/loop/0"), FAST)
    assert [server.hits[f"/loop/{i}"] for i in range(12)] == [1] * 11 + [0]  # not tried again


def test_a_server_that_sends_a_byte_a_second_fails_at_the_deadline_not_a_byte_later(server):
    started = time.monotonic()
    with pytest.raises(Unreadable, match=r"^timed out after 1.5 s \(--fetch-timeout\)$"):
        fetch_bytes(server.url("/trickle/1/1/big.png"), FetchOptions(timeout=1.5, retries=0))
    assert 1.5 <= time.monotonic() - started < 2.0  # each read stops at the deadline, not a read timeout later


def test_credentials_in_a_manifest_url_are_left_out_of_its_error(server):
    url = server.url("/lists/missing.csv").replace("://", "://me:hunter2@")
    said = r"^cannot read manifest http://\*\*\*@127.0.0.1:\d+/lists/missing.csv: HTTP 404 Not Found: check the URL$"
    with pytest.raises(InputError, match=said):
        http.open_url(url, fetch=FAST)
    assert "hunter2" not in http.redacted(f"at {url} and {url}") and http.redacted("http://a/b@c") == "http://a/b@c"


def test_a_trickling_server_fails_at_the_deadline_not_at_the_end_of_the_body(server):
    started = time.monotonic()  # the body would take 1000 s at 1000 bytes every 0.5 s
    with pytest.raises(Unreadable, match=r"^timed out after 1 s \(--fetch-timeout\) \(after 2 tries\)$"):
        fetch_bytes(server.url("/trickle/1000/0.5/big.png"), FetchOptions(timeout=1, retries=1), backoff=0.01)
    assert time.monotonic() - started < 10


def test_the_size_cap_holds_with_and_without_a_content_length(server):
    small = FetchOptions(timeout=2, retries=0, max_bytes=1 << 20)
    for path in ("/big.png", "/nolength/big.png"):
        with pytest.raises(Unreadable, match=r"larger than 1 MB \(--max-image-mb\)"):
            fetch_bytes(server.url(path), small)
    assert fetch_bytes(server.url("/nolength/scenes/s0.png"), small) == server.files["/scenes/s0.png"]


def test_a_refused_connection_and_a_page_that_is_no_image(server):
    assert open_image("http://127.0.0.1:1/x.png", FetchOptions(timeout=1, retries=0)).error.startswith(
        "cannot connect: "
    )
    assert open_image(server.url("/notes.txt"), FAST).error == "not an image Pillow can read"
    loaded = open_image(server.url("/scenes/s0.png"), FAST)
    assert loaded.error is None and (loaded.width, loaded.height) == server.truth["/scenes/s0.png"][:2]


# -- kept connections ---------------------------------------------------------------------------------------------


@pytest.fixture
def fresh():
    """A server of its own, so its connections are this test's."""
    with ImageServer() as served:
        served.files = {f"/i{i}.png": bytes([i]) * (1000 + i) for i in range(8)}
        yield served


def test_fetches_from_one_server_share_kept_connections_across_threads(fresh):
    for i in range(8):
        assert fetch_bytes(fresh.url(f"/i{i}.png"), FAST) == fresh.files[f"/i{i}.png"]
    assert fresh.connections == 1
    urls = [fresh.url(f"/i{i % 8}.png") for i in range(64)]
    got = list(ordered_map(lambda url: fetch_bytes(url, FAST), urls, workers=4, ahead=8))
    assert got == [fresh.files[f"/i{i % 8}.png"] for i in range(64)]
    assert fresh.connections <= 4  # one per thread at most, the first one kept from before
    assert sum(fresh.hits.values()) == 72


def test_without_a_pool_each_fetch_has_a_connection_of_its_own(fresh, monkeypatch):
    monkeypatch.setattr(http, "KEPT", 0)
    for i in range(3):
        assert fetch_bytes(fresh.url(f"/i{i}.png"), FAST) == fresh.files[f"/i{i}.png"]
    assert fresh.connections == 3


@pytest.mark.parametrize("noticed", [True, False], ids=["closed-while-idle", "closed-as-asked"])
def test_a_kept_connection_the_server_closed_is_replaced_at_no_cost(fresh, monkeypatch, noticed):
    if not noticed:  # the server closes it after the pool looked: the request itself fails on it
        monkeypatch.setattr(httpcore.HTTP11Connection, "has_expired", lambda self: False)
    once = FetchOptions(timeout=2, retries=0)
    assert fetch_bytes(fresh.url("/i0.png"), once) == fresh.files["/i0.png"]
    fresh.close_idle()
    assert fetch_bytes(fresh.url("/i1.png"), once) == fresh.files["/i1.png"]  # no retry was needed
    assert fresh.connections == 2 and fresh.hits["/i1.png"] == 1


def test_https_with_a_trusted_certificate_keeps_its_connection_and_an_untrusted_one_fails_at_once(tmp_path):
    cert, key = self_signed(str(tmp_path))
    with ImageServer(tls=(cert, key)) as served, _trusting(cert):
        served.files["/a.png"] = b"png" * 1000
        for _ in range(3):
            assert fetch_bytes(served.url("/a.png"), FAST) == served.files["/a.png"]
        assert served.connections == 1 and served.url("").startswith("https://")
    with ImageServer(tls=(cert, key)) as served, _trusting(None):
        with pytest.raises(Unreadable, match=r"^cannot connect: .*certificate verify failed"):
            fetch_bytes(served.url("/a.png"), FAST)
        assert served.connections == 1  # not tried again


@contextlib.contextmanager
def _trusting(cert):
    """Trusting only `cert` (or the system's authorities, for None): the client follows SSL_CERT_FILE."""
    before = os.environ.get("SSL_CERT_FILE")
    if cert is not None:
        os.environ["SSL_CERT_FILE"] = cert
    else:
        os.environ.pop("SSL_CERT_FILE", None)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = before


def test_a_proxy_from_the_environment_is_asked_for_the_whole_url(fresh, monkeypatch):
    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", fresh.url(""))
    assert fetch_bytes("http://images.invalid/i2.png", FAST) == fresh.files["/i2.png"]
    assert fresh.proxied == ["http://images.invalid/i2.png"]


@pytest.mark.parametrize(
    "name, value, says",
    [
        ("ALL_PROXY", "socks5://me:secret@127.0.0.1:1080", "pip install httpx[socks]"),  # socksio is not installed
        (
            "https_proxy",
            "ftp://me:secret@127.0.0.1:2121",
            "Unknown scheme for proxy URL URL('ftp://***@127.0.0.1:2121')",
        ),
    ],
)
def test_a_proxy_the_environment_names_that_cannot_be_used_stops_the_run_in_one_line(
    shapes_model, server, monkeypatch, name, value, says
):
    monkeypatch.setenv(name, value)
    result = kosmos("ground", server.url("/scenes/s0.png"), model=SHAPES_MODEL)
    one_error_line(result, 2, "cannot use the proxy the environment names: ")
    assert says in result.stderr and "secret" not in result.stderr


# -- a run that stops ----------------------------------------------------------------------------------------------


def test_a_fetch_in_flight_ends_when_its_loaders_are_stopped():
    with ImageServer() as served:
        served.files["/big.png"] = b"\0" * (1 << 20)  # 1000 s at 100 bytes every 0.1 s
        failures = []

        def load(url):
            try:
                return fetch_bytes(url, FetchOptions(timeout=600, retries=3))
            except Unreadable as exc:
                failures.append(str(exc))
                raise

        served.files["/i.png"] = b"x"
        results = ordered_map(load, [served.url("/i.png"), served.url("/trickle/100/0.1/big.png")], 2, 2)
        assert next(results) == b"x"
        assert served.trickling.wait(60)  # the second fetch is reading its body
        started = time.monotonic()
        results.close()  # as an exception or Ctrl-C on the caller's thread does: waits for its workers
        assert time.monotonic() - started < 10
        assert failures == [http.STOPPED]


@pytest.mark.parametrize("route", ["/slow/30/i.png", "/trickle/100/30/big.png"], ids=["no-answer", "no-more-body"])
def test_a_fetch_waiting_on_a_silent_server_gives_up_within_a_second_of_the_stop(route):
    """A read that would block for 30 s (no headers yet, or a body that stopped coming) is no excuse."""
    with ImageServer() as served:
        served.files["/i.png"], served.files["/big.png"] = b"x", b"\0" * 1000
        failures = []

        def load(url):
            try:
                return fetch_bytes(url, FetchOptions(timeout=600, retries=3))
            except Unreadable as exc:
                failures.append(str(exc))
                raise

        results = ordered_map(load, [served.url("/i.png"), served.url(route)], 2, 2)
        assert next(results) == b"x"
        while not served.hits[route] or (route.startswith("/trickle") and not served.trickling.is_set()):
            time.sleep(0.05)
        time.sleep(0.5)  # the fetch is blocked in its read
        started = time.monotonic()
        results.close()
        assert time.monotonic() - started < 1.0
        assert failures == [http.STOPPED]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_run_within_seconds_whatever_the_fetches_in_flight_do(tmp_path, signum):
    with ImageServer() as served:
        rng = random.Random(7)
        served.files["/s.png"] = _png(shapes.make_scene(rng, 224, 224)[0])
        served.files["/big.png"] = b"\0" * (1 << 20)  # 1000 s at 100 bytes every 0.1 s
        urls = [served.url("/s.png"), served.url("/trickle/100/0.1/big.png"), served.url("/s.png?again")]
        served.files["/s.png?again"] = served.files["/s.png"]
        out = tmp_path / "r.jsonl"
        args = ["ground", *urls, "--out", str(out), "--model", SHAPES_MODEL, "-b", "1", "--max-new-tokens", "4"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "kosmos_cli", *args, "--fetch-timeout", "600"],
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            assert served.trickling.wait(120), "the fetch never started"
            started = time.monotonic()
            proc.send_signal(signum)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert time.monotonic() - started < 20, err
        assert proc.returncode == 128 + signum, err
        assert f"interrupted by {signal.Signals(signum).name}" in err


# -- end to end ----------------------------------------------------------------------------------------------------


def _boxes_right(rows, server) -> float:
    hits = objects = 0
    for row in rows:
        path = "/" + row["path"].split("/", 3)[3]
        width, height, objs = server.truth[path]
        assert row["status"] == "ok" and (row["width"], row["height"]) == (width, height)
        hits, objects = hits + shapes.boxed(row["entities"], objs), objects + len(objs)
    return hits / objects


def test_urls_as_arguments_are_grounded_and_boxed_and_resume_fetches_nothing(shapes_engine, server, tmp_path):
    urls = [server.url(f"/scenes/s{i}.png") for i in range(8)]
    out = str(tmp_path / "r.parquet")
    summary = ground(urls, out, engine=shapes_engine, batch_size=4)
    assert (summary.done, summary.failed) == (8, 0)
    rows = list(read_records(out))
    assert [r["path"] for r in rows] == urls  # the URL as given is the record's path
    assert all(r["file_size"] is None and r["file_mtime"] is None for r in rows)
    assert _boxes_right(rows, server) >= 0.9
    before = sum(server.hits[f"/scenes/s{i}.png"] for i in range(8))
    again = ground(urls, out, engine=shapes_engine, batch_size=4)
    assert (again.done, again.skipped) == (0, 8)
    assert sum(server.hits[f"/scenes/s{i}.png"] for i in range(8)) == before  # keyed on the URL: no refetch


def test_a_link_list_with_failures_goes_on_and_carries_its_columns(shapes_model, server, tmp_path):
    rows = [
        ("/scenes/s0.png", "a"),
        ("/missing.png", "b"),
        ("/flaky/1/scenes/s1.png", "c"),
        ("/cut/scenes/s2.png", "d"),
        ("/notes.txt", "e"),
    ]
    manifest = tmp_path / "links.csv"
    manifest.write_text("url,caption_src\n" + "".join(f"{server.url(p)},{c}\n" for p, c in rows))
    result = kosmos("ground", str(manifest), "--path-column", "url", "--fetch-retries", "1", "-q", model=SHAPES_MODEL)
    assert result.exit_code == 0, result.output
    got = {r["path"]: r for r in rows_of(result)}
    assert set(got) == {server.url(p) for p, _ in rows}
    assert [got[server.url(p)]["caption_src"] for p, _ in rows] == ["a", "b", "c", "d", "e"]
    status = {p: (got[server.url(p)]["status"], got[server.url(p)]["error"]) for p, _ in rows}
    assert status["/scenes/s0.png"] == ("ok", None)
    assert status["/flaky/1/scenes/s1.png"] == ("ok", None)
    assert status["/missing.png"] == ("error", "HTTP 404 Not Found")
    assert status["/cut/scenes/s2.png"][1].startswith("the connection closed before the whole image came")
    assert status["/notes.txt"] == ("error", "not an image Pillow can read")


def test_urls_on_stdin_and_in_a_jsonl_manifest(shapes_model, server, tmp_path):
    url = server.url("/scenes/s3.png")
    by_stdin = kosmos("ground", "-", "-q", model=SHAPES_MODEL, input=url + "\n")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": url, "id": 7}) + "\n")
    by_manifest = kosmos("ground", str(manifest), "-q", model=SHAPES_MODEL)
    (a,), (b,) = rows_of(by_stdin), rows_of(by_manifest)
    assert a["path"] == b["path"] == url and b["id"] == 7
    assert a["caption"] == b["caption"] and a["status"] == "ok"


def test_an_output_url_is_refused_in_one_line(shapes_model, server):
    result = kosmos("ground", server.url("/scenes/s0.png"), "--out", "s3://bucket/r.parquet", model=SHAPES_MODEL)
    one_error_line(
        result, 2, "--out s3://bucket/r.parquet: a bucket takes results as a Parquet dataset, not as one file"
    )
    result = kosmos("ground", server.url("/scenes/s0.png"), "--out", server.url("/results/"), model=SHAPES_MODEL)
    one_error_line(result, 2, "outputs are written to a local or shared-filesystem path")


def test_bad_fetch_options_are_refused_in_one_line(server):
    for flag, value in (("--fetch-timeout", "0"), ("--fetch-retries", "-1"), ("--max-image-mb", "0")):
        result = kosmos("ground", server.url("/scenes/s0.png"), flag, value, model=SHAPES_MODEL)
        one_error_line(result, 2, flag)


def test_draw_fetches_the_pixels_of_recorded_urls(shapes_engine, server, tmp_path):
    urls = [server.url(f"/scenes/s{i}.png") for i in range(2)]
    out = str(tmp_path / "r.jsonl")
    ground(urls, out, engine=shapes_engine)
    result = kosmos("draw", out, "--out-dir", str(tmp_path / "drawn"), "-q")
    assert result.exit_code == 0, result.output
    host = f"127.0.0.1_{server.url('').rsplit(':', 1)[1]}"
    for i in range(2):
        drawn = tmp_path / "drawn" / host / "scenes" / f"s{i}.png"
        assert drawn.exists(), sorted(str(p) for p in (tmp_path / "drawn").rglob("*"))


def test_a_killed_run_over_urls_resumes_with_nothing_lost_or_twice(server, tmp_path):
    listing = tmp_path / "urls.txt"
    urls = [server.url(f"/scenes/s{i}.png") for i in range(8)]
    listing.write_text("\n".join(urls) + "\n")
    out = tmp_path / "r.jsonl"
    args = ["ground", str(listing), "--out", str(out), "--model", SHAPES_MODEL, "-b", "2", "--max-new-tokens", "8"]
    killed_after(args, tmp_path)
    assert len(list(read_records(str(out)))) == 4
    rerun = kosmos_process(args)
    assert rerun.returncode == 0, rerun.stderr
    assert "4 done, 0 failed, 4 skipped" in rerun.stderr
    assert sorted(r["path"] for r in read_records(str(out))) == sorted(urls)


def test_find_and_refer_take_urls(shapes_engine, server, tmp_path):
    from kosmos_cli import find, refer

    path = "/scenes/s1.png"
    width, height, objs = server.truth[path]
    target = objs[0]
    phrase = f"a {target.color} {target.shape}"
    out = str(tmp_path / "find.jsonl")
    find([server.url(path)], out, phrases=[phrase], engine=shapes_engine)
    (row,) = read_records(out)
    assert row["path"] == server.url(path) and row["status"] == "ok"
    assert any(shapes.iou(b, target.box) >= 0.5 for b in row["boxes_px"]), (row, target)
    out = str(tmp_path / "refer.jsonl")
    x1, y1, x2, y2 = target.box
    normalised = (x1 / width, y1 / height, x2 / width, y2 / height)
    refer([server.url(path)], out, boxes=[normalised], normalized=True, engine=shapes_engine)
    (row,) = read_records(out)
    assert row["status"] == "ok" and target.color in row["description"]
    assert row["box_px"] == pytest.approx(list(target.box), abs=0.01)  # the size came from the fetched image
    again = refer([server.url(path)], out, boxes=[normalised], normalized=True, engine=shapes_engine)
    assert (again.done, again.skipped) == (0, 1)  # its resume key is the same box in pixels


def test_export_keeps_urls_for_coco_and_fetches_them_for_yolo(shapes_engine, server, tmp_path):
    urls = [server.url(f"/scenes/s{i}.png") for i in range(3)]
    out = str(tmp_path / "r.jsonl")
    ground(urls, out, engine=shapes_engine)
    coco = kosmos("export", out, "--to", "coco", str(tmp_path / "coco.json"), "-q")
    assert coco.exit_code == 0, coco.output
    data = json.loads((tmp_path / "coco.json").read_text())
    assert [i["file_name"] for i in data["images"]] == urls and data["annotations"]
    yolo = kosmos("export", out, "--to", "yolo", str(tmp_path / "yolo"), "-q")
    assert yolo.exit_code == 0, yolo.output
    host = f"127.0.0.1_{server.url('').rsplit(':', 1)[1]}"
    for i in range(3):
        image = tmp_path / "yolo" / "images" / host / "scenes" / f"s{i}.png"
        assert not image.is_symlink() and image.read_bytes() == server.files[f"/scenes/s{i}.png"]
        assert (tmp_path / "yolo" / "labels" / host / "scenes" / f"s{i}.txt").read_text().strip()


def test_a_manifest_and_a_table_behind_a_url(shapes_engine, server, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    server.files["/lists/some.csv"] = b"path,n\n../scenes/s0.png,1\n../scenes/s1.png?v=2,2\n"
    server.files["/scenes/s1.png?v=2"] = server.files["/scenes/s1.png"]
    out = str(tmp_path / "r.jsonl")
    summary = ground([server.url("/lists/some.csv")], out, engine=shapes_engine)
    rows = list(read_records(out))
    assert [r["path"] for r in rows] == [server.url("/scenes/s0.png"), server.url("/scenes/s1.png?v=2")]
    assert [r["n"] for r in rows] == ["1", "2"] and summary.done == 2  # relative to the manifest's URL
    buf = io.BytesIO()
    table = {"key": ["a", "b"], "jpg": [server.files["/scenes/s2.png"], server.files["/scenes/s3.png"]]}
    pq.write_table(pa.table(table), buf)
    server.files["/tables/t.parquet"] = buf.getvalue()
    out = str(tmp_path / "t.jsonl")
    ground([server.url("/tables/t.parquet")], out, engine=shapes_engine, image_column="jpg")
    rows = list(read_records(out))
    assert [r["path"] for r in rows] == [server.url("/tables/t.parquet") + "#a", server.url("/tables/t.parquet") + "#b"]
    assert all(r["status"] == "ok" for r in rows)
    result = kosmos("ground", server.url("/lists/missing.txt"), model=SHAPES_MODEL)
    one_error_line(
        result, 2, "cannot read manifest " + server.url("/lists/missing.txt") + ": HTTP 404 Not Found: check"
    )


@pytest.mark.parametrize("name", ["gone.csv", "gone.parquet"])
def test_a_manifest_url_that_answers_404_fails_before_the_model_loads_and_leaves_nothing(server, tmp_path, name):
    """The check comes before the model: `--model` names a folder that holds no model, which loading would refuse
    with another message. No output file, no lock."""
    out, no_model = tmp_path / "out" / "r.jsonl", tmp_path / "no-model"
    out.parent.mkdir()
    no_model.mkdir()
    url = server.url(f"/lists/{name}")
    result = kosmos("ground", url, "--out", str(out), "--model", str(no_model))
    one_error_line(result, 2, f"cannot read manifest {url}: HTTP 404 Not Found: check")
    assert os.listdir(out.parent) == []
