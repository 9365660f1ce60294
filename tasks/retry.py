"""Which failures a task retries: transient IO (a refused or dropped connection, a timeout, a busy database, an
HTTP 5xx), never one that fails the same way again (a bad input, a missing file or experiment, a bug in our code).

Use on every task that has retries:  @task(retries=2, retry_condition_fn=retry_if_transient, ...)
"""
from __future__ import annotations

import sqlite3
import sys
import urllib.error
from collections.abc import Iterator

from tasks.errors import is_expected

# OSErrors about a path, not the network: the next attempt finds the same path.
_PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
_MLFLOW_TRANSIENT_CODES = ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect retry_condition_fn: retry when the failure, or what caused it, is transient IO; never an expected
    error (tasks.errors.EXPECTED_ERRORS). A plain function on purpose: Prefect ignores other callables here."""
    from prefect.states import get_state_exception

    exc = get_state_exception(state)
    return not is_expected(exc) and any(is_transient(e) for e in _causes(exc))


def is_transient(exc: BaseException) -> bool:
    """The call may pass when repeated: a connection refused/reset, a timeout, SQLite busy, HTTP 5xx or 429."""
    status = _http_status(exc)
    if status is not None:
        return status >= 500 or status == 429
    if isinstance(exc, _PATH_ERRORS):
        return False
    requests_exc = sys.modules.get("requests.exceptions")  # loaded by MLflow; not loaded, not raised
    if requests_exc and isinstance(exc, requests_exc.RequestException):  # OSErrors, but also bad URLs
        return isinstance(exc, (requests_exc.ConnectionError, requests_exc.Timeout,
                                requests_exc.ChunkedEncodingError, requests_exc.RetryError))
    if isinstance(exc, OSError):  # ConnectionError, TimeoutError, urllib's URLError, socket and disk IO
        return True
    httpx = sys.modules.get("httpx")  # the Prefect client's transport
    if httpx and isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return "locked" in str(exc) or "busy" in str(exc)
    mlflow_exc = sys.modules.get("mlflow.exceptions")
    return bool(mlflow_exc and isinstance(exc, mlflow_exc.MlflowException)
                and exc.error_code in _MLFLOW_TRANSIENT_CODES)


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status a server answered with, when the error is such an answer."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code
    mlflow_exc = sys.modules.get("mlflow.exceptions")
    if mlflow_exc and isinstance(exc, mlflow_exc.RestException):
        return exc.get_http_status_code()
    code = getattr(getattr(exc, "response", None), "status_code", None)  # requests / httpx status errors
    return code if isinstance(code, int) else None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and the chain Python prints under it (MLflow wraps a refused connection in MlflowException)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
