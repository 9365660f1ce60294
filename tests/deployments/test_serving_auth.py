"""Safe when exposed: bound beyond loopback the service will not start without a token, and with a token a
request that lacks it is refused and leaves nothing in the prediction log. Servers in tests bind to 127.0.0.1
only, so the refusal to start is checked on a process that exits before it binds."""
from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest

from serving.ablog import ABLog, store_url
from serving.app import serving_token
from serving.net import is_loopback
from serving.traffic import ServiceProcess
from tests.conftest import ROOT, free_port, tool_env
from tests.deployments.conftest import instances, register, serving_project, train, week

TOKEN = "0123456789abcdef-test-token"


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True),
                                            ("::1", True), ("[::1]", True), ("0.0.0.0", False), ("::", False),
                                            ("10.1.2.3", False), ("serving.example.org", False)])
def test_what_counts_as_exposed(host, loopback):
    assert is_loopback(host) is loopback
    if loopback:
        assert serving_token(host, {}) is None
    else:
        with pytest.raises(ValueError, match="CT_SERVING_TOKEN"):
            serving_token(host, {})
        assert serving_token(host, {"CT_SERVING_TOKEN": TOKEN}) == TOKEN


@pytest.mark.parametrize("token", ["", "short"])
def test_exposed_without_a_usable_token_refuses_to_start(tmp_path, token):
    project = serving_project(tmp_path / "project")
    port = free_port()
    p = subprocess.run([sys.executable, "-m", "serving", "--project-dir", str(project), "--host",
                        "0.0.0.0", "--port", str(port)], cwd=ROOT, env=tool_env(CT_SERVING_TOKEN=token),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "CT_SERVING_TOKEN" in p.stderr and "Traceback" not in p.stderr
    with socket.socket() as s:  # it never listened
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_with_a_token_a_request_without_it_is_refused_and_logs_nothing(tmp_path, flights):
    from stages.common import load_params

    project = serving_project(tmp_path / "project")
    params = load_params(project / "params.yaml")
    uri = f"sqlite:///{project / 'mlflow.db'}"
    holdout = week(flights, "2013-05-19")
    register(uri, params, train(flights, params, "2013-05-19", max_iter=15), holdout, "champion")
    rows = instances(week(flights, "2013-05-26"), params)[:3]
    with ServiceProcess(project, free_port(), env=tool_env(MLFLOW_TRACKING_URI=uri), token=TOKEN) as svc, \
            ABLog(store_url(project)) as log:
        before = log.counts()
        with httpx.Client(base_url=svc.url, timeout=30) as anonymous:
            for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"},
                            {"Authorization": TOKEN}):  # the bare token, without the scheme
                for path, body in (("/predict", rows[0]), ("/feedback", {"unit_id": rows[0]["unit_id"],
                                                                          "outcome": 1.0}), ("/reload", None)):
                    r = anonymous.post(path, json=body, headers=headers)
                    assert r.status_code == 401, (path, r.status_code, r.text)
                    assert r.headers["www-authenticate"] == "Bearer" and "CT_SERVING_TOKEN" in r.json()["error"]
            assert anonymous.get("/health").status_code == 200  # open: load balancers, Prometheus
            assert 'endpoint="/predict",status="401"' in anonymous.get("/metrics").text
        assert log.counts() == before, "a refused request reached the prediction log"
        r = svc.http.post("/predict", json={"instances": rows})
        assert r.status_code == 200, r.text
        assert log.counts()["predictions"] == before["predictions"] + 3
