"""The A/B analysis of a classifier on real air-quality hours (Beijing, 12 stations): class probabilities served
into a real SQLite A/B log, labels recorded as outcomes, and the ab-analysis flow looking before any outcome, with a
few, and with all of them. A classifier's first look used to crash (IndexError in the per-unit log loss)."""
from __future__ import annotations

import json
import uuid
from datetime import date
from pathlib import Path

import pytest
import yaml
from sklearn.metrics import log_loss

from ml.ab import CHALLENGER, CHAMPION, assign
from ml.models import build_baseline, build_model
from ml.split import slice_week
from serving.ablog import ABLog, store_url, utcnow
from tests.conftest import ROOT
from tests.ml.test_models import AIR, air_weeks, beijing_air, default_train

TRAFFIC_WEEK = date(2014, 1, 12)  # served: 2014-01-05..01-11; both models trained on the 8 weeks before
FEW = 20


def air_project(dest: Path) -> Path:
    """A project folder whose params.yaml describes the air-quality classification task."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["source"] = {"kind": "files", "path": "data/incoming/*.csv", "time_column": AIR.time_column,
                        "target": AIR.target, "task": AIR.task, "unit_id": AIR.unit_id,
                        "numeric_features": list(AIR.numeric_features),
                        "categorical_features": list(AIR.categorical_features), "drop": ["PM2.5"]}
    params["validation"] = {"min_rows": 1000}
    params["evaluate"]["slice_column"] = "station"
    params["policy"].update(cluster_column=None, slice_columns=["station"])
    params["registry"]["model_name"] = "air-quality"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def served_rows(frame, experiment: dict, models: dict) -> list[dict]:
    """The rows the prediction service logs for these requests: variant by the experiment's hash, the class
    probabilities as JSON keyed by str(class), the probability of the predicted class as the value."""
    variant = [assign(u, experiment["id"], experiment["share"]) for u in frame[AIR.unit_id]]
    now = utcnow()
    rows = []
    for v, version, model in ((CHAMPION, experiment["champion_version"], models[CHAMPION]),
                              (CHALLENGER, experiment["challenger_version"], models[CHALLENGER])):
        part = frame[[x == v for x in variant]]
        for unit, p in zip(part[AIR.unit_id], model.predict_proba(part), strict=True):
            rows.append({"request_id": uuid.uuid4().hex, "unit_id": unit, "experiment_id": experiment["id"],
                         "variant": v, "model_version": version, "fallback": False, "prediction": float(p.max()),
                         "output": json.dumps({str(c): float(x) for c, x in zip(model.classes_, p, strict=True)}),
                         "created_at": now})
    return rows


@pytest.fixture(scope="module")
def looks(prefect_api, tmp_path_factory):
    from flows.ab_analysis import ab_analysis
    from stages.common import load_params
    from tasks.ab import start_experiment

    project = air_project(tmp_path_factory.mktemp("ab-air") / "project")
    params = load_params(project / "params.yaml")
    train = air_weeks(TRAFFIC_WEEK, 8)
    y = train[AIR.target].to_numpy()
    models = {CHAMPION: build_baseline(AIR).fit(train, y),  # the class prior as champion ...
              CHALLENGER: build_model(AIR, default_train()).fit(train, y)}  # ... against the default hgb
    traffic = slice_week(beijing_air(), AIR.time_column, TRAFFIC_WEEK)
    exp = start_experiment(project, params, challenger="2", champion="1", metric="log_loss", week="2014-01-12",
                           reason="test", champion_loss_cv=None)
    s = {"experiment": exp, "traffic": traffic, "models": models}

    def look() -> dict:
        return ab_analysis(project_dir=str(project), act=False, reschedule=False)

    with ABLog(store_url(project)) as log:
        log.log_predictions(served_rows(traffic, exp, models))
        s["none"] = look()  # served, no outcome yet
        log.record_feedback([(u, int(v)) for u, v in zip(traffic[AIR.unit_id][:FEW], traffic[AIR.target][:FEW],
                                                           strict=True)])
        s["few"] = look()
        log.record_feedback([(u, int(v)) for u, v in zip(traffic[AIR.unit_id][FEW:], traffic[AIR.target][FEW:],
                                                           strict=True)])
        s["all"] = look()
    return s


def test_a_look_before_any_outcome_continues_and_says_why(looks):
    r, n = looks["none"], len(looks["traffic"])
    assert r["action"] == "continue" and "too few outcomes" in r["summary"], r["summary"]
    ev = r["evidence"]
    assert ev["with_outcome"] == {CHAMPION: 0, CHALLENGER: 0}
    assert sum(ev["assigned"].values()) == n > 1500 and "lift" not in ev


def test_a_look_with_a_few_outcomes_continues(looks):
    r = looks["few"]
    assert r["action"] == "continue" and "too few outcomes" in r["summary"], r["summary"]
    assert sum(r["evidence"]["with_outcome"].values()) == FEW


def test_with_every_outcome_the_per_unit_log_loss_is_sklearns_and_the_better_classifier_wins(looks):
    r, exp, traffic = looks["all"], looks["experiment"], looks["traffic"]
    assert r["action"] == "promote" and "log_loss" in r["summary"], r["summary"]
    lift = r["evidence"]["lift"]
    for variant, key in ((CHAMPION, "champion_mean"), (CHALLENGER, "challenger_mean")):
        part = traffic[[assign(u, exp["id"], exp["share"]) == variant for u in traffic[AIR.unit_id]]]
        model = looks["models"][variant]
        expected = log_loss(part[AIR.target], model.predict_proba(part), labels=model.classes_)
        assert abs(lift[key] - expected) < 1e-9
    # hgb's log loss is far below the prior's: the whole interval lies below zero whichever way the experiment's
    # salt (its start time) splits the units
    assert lift["ci_high"] < 0 and lift["challenger_mean"] < lift["champion_mean"]
    assert not r["moved"]  # act=False: the analysis only looked
