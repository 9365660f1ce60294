"""The flows from the shell: an expected failure prints a short block (why, the full log, the run in the UI), no
traceback, and exits non-zero; the traceback is in data/logs/<flow>.log and in the Prefect UI; a bad argument
still exits 2."""
from __future__ import annotations

import logging
import re
import subprocess
import sys

import pytest
from prefect import flow, get_run_logger

from tests.conftest import make_project, tool_env

NO_ROWS = "parameter 'as_of': no rows for the week 2016-05-22..2016-05-28 (as_of=2016-05-29)"


@pytest.fixture(scope="module")
def week_without_data(tmp_path_factory) -> dict:
    """`python -m flows.weekly_retrain --as-of 2016-05-29` in a fresh project copy, on Prefect's temporary server."""
    tmp = tmp_path_factory.mktemp("cli")
    repo = make_project(tmp / "repo")
    env = tool_env(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
                   PREFECT_SERVER_ANALYTICS_ENABLED="false")
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):  # the project's own temporary API and SQLite store
        env.pop(name, None)
    p = subprocess.run([sys.executable, "-m", "flows.weekly_retrain", "--as-of", "2016-05-29"], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=300)
    return {"repo": repo, "code": p.returncode, "stdout": p.stdout, "stderr": p.stderr}


def test_a_week_without_data_is_one_short_block(week_without_data):
    run, log = week_without_data, week_without_data["repo"] / "data" / "logs" / "weekly-retrain.log"
    assert run["code"] == 1, run["stderr"]
    assert "Traceback" not in run["stdout"] + run["stderr"], run["stderr"]
    block = run["stderr"][run["stderr"].index("weekly-retrain failed: "):].splitlines()
    assert block[0].startswith(f"weekly-retrain failed: {NO_ROWS}; the source covers 2013-01-01"), block
    assert block[1] == f"full log: {log}"
    assert re.fullmatch(r"Prefect UI: PREFECT_HOME=\S+ prefect server start, then open "
                        r"http://127\.0\.0\.1:4200/runs/flow-run/[0-9a-f-]{36}", block[2]), block[2]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and f'EmptyWeekError("{NO_ROWS}' in text


@pytest.mark.parametrize("module,flow", [("flows.ab_analysis", "ab-analysis"), ("flows.canary", "canary")])
def test_no_running_experiment_is_one_line_and_not_retried(prefect_api, tmp_path, capsys, module, flow):
    import importlib

    repo = make_project(tmp_path / "repo")
    assert importlib.import_module(module).main(["--project-dir", str(repo)]) == 1
    err = capsys.readouterr().err
    assert f"{flow} failed: no running experiment (A/B test or canary rollout) for model 'flight-delay' in " \
           "sqlite:///" in err, err
    assert "Traceback" not in err
    text = (repo / "data" / "logs" / f"{flow}.log").read_text()
    assert "Traceback (most recent call last)" in text and "Retry 1/2" not in text  # the task has retries=2


def test_a_bad_argument_exits_2(capsys):
    from flows.weekly_retrain import main

    with pytest.raises(SystemExit) as e:
        main(["--as-of", "2013-02-30"])
    assert e.value.code == 2 and "--as-of must be a date" in capsys.readouterr().err


@flow(name="cli-probe", persist_result=False)
def probe(project_dir: str) -> None:
    get_run_logger().info(f"probing {project_dir}")
    {}["as_of"]  # a bug: a KeyError is a LookupError, yet not an expected one


def test_an_unexpected_error_says_so_and_the_ui_keeps_the_traceback(prefect_api, tmp_path, capsys):
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker, PrefectConsoleHandler

    from flows.cli import run_flow

    consoles = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    formatters = [h.formatter for h in consoles]
    assert run_flow(probe, tmp_path, str) == 1
    err = capsys.readouterr().err
    assert "cli-probe failed: KeyError: 'as_of' (unexpected error: the traceback is in the full log)" in err, err
    assert "Traceback" in (tmp_path / "data" / "logs" / "cli-probe.log").read_text()
    assert [h.formatter for h in consoles] == formatters  # the console is as it was
    APILogWorker.drain_all(timeout=5)
    run_id = re.search(r"/runs/flow-run/([0-9a-f-]{36})", err).group(1)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    assert any("Traceback (most recent call last)" in r.message and "KeyError" in r.message for r in logs)
