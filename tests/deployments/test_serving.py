"""The prediction service as users meet it: a real uvicorn process, a real MLflow registry, models trained on
real weeks, real traffic. Tests share one service and set the registry/experiment state each needs."""
from __future__ import annotations

import threading
import time

import pytest

from ml.ab import CHALLENGER, CHAMPION, assign
from serving.ablog import ABLog, store_url
from tests.deployments.conftest import MODEL, Service, fragile_model, instances, register, serving_project, train, week


@pytest.fixture(scope="module")
def env(tmp_path_factory, flights):
    from mlflow import MlflowClient

    from stages.common import load_params
    from tasks.ab import start_experiment

    project = serving_project(tmp_path_factory.mktemp("serving") / "project")
    params = load_params(project / "params.yaml")
    uri = f"sqlite:///{project / 'mlflow.db'}"
    holdout = week(flights, "2013-05-19")
    versions = {"weak": register(uri, params, train(flights, params, "2013-05-19", max_iter=15), holdout, "champion"),
                "strong": register(uri, params, train(flights, params, "2013-05-19"), holdout),
                "fragile": register(uri, params, fragile_model(params, flights, "2013-05-19"), holdout)}
    client = MlflowClient(tracking_uri=uri)
    log = ABLog(store_url(project))

    def experiment(challenger: str, champion: str) -> dict:
        """Point @challenger at a version and start an experiment the way the weekly flow does."""
        client.set_registered_model_alias(MODEL, "challenger", challenger)
        return start_experiment(project, params, challenger=challenger, champion=champion, metric="mae",
                                week="2013-05-26", reason="test", champion_loss_cv=1.2)

    svc = Service(project, uri)
    try:
        yield {"project": project, "params": params, "versions": versions, "client": client, "log": log,
               "svc": svc, "experiment": experiment, "traffic": instances(week(flights, "2013-05-26"), params)}
    finally:
        svc.stop()
        log.close()


def no_experiment(env):
    env["log"].close_running(MODEL, "superseded", "test reset")
    env["client"].set_registered_model_alias(MODEL, "champion", env["versions"]["weak"])
    env["svc"].reload()


def test_health_and_metrics_say_what_is_served(env):
    no_experiment(env)
    h = env["svc"].http.get("/health")
    assert h.status_code == 200
    body = h.json()
    assert body["champion_version"] == env["versions"]["weak"] and body["experiment"] is None
    assert body["fast_path"]["champion"] is True  # the default model's pipeline, without pandas
    metrics = env["svc"].http.get("/metrics").text
    assert 'ct_model_version{alias="champion"} 1.0' in metrics and "ct_predict_seconds_bucket" in metrics


def test_routing_is_deterministic_and_honours_the_share(env):
    no_experiment(env)
    exp = env["experiment"](env["versions"]["strong"], env["versions"]["weak"])
    svc = env["svc"]
    assert svc.reload()["experiment"]["id"] == exp["id"]
    rows = env["traffic"][:3000]
    served = svc.predict_all(rows)
    for r in served:
        assert r["variant"] == assign(r["unit_id"], exp["id"], exp["share"])
        assert r["model_version"] == env["versions"]["strong" if r["variant"] == CHALLENGER else "weak"]
    n_chall = sum(r["variant"] == CHALLENGER for r in served)
    assert abs(n_chall - 1500) < 4 * (3000 * 0.25) ** 0.5
    again = svc.predict_all(rows[:400][::-1])  # the same units, another order, single calls below too
    first = {r["unit_id"]: r["variant"] for r in served}
    assert all(first[r["unit_id"]] == r["variant"] for r in again)
    for row in rows[:20]:
        r = svc.http.post("/predict", json=row).json()
        assert r["variant"] == first[row["unit_id"]]


def test_a_hot_swap_under_concurrent_requests_loses_none(env):
    no_experiment(env)
    svc, log, v = env["svc"], env["log"], env["versions"]
    before = log.counts()["predictions"]
    stop, results, errors = threading.Event(), [[] for _ in range(4)], []
    rows = env["traffic"]

    def client(k: int) -> None:
        import httpx

        with httpx.Client(base_url=svc.url, timeout=30) as http:
            i = k
            while not stop.is_set():
                try:
                    r = http.post("/predict", json=rows[i % len(rows)])
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                    continue
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text}")
                else:
                    results[k].append(r.json()["model_version"])
                i += 4

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    env["client"].set_registered_model_alias(MODEL, "champion", v["strong"])  # the watcher picks it up
    end = time.time() + 30
    while time.time() < end and not all(r and r[-1] == v["strong"] for r in results):
        time.sleep(0.2)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
    served = [x for r in results for x in r]
    assert set(served) == {v["weak"], v["strong"]}
    for r in results:  # per client: once the new champion answers, the old one never does again
        first_new = r.index(v["strong"])
        assert set(r[first_new:]) == {v["strong"]}
    assert log.counts()["predictions"] - before == len(served)  # every answered request is logged, once


BAD = [  # (what a client sends, status, words the error must contain)
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2]", 422, "JSON object"),
    ({"unit_id": "x1"}, 422, "features"),
    ({"unit_id": "x1", "features": {"dep_delay": 1}}, 422, "missing feature 'features.distance'"),
    ("extra", 422, "unknown feature 'features.seats'"),
    ("wrong-type", 422, "'features.dep_delay' must be a number"),
    ("string-for-category", 422, "'features.carrier' must be a string"),
    ("null-required", 422, "'features.carrier' is required"),
    ("no-unit", 422, "'unit_id'"),
    ("unknown-field", 422, "unknown field 'user'"),
    ({"instances": []}, 422, "'instances' must be a non-empty list"),
    ("huge", 413, "over the limit"),
    ("too-many", 413, "at most 500"),
]


def bad_body(case, good: dict) -> bytes | dict:
    import json

    f = good["features"]
    bodies = {
        "extra": {**good, "features": {**f, "seats": 200}},
        "wrong-type": {**good, "features": {**f, "dep_delay": "12"}},
        "string-for-category": {**good, "features": {**f, "carrier": 9}},
        "null-required": {**good, "features": {**f, "carrier": None}},
        "no-unit": {"features": f},
        "unknown-field": {**good, "user": "me"},
        "huge": json.dumps({**good, "pad": "x" * 400_000}).encode(),
        "too-many": {"instances": [good] * 501},
    }
    return bodies[case] if isinstance(case, str) else case


@pytest.mark.parametrize("case,status,words", BAD, ids=[str(b[0])[:20] for b in BAD])
def test_bad_predict_requests_get_a_4xx_naming_the_field(env, case, status, words):
    svc, good = env["svc"], env["traffic"][0]
    before = env["log"].counts()
    body = bad_body(case, good)
    r = svc.http.post("/predict", content=body) if isinstance(body, bytes) else svc.http.post("/predict", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"], r.json()
    assert env["log"].counts() == before  # a refused request logs nothing
    assert svc.http.post("/predict", json=good).status_code == 200  # and the service keeps serving


def test_feedback_refuses_unknown_duplicate_and_malformed_outcomes_and_counts_once(env):
    no_experiment(env)
    svc, log = env["svc"], env["log"]
    unit = env["traffic"][5000]
    assert svc.http.post("/predict", json=unit).status_code == 200
    before = log.counts()["feedback"]
    for body, status, words in [
        ({"unit_id": "never-predicted", "outcome": 3.0}, 404, "no prediction was logged for unit_id 'never-predicted'"),
        ({"unit_id": unit["unit_id"], "outcome": "late"}, 422, "'outcome' must be a finite number"),
        ({"unit_id": unit["unit_id"]}, 422, "missing 'outcome'"),
        ({"unit_id": unit["unit_id"], "outcome": 1.0, "x": 1}, 422, "unknown field 'x'"),
        ({"outcomes": [{"unit_id": unit["unit_id"], "outcome": 1.0}, {"unit_id": "nope", "outcome": 2.0}]}, 404,
         "'nope'"),
    ]:
        r = svc.http.post("/feedback", json=body)
        assert r.status_code == status and words in r.json()["error"], (body, r.text)
    assert log.counts()["feedback"] == before  # the batch with one unknown unit recorded nothing
    assert svc.http.post("/feedback", json={"unit_id": unit["unit_id"], "outcome": 7.0}).json() == {"recorded": 1}
    dup = svc.http.post("/feedback", json={"unit_id": unit["unit_id"], "outcome": 9.0})
    assert dup.status_code == 409 and unit["unit_id"] in dup.json()["error"]
    assert log.counts()["feedback"] == before + 1


def test_a_failing_challenger_is_answered_by_the_champion_and_the_breaker_opens(env):
    no_experiment(env)
    svc, v = env["svc"], env["versions"]
    exp = env["experiment"](v["fragile"], v["weak"])
    assert svc.reload()["challenger_version"] == v["fragile"]
    mine = [r for r in env["traffic"] if assign(r["unit_id"], exp["id"], exp["share"]) == CHALLENGER]
    complete = [r for r in mine if all(x is not None for x in r["features"].values())]
    holes = [r for r in mine if r["features"]["wind_gust"] is None]
    fallbacks = svc.metric("ct_challenger_fallbacks_total")
    ok = svc.http.post("/predict", json=complete[0]).json()
    assert ok["model_version"] == v["fragile"] and not ok["fallback"]  # a row it can handle: it answers
    for row in holes[:3]:  # the defect: a missing wind gust makes it raise
        r = svc.http.post("/predict", json=row)
        assert r.status_code == 200
        body = r.json()
        assert body["variant"] == CHALLENGER and body["fallback"] and body["model_version"] == v["weak"]
    assert svc.http.get("/health").json()["breaker_open"]  # 3 failures in a row (breaker_errors in this project)
    r = svc.http.post("/predict", json=complete[1]).json()
    assert r["fallback"] and r["model_version"] == v["weak"]  # resting: even rows it could handle go to the champion
    assert svc.metric("ct_challenger_fallbacks_total") - fallbacks == 4
    assert svc.metric("ct_breaker_opened_total") >= 1
    counts = env["log"].request_counts(exp["id"])
    assert counts["fallbacks"] == 4 and counts[CHALLENGER] == 5 and counts[CHAMPION] == 0


def test_a_classifier_is_served_with_probabilities_and_its_log_loss_is_what_sklearn_computes(tmp_path, flights):
    """The classification path: class probabilities out, labels in on /feedback, per-unit log loss in the analysis."""
    import dataclasses

    import numpy as np
    from sklearn.metrics import log_loss

    from ml.ab import CHAMPION as CHAMP
    from ml.ab import unit_losses
    from stages.common import load_params

    project = serving_project(tmp_path / "project")
    params = load_params(project / "params.yaml")
    late = dataclasses.replace(params.source, task="classification", target="late")
    params = dataclasses.replace(params, source=late)
    label = lambda f: f.assign(late=np.where(f["arr_delay"] > 15, "late", "on time"))  # noqa: E731
    frame = label(flights)
    model = train(frame, params, "2013-05-19", max_iter=50)
    holdout = label(week(flights, "2013-05-19"))
    uri = f"sqlite:///{project / 'mlflow.db'}"
    register(uri, params, model, holdout, "champion")
    traffic = label(week(flights, "2013-05-26")).head(400)
    svc = Service(project, uri)
    try:
        served = svc.predict_all(instances(traffic, params))
        first = served[0]["prediction"]
        assert set(first) == {"label", "probabilities"} and set(first["probabilities"]) == {"late", "on time"}
        assert abs(sum(first["probabilities"].values()) - 1) < 1e-9
        bad = svc.http.post("/feedback", json={"unit_id": traffic["flight_id"].iloc[0], "outcome": 3.5})
        assert bad.status_code == 422 and "class label" in bad.json()["error"]
        svc.feedback_all(list(zip(traffic["flight_id"], traffic["late"], strict=True)))
    finally:
        svc.stop()
    with ABLog(store_url(project)) as log:
        rows = log.traffic(None)
    losses = unit_losses(rows, "classification")
    proba = model.predict_proba(traffic)
    expected = log_loss(traffic["late"], proba, labels=model.classes_)
    assert len(losses[CHAMP]) == 400 and abs(losses[CHAMP].mean() - expected) < 1e-9
