"""The A/B loop end to end on real weeks: the weekly flow's A/B decision starts an experiment and schedules its
analysis; real traffic of the following weeks goes through the running service (requests, then outcomes); the
ab-analysis flow promotes a clearly better challenger, rolls back a worse one and refuses a broken split."""
from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from ml.ab import CHALLENGER, assign
from serving.ablog import ABLog, store_url
from tests.conftest import edit_params
from tests.deployments.conftest import Service, instances, outcomes_of, week
from tests.flows.conftest import committed_project
from tests.flows.test_weekly_retrain import FEEBLE, MODEL, STRONG, client

pytestmark = pytest.mark.slow


def aliases(repo) -> dict[str, str]:
    return {a: str(v) for a, v in client(repo).get_registered_model(MODEL).aliases.items()}


@pytest.fixture(scope="module")
def loop(prefect_api, tmp_path_factory, flights):
    from flows.ab_analysis import ab_analysis
    from flows.weekly_retrain import weekly_retrain
    from stages.common import load_params

    repo = committed_project(tmp_path_factory.mktemp("ab") / "repo", policy={"bootstrap_samples": 500},
                             train={"hgb": FEEBLE})
    ab_analysis.to_deployment(name="ab-analysis").apply()  # so the weekly flow can schedule the analysis
    s = {"repo": repo}
    weekly_retrain(as_of="2013-05-05", project_dir=str(repo))  # the first champion (v1, stumps)
    # a better recipe, through an A/B test that can finish (25-40k planned flights: 4-6 weeks, within 60 days).
    # The split is salted per experiment id (which holds the start time), so at the default srm_alpha an honest split
    # is refused once in ~500 runs; a lower alpha keeps these runs deterministic and still refuses the broken split
    # below (p ~ 1e-40).
    edit_params(repo, train={"hgb": STRONG}, policy={"always_ab": True},
                ab={"max_duration_days": 60, "srm_alpha": 1e-6})
    s["weekly"] = weekly_retrain(as_of="2013-05-12", project_dir=str(repo))
    params = load_params(repo / "params.yaml")
    log = ABLog(store_url(repo))
    s["experiment"] = log.running_experiment(MODEL)
    svc = Service(repo, f"sqlite:///{repo / 'mlflow.db'}")
    try:
        svc.reload()
        traffic = week(flights, "2013-05-19")  # the week after the one the candidate was trained for
        s["served"] = svc.predict_all(instances(traffic, params))
        s["early"] = ab_analysis(project_dir=str(repo))  # a look before any outcome arrived
        svc.feedback_all(outcomes_of(traffic, params))
        s["promote"] = ab_analysis(project_dir=str(repo))
        s["after_promote"] = aliases(repo)

        # A worse challenger: the under-fitted v1 against the new champion, on the next real week.
        from tasks.ab import start_experiment

        def experiment(challenger: str) -> dict:
            client(repo).set_registered_model_alias(MODEL, "challenger", challenger)
            return start_experiment(repo, params, challenger=challenger, champion=aliases(repo)["champion"],
                                    metric="mae", week="test", reason="test", champion_loss_cv=1.2)

        s["worse_experiment"] = experiment("1")
        svc.reload()
        traffic = week(flights, "2013-05-26")
        svc.predict_all(instances(traffic, params))
        svc.feedback_all(outcomes_of(traffic, params))
        s["rollback"] = ab_analysis(project_dir=str(repo))
        s["after_rollback"] = aliases(repo)

        # A broken split: outcomes of a third of the challenger's units never arrive.
        exp = s["srm_experiment"] = experiment("1")
        svc.reload()
        traffic = week(flights, "2013-06-02")
        svc.predict_all(instances(traffic, params))
        lost = {u for u in traffic["flight_id"] if assign(u, exp["id"], exp["share"]) == CHALLENGER
                and int(uuid.uuid5(uuid.NAMESPACE_OID, u).int % 3) == 0}
        svc.feedback_all([(u, y) for u, y in outcomes_of(traffic, params) if u not in lost])
        s["srm"] = ab_analysis(project_dir=str(repo))
        s["after_srm"] = aliases(repo)
        s["health_after_srm"] = svc.reload()
        s["log"] = log
        yield s
    finally:
        svc.stop()
        log.close()


def test_the_weekly_ab_decision_starts_an_experiment_and_schedules_its_analysis(loop):
    from prefect.client.orchestration import get_client

    r, exp = loop["weekly"], loop["experiment"]
    assert r["action"] == "ab_test", r["summary"]
    assert exp["challenger_version"] == r["version"] == "2" and exp["champion_version"] == "1"
    assert exp["share"] == 0.5 and exp["metric"] == "mae"
    assert exp["planned_end"] - exp["started_at"] == timedelta(days=7)
    assert exp["planned_units"] > 1000 and exp["plan"]["mde"] == 0.05
    request = json.loads(client(loop["repo"]).get_model_version(MODEL, "2").tags["ab_request"])
    assert request["experiment_id"] == exp["id"] and request["analysis_run"] == exp["scheduled_run"]
    with get_client(sync_client=True) as c:
        run = c.read_flow_run(uuid.UUID(exp["scheduled_run"]))
    assert run.state.is_scheduled() and run.parameters == {"experiment_id": exp["id"]}
    assert abs((run.state.state_details.scheduled_time - exp["planned_end"]).total_seconds()) < 1


def test_the_service_routes_the_experiment_and_an_early_look_changes_nothing(loop):
    served = loop["served"]
    assert {r["model_version"] for r in served if r["variant"] == CHALLENGER} == {"2"}
    assert 0.45 < sum(r["variant"] == CHALLENGER for r in served) / len(served) < 0.55
    early = loop["early"]
    assert early["action"] == "continue" and "too few outcomes" in early["summary"] and not early["moved"]


def test_a_clearly_better_challenger_is_promoted(loop):
    r = loop["promote"]
    assert r["action"] == "promote", r["summary"]
    lift = r["evidence"]["lift"]
    assert lift["ci_high"] < 0 and lift["lift"] < -0.05
    assert r["evidence"]["srm"]["assigned_p"] > r["evidence"]["srm"]["alpha"]
    assert loop["after_promote"] == {"champion": "2", "previous-champion": "1"}  # @challenger retired
    assert loop["log"].experiment(loop["experiment"]["id"])["status"] == "promoted"
    v2 = client(loop["repo"]).get_model_version(MODEL, "2")
    assert v2.tags["ab.decision"] == "promote"


def test_every_analysis_is_logged_to_mlflow(loop):
    c = client(loop["repo"])
    exp = c.get_experiment_by_name("ab-analysis")
    runs = c.search_runs([exp.experiment_id], f"tags.`ab.experiment_id` = '{loop['experiment']['id']}'")
    assert {r.data.tags["decision"] for r in runs} == {"continue", "promote"}
    promote = next(r for r in runs if r.data.tags["decision"] == "promote")
    m = promote.data.metrics
    assert {"units_champion", "units_challenger", "srm_p_value", "lift", "ci_low", "ci_high", "p_value",
            "planned_units"} <= set(m)
    assert m["units_champion"] + m["units_challenger"] == len(loop["served"])
    assert "promote" in promote.data.tags["decision.summary"]


def test_a_worse_challenger_is_rolled_back_and_the_champion_stays(loop):
    r = loop["rollback"]
    assert r["action"] == "rollback", r["summary"]
    assert r["evidence"]["lift"]["ci_low"] > 0
    assert loop["after_rollback"] == {"champion": "2", "previous-champion": "1"}
    assert loop["log"].experiment(loop["worse_experiment"]["id"])["status"] == "rolled_back"


def test_a_broken_split_is_refused_and_nothing_moves(loop):
    r = loop["srm"]
    assert r["action"] == "invalid" and "sample-ratio mismatch" in r["summary"], r["summary"]
    assert r["evidence"]["srm"]["outcome_p"] < 0.001
    assert loop["after_srm"] == {"champion": "2", "previous-champion": "1", "challenger": "1"}
    assert loop["log"].experiment(loop["srm_experiment"]["id"])["status"] == "invalid"
    assert loop["health_after_srm"]["experiment"] is None  # the service stops routing to the challenger
