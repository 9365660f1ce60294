"""The stack with its servers' own authentication on (what `up` does when bound beyond loopback; here forced on
with CT_STACK_AUTH=1, since servers in tests bind to 127.0.0.1): anonymous requests to the Prefect API, MLflow
and the prediction service are refused, and a deployed weekly run, whose worker, flow and Dask workers hold
the credentials from the environment, completes, having read and written both servers."""
from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deployments.stack import load_env
from tests.conftest import free_port, tool_env
from tests.e2e.test_stack import pids, stop_stack
from tests.flows.conftest import committed_project

pytestmark = pytest.mark.e2e


def call(url: str, body: dict | None = None, auth: str | None = None) -> tuple[int, dict | str]:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, headers=headers,
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def basic(user_password: str) -> str:
    return "Basic " + base64.b64encode(user_password.encode()).decode()


def test_an_authenticated_stack_refuses_anonymous_requests_and_runs_the_week(tmp_path):
    repo = committed_project(tmp_path / "repo")
    prefect_auth, mlflow_pw, token = f"ct-admin:{secrets.token_hex(12)}", secrets.token_hex(12), secrets.token_hex(16)
    env = tool_env(CT_PREFECT_PORT=str(free_port()), CT_MLFLOW_PORT=str(free_port()),
                   CT_SERVING_PORT=str(free_port()), CT_DASK_PORT=str(free_port()), CT_STACK_AUTH="1",
                   PREFECT_SERVER_API_AUTH_STRING=prefect_auth, MLFLOW_TRACKING_USERNAME="ct-admin",
                   MLFLOW_TRACKING_PASSWORD=mlflow_pw, CT_SERVING_TOKEN=token)
    stack = [sys.executable, "-m", "deployments.stack"]
    started = {}
    try:
        up = subprocess.run([*stack, "up", "--project-dir", str(repo)], cwd=repo, env=env, capture_output=True,
                            text=True, timeout=400)
        started = pids(repo)
        assert up.returncode == 0, f"stack up failed:\n{up.stdout}\n{up.stderr}"
        for f in (repo / ".stack").iterdir():  # no credential is written to a file
            if f.is_file() and f.suffix in ("", ".json", ".ini", ".log"):
                text = f.read_text(errors="replace")
                assert prefect_auth not in text and mlflow_pw not in text and token not in text, f
        s = json.loads((repo / ".stack" / "settings.json").read_text())
        api, mlflow, serving = s["api"], s["mlflow"], s["serving"]
        searches = f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=5"
        assert call(f"{api}/flows/filter", {})[0] == 401
        assert call(f"{api}/flows/filter", {}, basic("ct-admin:wrong"))[0] == 401
        assert call(f"{api}/flows/filter", {}, basic(prefect_auth))[0] == 200
        assert call(searches)[0] == 401
        assert call(searches, auth=basic("ct-admin:wrong"))[0] == 401
        assert call(searches, auth=basic(f"ct-admin:{mlflow_pw}"))[0] == 200
        assert call(f"{serving}/predict", {"unit_id": "x", "features": {}})[0] == 401
        assert call(f"{serving}/reload", {}, f"Bearer {token}")[0] == 200

        run_env = {**env, **load_env(repo, env)}  # `source .stack/env`: PREFECT_API_AUTH_STRING from the user
        assert run_env["PREFECT_API_AUTH_STRING"] == prefect_auth
        # A deployed run through the worker: the drift monitor (quick with no champion yet) talks to both APIs.
        out = subprocess.run([str(Path(sys.executable).parent / "prefect"), "deployment", "run",
                              "drift-monitor/daily"], cwd=repo, env=run_env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout).group(1)
        end = time.time() + 300
        while True:
            fr = call(f"{api}/flow_runs/{run_id}", auth=basic(prefect_auth))[1]
            if fr["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") or time.time() > end:
                break
            time.sleep(1)
        assert fr["state_type"] == "COMPLETED", fr["state"]
        code, exp = call(f"{mlflow}/api/2.0/mlflow/experiments/get-by-name?experiment_name=weekly-retrain",
                         auth=basic(f"ct-admin:{mlflow_pw}"))
        assert code == 200 and exp["experiment"]["name"] == "weekly-retrain", exp  # made by the flow, signed in
    finally:
        stop_stack(repo, env, started)
