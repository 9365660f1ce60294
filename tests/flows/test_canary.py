"""Canary rollout end to end on real weeks: the weekly flow's promotion starts a ramp instead of moving @champion;
real traffic goes through the running service (requests, then outcomes); the canary flow advances the share step
by step while every guardrail holds and completes the promotion, and rolls a worse model back at its first step."""
from __future__ import annotations

import uuid

import pytest

from ml.ab import CHALLENGER, CHAMPION, assign
from serving.ablog import ABLog, store_url
from tests.conftest import edit_params
from tests.deployments.conftest import Service, instances, outcomes_of, week
from tests.flows.conftest import committed_project
from tests.flows.test_ab_loop import aliases
from tests.flows.test_weekly_retrain import FEEBLE, MODEL, STRONG, client

pytestmark = pytest.mark.slow
STEPS = [0.2, 0.5, 1.0]


@pytest.fixture(scope="module")
def ramp(prefect_api, tmp_path_factory, flights):
    from flows.canary import canary
    from flows.weekly_retrain import weekly_retrain
    from stages.common import load_params
    from tasks.canary import start_canary

    repo = committed_project(tmp_path_factory.mktemp("canary") / "repo", policy={"bootstrap_samples": 500},
                             train={"hgb": FEEBLE})
    canary.to_deployment(name="canary").apply()  # so the weekly flow can schedule the first look
    s = {"repo": repo}
    weekly_retrain(as_of="2013-05-05", project_dir=str(repo))  # the first champion (v1): no ramp, nothing to ramp over
    # each step's split is checked at ab.srm_alpha: at 0.001 an honest split fails a step once in ~1,000; the ramp
    # here must not depend on that draw (a broken split: tests/ml/test_canary.py)
    edit_params(repo, train={"hgb": STRONG}, canary={"enabled": True, "steps": STEPS, "hold_hours": 0,
                                                     "min_outcomes": 150, "max_step_hours": 1},
                ab={"srm_alpha": 1e-6})
    s["weekly"] = weekly_retrain(as_of="2013-05-12", project_dir=str(repo))
    s["after_weekly"] = aliases(repo)
    params = load_params(repo / "params.yaml")
    log = ABLog(store_url(repo))
    exp = s["experiment"] = log.running_experiment(MODEL)
    svc = Service(repo, f"sqlite:///{repo / 'mlflow.db'}")
    try:
        svc.reload()
        traffic = week(flights, "2013-05-19")
        first, second = traffic.iloc[:1500], traffic.iloc[1500:3000]
        s["shares"] = [svc.reload()["experiment"]["share"]]
        s["served"] = [svc.predict_all(instances(first, params))]  # step 1: 20 % of units on the new model
        svc.feedback_all(outcomes_of(first, params))
        s["looks"] = [canary(project_dir=str(repo), reschedule=False)]
        s["shares"].append(svc.reload()["experiment"]["share"])  # step 2: 50 %
        s["served"].append(svc.predict_all(instances(second, params)))
        s["returning"] = svc.predict_all(instances(first, params))  # step 1's units come back during step 2
        svc.feedback_all(outcomes_of(second, params))
        s["looks"].append(canary(project_dir=str(repo), reschedule=False))
        s["after_complete"] = aliases(repo)
        s["health_after_complete"] = svc.reload()
        s["complete_status"] = log.experiment(exp["id"])["status"]

        # A worse model ramps in over the new champion: the live-loss guardrail rolls it back at its first step.
        client(repo).set_registered_model_alias(MODEL, "challenger", "1")
        worse = s["worse"] = start_canary(repo, params, challenger="1", champion="2", metric="mae", week="test",
                                          reason="test")
        svc.reload()
        worse_traffic = week(flights, "2013-05-26")
        svc.predict_all(instances(worse_traffic, params))
        svc.feedback_all(outcomes_of(worse_traffic, params))
        s["rollback"] = canary(project_dir=str(repo), reschedule=False)
        s["after_rollback"] = aliases(repo)
        s["rollback_status"] = log.experiment(worse["id"])["status"]
        s["health_after_rollback"] = svc.reload()
        s["log"] = log
        yield s
    finally:
        svc.stop()
        log.close()


def test_the_weekly_promotion_starts_a_ramp_and_champion_stays_until_it_completes(ramp):
    from prefect.client.orchestration import get_client

    r, exp = ramp["weekly"], ramp["experiment"]
    assert r["action"] == "promote" and r["version"] == "2", r["summary"]
    assert ramp["after_weekly"] == {"champion": "1", "challenger": "2"}  # nothing switched at once
    assert exp["kind"] == "canary" and exp["step"] == 0 and exp["share"] == 0.2
    assert exp["plan"]["steps"] == STEPS and exp["champion_version"] == "1" and exp["challenger_version"] == "2"
    with get_client(sync_client=True) as c:  # the first look is scheduled on the canary deployment
        run = c.read_flow_run(uuid.UUID(exp["scheduled_run"]))
    assert run.state.is_scheduled() and run.parameters == {"experiment_id": exp["id"]}


def test_the_ramp_advances_step_by_step_and_completes_the_promotion(ramp):
    assert ramp["shares"] == [0.2, 0.5]
    for served, share in zip(ramp["served"], ramp["shares"], strict=True):
        new = sum(x["variant"] == CHALLENGER for x in served) / len(served)
        assert share - 0.05 < new < share + 0.05
        assert {x["model_version"] for x in served if x["variant"] == CHALLENGER} == {"2"}
    first, second = ramp["looks"]
    assert first["action"] == "advance" and first["share"] == 0.5, first["summary"]
    assert second["action"] == "complete" and second["champion"] == "2", second["summary"]
    assert ramp["after_complete"] == {"champion": "2", "previous-champion": "1"}
    assert ramp["complete_status"] == "promoted"
    assert ramp["health_after_complete"]["champion_version"] == "2"
    assert ramp["health_after_complete"]["experiment"] is None
    assert client(ramp["repo"]).get_model_version(MODEL, "2").tags["canary.decision"] == "complete"


def test_a_unit_stays_on_the_new_model_as_the_share_grows(ramp):
    before = {x["unit_id"]: x["variant"] for x in ramp["served"][0]}
    after = {x["unit_id"]: x["variant"] for x in ramp["returning"]}
    moved_back = [u for u, v in before.items() if v == CHALLENGER and after[u] != CHALLENGER]
    assert not moved_back
    joined = [u for u, v in before.items() if v == CHAMPION and after[u] == CHALLENGER]
    assert 0.25 * len(before) < len(joined) < 0.35 * len(before)  # 20 % -> 50 %: 30 % of all units move over
    exp = ramp["experiment"]
    assert all(assign(u, exp["id"], 0.5) == after[u] for u in after)


def test_every_look_is_logged_with_its_guardrails(ramp):
    c = client(ramp["repo"])
    runs = c.search_runs([c.get_experiment_by_name("ab-analysis").experiment_id],
                         f"tags.`ab.experiment_id` = '{ramp['experiment']['id']}'")
    assert sorted(r.data.tags["decision"] for r in runs) == ["advance", "complete"]
    for r in runs:
        m = r.data.metrics
        assert {"share", "step_outcomes", "latency_p95_ms_new", "latency_p95_ms_old", "lift", "ci_low"} <= set(m)
        assert m["step_outcomes"] >= 150
    first = ramp["looks"][0]
    assert "latency" in first["summary"] or "passed every guardrail" in first["summary"]


def test_a_worse_model_is_rolled_back_at_its_first_step(ramp):
    r = ramp["rollback"]
    assert r["action"] == "rollback" and "live loss" in r["summary"], r["summary"]
    assert ramp["after_rollback"] == {"champion": "2", "previous-champion": "1"}
    assert ramp["rollback_status"] == "rolled_back"
    assert ramp["health_after_rollback"]["experiment"] is None  # every unit back on the champion
    assert client(ramp["repo"]).get_model_version(MODEL, "1").tags["canary.decision"] == "rollback"
