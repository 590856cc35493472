"""No URL's credentials in any message, `kosmos: failed:` line, log line or record `error`: `user:pass@` is written
`***@`, and so is a presigned URL's signature. A record's `path` keeps the URL as the user gave it."""

import json
import logging
import subprocess
import sys

import pytest

from kosmos_cli.errors import InputError, redact
from kosmos_cli.tasks.records import printable
from tests.helpers import ROOT, SHAPES_MODEL
from tests.helpers.serve import ImageServer

SECRET = "s3cr3t-pa55"


def _with_user(url: str) -> str:
    head, rest = url.split("://", 1)
    return f"{head}://alice:{SECRET}@{rest}"


@pytest.mark.parametrize(
    "text, shown",
    [
        ("https://user:pass@host/x.jpg: HTTP 404", "https://***@host/x.jpg: HTTP 404"),
        ("'http://u:p@ss@h:80/a?b=1'", "'http://***@h:80/a?b=1'"),
        ("s3://AKIA:secret@bucket/k.png", "s3://***@bucket/k.png"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Signature=abc123&x=1",
            "https://b.s3.amazonaws.com/k?X-Amz-Signature=***&x=1",
        ),
        ("https://host/p?token=t0k#frag", "https://host/p?token=***#frag"),
        ("https://host/a@b.jpg and mail@example.com", "https://host/a@b.jpg and mail@example.com"),
    ],
)
def test_redact_leaves_out_credentials_only(text, shown):
    assert redact(text) == shown == printable(text)


def test_an_error_the_library_raises_leaves_them_out():
    assert str(InputError(f"cannot read manifest https://bob:{SECRET}@h/l.txt: HTTP 404")) == (
        "cannot read manifest https://***@h/l.txt: HTTP 404"
    )


def test_a_log_line_leaves_them_out_whoever_writes_it(caplog):
    with caplog.at_level(logging.WARNING, logger="kosmos_cli"):
        logging.getLogger("kosmos_cli").warning("cannot read %s", f"https://bob:{SECRET}@h/x.jpg")
    assert caplog.messages == ["cannot read https://***@h/x.jpg"]


def test_a_run_over_urls_with_credentials_never_prints_them(tmp_path):
    with ImageServer() as served:
        missing = _with_user(served.url("/missing.png"))
        manifest = _with_user(served.url("/lists/gone.txt"))
        links = tmp_path / "links.txt"
        links.write_text(_with_user(served.url("/also-missing.png")) + "\n")
        out = tmp_path / "r.jsonl"
        args = [missing, str(links), "--out", str(out), "--model", SHAPES_MODEL, "--max-new-tokens", "3"]
        run = [sys.executable, "-m", "kosmos_cli", "ground", "--fetch-retries", "0"]
        done = subprocess.run([*run, *args], capture_output=True, text=True, cwd=ROOT, timeout=240)
        refused = subprocess.run(
            [*run, manifest, "--out", str(tmp_path / "m.jsonl")], capture_output=True, text=True, cwd=ROOT, timeout=240
        )
    assert done.returncode == 0, done.stderr
    assert "kosmos: failed: http://***@127.0.0.1:" in done.stderr, done.stderr
    rows = [json.loads(line) for line in open(out, encoding="utf-8")]
    assert len(rows) == 2 and all(r["status"] == "error" for r in rows)
    assert sorted(r["path"] for r in rows) == sorted([missing, _with_user(served.url("/also-missing.png"))])
    assert not any(SECRET in r["error"] for r in rows)
    assert refused.returncode != 0 and "cannot read manifest http://***@127.0.0.1:" in refused.stderr, refused.stderr
    for stream in (done.stderr, refused.stderr):
        assert SECRET not in stream and "alice" not in stream
