"""Retries are for flaky IO: a task that would fail the same way again runs once; a refused connection, a timeout or
an HTTP 5xx is tried again. Real faults, real Prefect task runs, the retry condition every retrying task uses."""
from __future__ import annotations

import json
import socket
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.request import urlopen

import pandas as pd
import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from ml.split import slice_week
from tasks.retry import retry_if_transient
from tests.conftest import free_port


def _mlflow(uri: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments()


def _refused_once(env: dict) -> None:
    """A connection refused on the first attempt; the server answers on the next one."""
    if attempts(env) == 1:
        urlopen(f"http://127.0.0.1:{free_port()}/", timeout=5)
    urlopen(f"{env['http']}/200", timeout=5)


FAULTS = {  # name -> a call that really fails that way
    "no rows for the week": lambda env: slice_week(pd.DataFrame({"t": pd.to_datetime([], utc=True)}), "t",
                                                   date(2016, 5, 29)),
    "missing file": lambda env: pd.read_parquet(env["tmp"] / "missing.parquet"),
    "a bug in our code (KeyError)": lambda env: {}["as_of"],
    "HTTP 404": lambda env: urlopen(f"{env['http']}/404", timeout=5),
    "MLflow 404 (RestException)": lambda env: _mlflow(f"{env['http']}/404"),
    "connection refused": lambda env: urlopen(f"http://127.0.0.1:{free_port()}/", timeout=5),
    "read timeout": lambda env: urlopen(env["silent"], timeout=0.2),
    "HTTP 503": lambda env: urlopen(f"{env['http']}/503", timeout=5),
    "MLflow server down": lambda env: _mlflow(f"http://127.0.0.1:{free_port()}"),
    "MLflow answers 503": lambda env: _mlflow(f"{env['http']}/503"),
    "refused once, then answers": _refused_once,
}
DETERMINISTIC = ["no rows for the week", "missing file", "a bug in our code (KeyError)", "HTTP 404",
                 "MLflow 404 (RestException)"]
TRANSIENT = ["connection refused", "read timeout", "HTTP 503", "MLflow server down", "MLflow answers 503"]


@task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def call(fault: str, env: dict) -> None:
    with (env["tmp"] / "attempts").open("a") as f:
        f.write(f"{fault}\n")
    FAULTS[fault](env)


@flow(name="retry-probe", persist_result=False)
def probe(fault: str, env: dict) -> None:
    call(fault, env)


def attempts(env: dict) -> int:
    """How many times the task body ran (1 + retries); the API's run_count lags behind the client's engine."""
    return len((env["tmp"] / "attempts").read_text().splitlines())


class _Status(BaseHTTPRequestHandler):
    """Answers with the status named by the first path segment (/503/api/... -> 503), an MLflow-style error body."""

    def _answer(self):
        code = int(self.path.strip("/").split("/")[0])
        body = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE" if code >= 500 else "RESOURCE_DOES_NOT_EXIST",
                           "message": f"status {code}"}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def env(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections (backlog), never answers
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own HTTP retries would take minutes
        mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        yield {"tmp": tmp_path, "http": f"http://127.0.0.1:{server.server_address[1]}",
               "silent": f"http://127.0.0.1:{silent.getsockname()[1]}/"}
    server.shutdown()
    silent.close()


@pytest.mark.parametrize("fault", DETERMINISTIC)
def test_an_error_that_would_repeat_runs_once(prefect_api, env, fault):
    state = probe(fault, env, return_state=True)
    assert state.is_failed() and attempts(env) == 1, state.message


@pytest.mark.parametrize("fault", TRANSIENT)
def test_flaky_io_is_retried(prefect_api, env, fault):
    state = probe(fault, env, return_state=True)
    assert state.is_failed() and attempts(env) == 3, state.message


def test_a_refused_connection_recovers_on_retry(prefect_api, env):
    state = probe("refused once, then answers", env, return_state=True)
    assert state.is_completed() and attempts(env) == 2, state.message
