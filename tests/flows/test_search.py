"""The weekly candidate search on a real Dask cluster: every candidate a Prefect task on a worker process and a
nested MLflow run, the choice recorded as the DVC stage `search` so that `dvc repro` finds it up to date and
reproduces it byte for byte, and a worker killed mid-fit replaced without changing the decision."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import run
from tests.flows.conftest import committed_project

# four cheap candidates of all three families (the declared default has six, fitted on a full window)
CANDIDATES = {"hgb": {"hgb": {"max_iter": 60}}, "hgb-small": {"hgb": {"max_iter": 60, "max_leaf_nodes": 7}},
              "linear": {"family": "linear"}, "mlp": {"family": "mlp", "mlp": {"epochs": 12}}}


def mlflow_client(repo: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")


def candidate_runs(repo: Path, as_of: str) -> list:
    c = mlflow_client(repo)
    exp = c.get_experiment_by_name("weekly-retrain")
    return c.search_runs([exp.experiment_id], f"tags.step = 'search-candidate' and tags.as_of = '{as_of}'")


def weekly(repo: Path, as_of: str):
    from flows.weekly_retrain import weekly_retrain

    state = weekly_retrain(as_of=as_of, project_dir=str(repo), return_state=True)
    assert state.is_completed(), state
    return state.result()


@pytest.fixture(scope="module")
def searched(prefect_api, tmp_path_factory):
    repo = committed_project(tmp_path_factory.mktemp("search") / "repo",
                             search={"candidates": CANDIDATES, "min_gain": 0.0})  # the lowest validation loss wins
    result = weekly(repo, "2013-05-05")
    return repo, result


def test_every_candidate_runs_as_a_task_on_a_dask_worker_and_is_a_nested_mlflow_run(searched):
    repo, result = searched
    assert result["action"] == "promote"
    runs = candidate_runs(repo, "2013-05-05")
    assert sorted(r.data.tags["candidate"] for r in runs) == sorted(CANDIDATES)
    pids = {int(r.data.tags["worker_pid"]) for r in runs}
    assert os.getpid() not in pids  # fitted in worker processes, not in the flow's
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1  # all under the week's `search` step run ...
    search_run = mlflow_client(repo).get_run(parents.pop())
    assert search_run.data.tags["mlflow.parentRunId"] == result["mlflow_run_id"]  # ... under the week's run
    assert all(r.data.metrics["validation_mae"] > 0 for r in runs)
    chosen = [r.data.tags["candidate"] for r in runs if r.data.tags["chosen"] == "true"]
    assert chosen == [search_run.data.params["chosen"]]


def test_the_chosen_candidate_is_what_was_trained_registered_and_judged(searched):
    repo, _ = searched
    doc = json.loads((repo / "data" / "search" / "results.json").read_text())
    info = json.loads((repo / "data" / "model" / "info.json").read_text())
    by = {c["name"]: c["value"] for c in doc["candidates"]}
    assert doc["chosen"] == min(by, key=by.get) == info["candidate"]
    assert info["train"] == doc["train"] and info["family"] == doc["train"]["family"]
    assert json.loads((repo / "data" / "refit" / "info.json").read_text())["candidate"] == doc["chosen"]
    v = mlflow_client(repo).get_model_version_by_alias("flight-delay", "champion")
    assert v.tags["recipe"]  # the recipe digest covers the search: next week's track record compares like with like


def test_dvc_finds_the_search_up_to_date_and_reproduces_it_byte_for_byte(searched):
    repo, _ = searched
    assert "up to date" in run(["dvc", "status"], repo).stdout
    before = (repo / "data" / "search" / "results.json").read_bytes()
    out = run(["dvc", "repro", "--force", "--single-item", "search"], repo).stdout
    assert "search: chose" in out  # fitted again, one candidate after another, in the stage's own process
    assert (repo / "data" / "search" / "results.json").read_bytes() == before
    assert "up to date" in run(["dvc", "status"], repo).stdout  # train (and refit), evaluate need not rerun


def test_a_worker_killed_mid_fit_is_replaced_and_the_week_still_decides(prefect_api, tmp_path):
    """A cluster the test owns (given by address, as a shared one is): one worker process is killed with SIGKILL
    while it fits; Dask reruns its candidate on a worker the nanny starts again; the choice is the one `dvc repro`
    makes without any failure."""
    from distributed import Client, LocalCluster
    from prefect.settings import PREFECT_API_URL

    slow = {**CANDIDATES, "mlp": {"family": "mlp", "mlp": {"epochs": 40}}}  # several seconds a fit: killed mid-way
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      env={"PREFECT_API_URL": str(PREFECT_API_URL.value())}) as cluster, Client(cluster) as dask:
        repo = committed_project(tmp_path / "repo", search={"candidates": slow, "scheduler": cluster.scheduler_address})
        killed: list[int] = []

        def kill_a_busy_worker():
            started: dict[str, float] = {}
            end = time.time() + 240
            while time.time() < end and not killed:
                busy = {w for w, keys in dask.processing().items() if keys}
                for w in busy:
                    started.setdefault(w, time.time())
                    if time.time() - started[w] > 1.5:  # mid-fit
                        pid = dask.run(os.getpid, workers=[w])[w]
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        return
                for w in set(started) - busy:
                    started.pop(w)
                time.sleep(0.1)

        killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
        killer.start()
        result = weekly(repo, "2013-05-05")
        killer.join(timeout=5)
    assert killed, "no worker was busy for 1.5 s: nothing was killed"
    assert result["action"] == "promote"
    runs = candidate_runs(repo, "2013-05-05")
    assert sorted(r.data.tags["candidate"] for r in runs) == sorted(slow)  # every candidate scored
    flow_choice = json.loads((repo / "data" / "search" / "results.json").read_text())
    run(["dvc", "repro", "--force", "--single-item", "search"], repo)
    assert json.loads((repo / "data" / "search" / "results.json").read_text()) == flow_choice
