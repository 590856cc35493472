"""inputs/locations/http.py's policy, without a server: how long a socket's wait may last (the try's deadline, its
run's stop, in slices), Retry-After, and credentials kept out of messages. tests/e2e/test_http.py holds the rest
against a real server."""

import threading
import time
from email.utils import formatdate

import httpcore
import pytest

from kosmos_cli.inputs.locations import FetchOptions, http


def _timing_out(calls):
    """A socket's wait that never gets its bytes: it waits what it is given, then times out."""

    def wait(seconds):
        calls.append(seconds)
        time.sleep(seconds)
        raise httpcore.ReadTimeout("timed out")

    return wait


def test_a_wait_goes_on_in_slices_until_the_deadline_of_its_try_and_no_longer():
    calls = []
    started = time.monotonic()
    with http._Try(started + 0.6, threading.Event(), FetchOptions()).current():
        with pytest.raises(httpcore.ReadTimeout):
            http._waiting(_timing_out(calls), 30, 0.25, httpcore.ReadTimeout)
    assert 0.6 <= time.monotonic() - started < 0.8
    assert calls[:2] == [0.25, 0.25] and 0 < calls[2] <= 0.11 and len(calls) == 3


def test_a_wait_ends_within_a_slice_of_its_run_stopping():
    calls, stop = [], threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with http._Try(started + 600, stop, FetchOptions()).current():
        with pytest.raises(httpcore.ReadTimeout):
            http._waiting(_timing_out(calls), 600, 0.25, httpcore.ReadTimeout)
    assert 0.3 <= time.monotonic() - started < 0.6


def test_a_wait_outside_a_try_has_the_clients_timeout_only():
    calls = []
    with pytest.raises(httpcore.ReadTimeout):
        http._waiting(_timing_out(calls), 0.3, 0.25, httpcore.ReadTimeout)
    assert calls[0] == 0.25 and len(calls) == 2
    assert http._waiting(lambda seconds: seconds, None, float("inf"), httpcore.ReadTimeout) is None  # blocking


def test_what_a_wait_gets_is_what_it_returns():
    with http._Try(time.monotonic() + 5, threading.Event(), FetchOptions()).current():
        assert http._waiting(lambda seconds: b"bytes", 30, 0.25, httpcore.ReadTimeout) == b"bytes"


@pytest.mark.parametrize(
    "value, seconds",
    [("0", 0.0), ("120", 120.0), (" 7 ", 7.0), (None, None), ("", None), ("soon", None), ("-3", None)],
)
def test_retry_after_in_seconds(value, seconds):
    assert http._retry_after(value) == seconds


def test_retry_after_as_a_date():
    assert 55 <= http._retry_after(formatdate(time.time() + 60, usegmt=True)) <= 60
    assert http._retry_after(formatdate(time.time() - 60, usegmt=True)) == 0.0


@pytest.mark.parametrize(
    "text, said",
    [
        ("redirected to ftp://me:pw@host/x", "redirected to ftp://***@host/x"),
        ("https://token@host/a and http://u:p@h/b", "https://***@host/a and http://***@h/b"),
        ("http://host/path@x?q=a@b", "http://host/path@x?q=a@b"),  # an @ past the host is no credential
        ("no URL here: a@b", "no URL here: a@b"),
    ],
)
def test_credentials_are_left_out(text, said):
    assert http.redacted(text) == said
