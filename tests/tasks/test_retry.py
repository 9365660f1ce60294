"""Which real failures count as transient IO (retried) and which as expected errors (reported, never retried)."""
from __future__ import annotations

import sqlite3

import pytest

from ml.config import ConfigError
from tasks.errors import BatchRejected, is_expected
from tasks.lineage import TrackingUnavailable, check_server
from tasks.retry import _causes, is_transient
from tests.conftest import free_port


def caught(fn) -> BaseException:
    try:
        fn()
    except Exception as e:
        return e
    raise AssertionError("no error raised")


def _locked_sqlite(tmp_path):
    db = tmp_path / "busy.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("create table t (x)")
    holder.execute("begin exclusive")
    try:
        sqlite3.connect(db, timeout=0).execute("insert into t values (1)")
    finally:
        holder.close()


def _httpx_refused(tmp_path):
    import httpx

    httpx.get(f"http://127.0.0.1:{free_port()}/", timeout=5)


def _requests_bad_url(tmp_path):
    import requests

    requests.get("127.0.0.1/no-scheme", timeout=5)


def _chained_from_none(tmp_path):
    try:
        raise ConnectionResetError("peer reset")
    except ConnectionResetError:
        raise ValueError("bad value in the answer") from None


@pytest.mark.parametrize("fault, transient", [
    (_locked_sqlite, True),  # another writer holds the file: try again
    (_httpx_refused, True),  # the Prefect client's transport
    (_requests_bad_url, False),  # a requests error is an OSError, but a bad URL stays bad
    (lambda tmp: (tmp / "missing.parquet").read_bytes(), False),
    (lambda tmp: tmp.mkdir(), False),  # FileExistsError
    (_chained_from_none, False),  # `from None`: the connection error is not what failed
])
def test_transient_io_is_told_apart_from_errors_that_repeat(tmp_path, fault, transient):
    exc = caught(lambda: fault(tmp_path))
    assert any(is_transient(e) for e in _causes(exc)) is transient, repr(exc)


def test_expected_errors_are_the_projects_own():
    server_down = caught(lambda: check_server(f"http://127.0.0.1:{free_port()}", timeout=2))
    assert isinstance(server_down, TrackingUnavailable) and is_expected(server_down)
    assert is_expected(ConfigError("params.yaml: x")) and is_expected(BatchRejected("quarantined"))
    assert is_expected(LookupError("no running A/B experiment")) and is_expected(FileNotFoundError("x"))
    assert not is_expected(caught(lambda: {}["as_of"])) and not is_expected(caught(lambda: [][0]))
    assert not is_expected(caught(lambda: int("x")))
