"""The live monitor on real served traffic (Prefect harness, MLflow SQLite, the A/B log): a champion whose live loss
keeps its holdout promise is left alone; once outcomes show it credibly worse, the monitor says so with the
evidence, sends the degradation event and starts a weekly retrain through the deployment."""
from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from deployments.ablog import ABLog, store_url
from ml.features import feature_frame
from stages.common import load_params
from tests.conftest import prefect_api as api_call
from tests.deployments.conftest import MODEL, register, train, week
from tests.flows.conftest import committed_project

NOW = datetime(2013, 5, 27, 12, 0, tzinfo=UTC)


def serve(project, params, model, version: str, frame, shift: float, start: datetime, missing: int = 0) -> None:
    """Log the champion's predictions for `frame` over the 3 days before `start`, then their outcomes (`shift`
    added: a world that moved away from the model), leaving the first `missing` of them without an outcome."""
    s = params.source
    pred = model.predict(feature_frame(frame, s.numeric_features, s.categorical_features))
    spacing = timedelta(days=3) / len(frame)
    rows = [{"request_id": uuid.uuid4().hex, "unit_id": u, "experiment_id": None, "variant": "champion",
             "model_version": version, "fallback": False, "prediction": float(p), "output": None,
             "created_at": (start - timedelta(days=3) + i * spacing).replace(tzinfo=None)}  # naive UTC
            for i, (u, p) in enumerate(zip(frame[s.unit_id], pred, strict=True))]
    with ABLog(store_url(project)) as log:
        log.log_predictions(rows)
        outcomes = list(zip(frame[s.unit_id], frame[s.target].astype(float) + shift, strict=True))
        log.record_feedback(outcomes[missing:])


@pytest.fixture(scope="module")
def monitored(prefect_api, tmp_path_factory, flights):
    import mlflow

    from flows.live_monitor import live_monitor
    from flows.weekly_retrain import weekly_retrain

    project = committed_project(tmp_path_factory.mktemp("live") / "repo")
    params = load_params(project / "params.yaml")
    uri = f"sqlite:///{project / 'mlflow.db'}"
    model = train(flights, params, "2013-05-19")
    holdout = week(flights, "2013-05-19")
    version = register(uri, params, model, holdout, "champion")
    promised = float(np.abs(model.predict(holdout) - holdout[params.source.target]).mean())
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.set_model_version_tag(MODEL, version, "holdout.metric", "mae")
    client.set_model_version_tag(MODEL, version, "holdout.loss", repr(promised))
    weekly_retrain.to_deployment(name="weekly").apply()  # the deployment a degradation starts (no worker here)

    traffic = week(flights, "2013-05-26")
    first, second = traffic.iloc[:2000], traffic.iloc[2000:4000]
    serve(project, params, model, version, first, 0.0, NOW, missing=50)
    ok = live_monitor(now=NOW.isoformat(), project_dir=str(project))
    serve(project, params, model, version, second, 60.0, NOW + timedelta(days=1))  # 60 min later than predicted
    bad = live_monitor(now=(NOW + timedelta(days=1)).isoformat(), project_dir=str(project))
    return {"ok": ok, "bad": bad, "promised": promised, "client": client, "version": version}


def test_a_champion_that_keeps_its_promise_is_left_alone(monitored):
    ok = monitored["ok"]
    assert ok["status"] == "measured" and ok["degraded"] is False, ok["reason"]
    assert ok["check"]["outcomes"] == 1950 and ok["outcomes_missing"] == 50  # due, and not arrived
    assert ok["promised_loss"] == pytest.approx(monitored["promised"])
    assert "triggered_flow_run" not in ok
    assert sum(d["outcomes"] for d in ok["per_day"]) == 1950


def test_a_degraded_champion_raises_the_alarm_with_evidence_and_starts_a_retrain(monitored):
    bad = monitored["bad"]
    assert bad["degraded"] is True and bad["ratio"] > 1.2, bad["reason"]
    assert "DEGRADED" in bad["reason"] and f"v{monitored['version']}" in bad["reason"]
    run = prefect_api_get(f"/flow_runs/{bad['triggered_flow_run']}")
    assert "live-degradation" in run["tags"] and run["deployment_id"]
    runs = monitored["client"].search_runs(
        [monitored["client"].get_experiment_by_name("weekly-retrain").experiment_id], "tags.step = 'live-monitor'")
    assert {r.data.tags["degraded"] for r in runs} == {"true", "false"}
    events = []
    for _ in range(20):  # the event reaches the API's event stream asynchronously
        events = prefect_api_post("/events/filter", {"filter": {"event": {"name": ["ct.model.degraded"]}}})["events"]
        if events:
            break
        time.sleep(0.5)
    assert events and "DEGRADED" in events[0]["payload"]["summary"]


def prefect_api_get(path: str) -> dict:
    from prefect.settings import PREFECT_API_URL

    return api_call(PREFECT_API_URL.value(), path)


def prefect_api_post(path: str, body: dict) -> dict:
    from prefect.settings import PREFECT_API_URL

    return api_call(PREFECT_API_URL.value(), path, body)
