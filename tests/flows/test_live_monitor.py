"""The live monitor on real served traffic (Prefect harness, MLflow SQLite, the A/B log): a champion whose live loss
keeps its holdout promise is left alone; once outcomes show it credibly worse, the monitor says so with the
evidence, sends the degradation event and starts a weekly retrain through the deployment."""
from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ml.features import feature_frame
from serving.ablog import ABLog, store_url
from serving.traffic import request_rows
from stages.common import load_params
from tests.conftest import edit_params
from tests.conftest import prefect_api as api_call
from tests.deployments.conftest import MODEL, register, train, week
from tests.flows.conftest import committed_project

NOW = datetime(2013, 5, 27, 12, 0, tzinfo=UTC)


def serve(project, params, model, version: str, frame, shift: float, start: datetime, missing: int = 0,
          skew: float = 0.0) -> None:
    """Log the champion's predictions for `frame` (with their input features, as the service does) over the 3 days
    before `start`, then their outcomes (`shift` added: a world that moved away from the model), leaving the first
    `missing` of them without an outcome. `skew` is added to what was served (a broken feed in production)."""
    s = params.source
    pred = model.predict(feature_frame(frame, s.numeric_features, s.categorical_features)) + skew
    spacing = timedelta(days=3) / len(frame)
    features = [json.dumps(r["features"]) for r in request_rows(frame, s.numeric_features, s.categorical_features,
                                                                 s.unit_id)]
    rows = [{"request_id": uuid.uuid4().hex, "unit_id": u, "experiment_id": None, "variant": "champion",
             "model_version": version, "fallback": False, "prediction": float(p), "output": None,
             "created_at": (start - timedelta(days=3) + i * spacing).replace(tzinfo=None),  # naive UTC
             "features": f} for i, (u, p, f) in enumerate(zip(frame[s.unit_id], pred, features, strict=True))]
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


@pytest.fixture(scope="module")
def skewed(prefect_api, tmp_path_factory, flights):
    """monitor.rollback on: a champion whose served predictions went wrong (a broken feed adds 40 min), while
    @previous-champion, scored on the same logged features, would have served the units well."""
    import mlflow

    from flows.live_monitor import live_monitor

    project = committed_project(tmp_path_factory.mktemp("rollback") / "repo")
    edit_params(project, monitor={"rollback": True, "retrain": False})
    params = load_params(project / "params.yaml")
    uri = f"sqlite:///{project / 'mlflow.db'}"
    holdout = week(flights, "2013-05-19")
    client = mlflow.MlflowClient(tracking_uri=uri)
    models = {}
    for alias in ("previous-champion", "champion"):
        model = models[alias] = train(flights, params, "2013-05-19", max_iter=60)
        version = register(uri, params, model, holdout, alias)
        client.set_model_version_tag(MODEL, version, "holdout.metric", "mae")
        client.set_model_version_tag(MODEL, version, "holdout.loss", repr(float(
            np.abs(model.predict(holdout) - holdout[params.source.target]).mean())))
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    serve(project, params, models["champion"], champion, week(flights, "2013-05-26").iloc[:1500], 0.0, NOW,
          skew=40.0)
    out = live_monitor(now=NOW.isoformat(), project_dir=str(project))
    return {"out": out, "client": client, "champion": str(champion),
            "aliases": {a: str(v) for a, v in client.get_registered_model(MODEL).aliases.items()}}


def test_with_rollback_on_a_degraded_champion_gives_way_to_a_previous_one_that_serves_better(skewed):
    out, champion = skewed["out"], skewed["champion"]
    assert out["degraded"] is True, out["reason"]
    rb = out["rollback"]
    assert rb["rolled_back"] is True and rb["check"]["ci_high"] < 0, rb["reason"]
    assert rb["check"]["units"] == 1500 and "rolled back" in rb["reason"]
    assert skewed["aliases"] == {"champion": rb["previous_version"]}  # the demoted version keeps its registration
    assert rb["demoted"] == champion and "rolled_back_at" in skewed["client"].get_model_version(MODEL, champion).tags
    assert "triggered_flow_run" not in out  # monitor.retrain off here
