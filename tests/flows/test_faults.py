"""Faults at the edges of the weekly flow: they fail fast, say what is wrong, and change nothing."""
import time

from tests.conftest import free_port
from tests.flows.conftest import committed_project


def test_mlflow_server_down_fails_before_training(prefect_api, tmp_path, monkeypatch):
    from flows.weekly_retrain import weekly_retrain

    repo = committed_project(tmp_path / "repo")
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    t0 = time.time()
    state = weekly_retrain(as_of="2013-05-05", project_dir=str(repo), return_state=True)
    assert state.is_failed()
    assert url in state.message and "not reachable" in state.message
    assert time.time() - t0 < 90
    assert not (repo / "data" / "model").exists() and not (repo / "data" / "raw").exists()


def test_malformed_and_unknown_weeks_name_the_parameter(prefect_api, tmp_path):
    from flows.weekly_retrain import weekly_retrain

    repo = committed_project(tmp_path / "repo")
    for as_of, words in (("2013-02-30", "must be a date"), ("2016-06-05", "no rows for the week 2016-05-29")):
        state = weekly_retrain(as_of=as_of, project_dir=str(repo), return_state=True)
        assert state.is_failed() and "parameter 'as_of'" in state.message and words in state.message, state.message
    assert not (repo / "mlflow.db").exists()  # nothing was logged for a run that never started


def test_a_key_naming_a_missing_column_fails_in_seconds_without_retries(prefect_api, tmp_path):
    """policy.cluster_column / slice_columns used to fail with a bare KeyError after training and two retries."""
    from flows.weekly_retrain import weekly_retrain
    from tests.conftest import edit_params

    repo = committed_project(tmp_path / "repo")
    edit_params(repo, policy={"cluster_column": "departure_hour", "slice_columns": ["origin", "airline"]})
    t0 = time.time()
    state = weekly_retrain(as_of="2013-05-05", project_dir=str(repo), return_state=True)
    assert state.is_failed()
    assert "'policy.cluster_column' names 'departure_hour'" in state.message
    assert "'policy.slice_columns' names 'airline'" in state.message
    assert time.time() - t0 < 60
    assert not (repo / "data" / "model").exists() and not (repo / "data" / "raw").exists()
