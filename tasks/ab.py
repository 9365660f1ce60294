"""A/B experiments around the registry: start one (weekly flow), schedule its analysis, read its traffic, decide,
and act through the aliases (ab-analysis flow)."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ml.ab import (
    CHALLENGER,
    CHAMPION,
    CONTINUE,
    INVALID,
    PROMOTE,
    ROLLBACK,
    decide_ab,
    loss_cv,
    plan_units,
    unit_losses,
)
from ml.config import Params
from ml.names import ANALYSIS_DEPLOYMENT
from serving.ablog import ABLog, store_url
from tasks import alerts, lineage, ui
from tasks.registry import CHALLENGER as CHALLENGER_ALIAS
from tasks.registry import CHAMPION as CHAMPION_ALIAS
from tasks.registry import alias_version, promote_challenger, retire_challenger
from tasks.retry import retry_if_transient

STATUS = {PROMOTE: "promoted", ROLLBACK: "rolled_back", INVALID: "invalid"}


def open_log(project: Path, params: Params) -> ABLog:
    return ABLog(store_url(project, params.ab.store))


def start_experiment(project: Path, params: Params, *, challenger: str, champion: str, metric: str, week: str,
                     reason: str, champion_loss_cv: float | None) -> dict:
    """Register an experiment (a running one of the same model is superseded). A retry of the same weekly run
    finds its experiment instead of starting another."""
    ab = params.ab
    with open_log(project, params) as log:
        running = log.running_experiment(params.registry.model_name)
        if running and running["challenger_version"] == challenger and running["champion_version"] == champion:
            return running
        start = datetime.now(UTC)
        cv = champion_loss_cv if champion_loss_cv and np.isfinite(champion_loss_cv) else 1.0
        plan = plan_units(cv, share=ab.share, mde=ab.min_detectable_effect, power=ab.power, alpha=ab.alpha)
        row = {"id": f"{params.registry.model_name}-v{challenger}-vs-v{champion}-{start:%Y%m%dT%H%M%S}",
               "model": params.registry.model_name, "champion_version": champion, "challenger_version": challenger,
               "share": ab.share, "metric": metric, "started_at": start,
               "planned_end": start + timedelta(days=ab.duration_days),
               "max_end": start + timedelta(days=ab.max_duration_days), "planned_units": plan.units,
               "plan": plan.to_dict(), "week": week, "reason": reason}
        return register(log, row)


def register(log: ABLog, row: dict) -> dict:
    """Register an experiment row (superseding a running one of the model) and read it back, with the ids of the
    experiments it superseded under "superseded"."""
    superseded = log.register_experiment(row)
    exp = log.experiment(row["id"])
    exp["superseded"] = superseded
    return exp


def schedule_analysis(project: Path, params: Params, experiment: dict, when: datetime) -> str | None:
    """Schedule the ab-analysis deployment for `when`; None (with the reason logged) if it is not deployed."""
    return schedule(project, params, experiment, when, ANALYSIS_DEPLOYMENT, "ab", "flows.ab_analysis")


def schedule(project: Path, params: Params, experiment: dict, when: datetime, deployment: str, prefix: str,
             module: str) -> str | None:
    """Schedule `deployment` for the experiment at `when` and note the run on the experiment; None (with the
    reason and the command to run by hand logged) if it is not deployed."""
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    what = deployment.split("/")[0]
    try:
        run = run_deployment(deployment, parameters={"experiment_id": experiment["id"]},
                             scheduled_time=when, timeout=0, as_subflow=False, tags=[what],
                             flow_run_name=f"{prefix}-{experiment['id']}-{when:%Y%m%dT%H%M}")
    except Exception as e:  # ObjectNotFound when nothing is deployed (in-process runs, tests, the demo)
        logger.info(f"{what} not scheduled ({deployment} is not deployed here: {type(e).__name__}); run "
                    f"`python -m {module}` at {when:%Y-%m-%d %H:%M} UTC or any time before")
        return None
    with open_log(project, params) as log:
        log.set_experiment(experiment["id"], scheduled_run=str(run.id))
    logger.info(f"{what} scheduled: flow run {run.name} at {when:%Y-%m-%d %H:%M} UTC")
    return str(run.id)


def end_experiments_on_promotion(project: Path, params: Params, promoted: str) -> list[str]:
    """The weekly flow promoted a version directly: any running experiment is over, its challenger retired."""
    from mlflow import MlflowClient

    with open_log(project, params) as log:
        ended = log.close_running(params.registry.model_name, "superseded",
                                  f"the weekly flow promoted v{promoted} to @champion")
    name = params.registry.model_name
    retire_challenger(MlflowClient(), name)
    return ended


# ------------------------------------------------------------------------------------------------ analysis
@task(name="read the experiment's traffic (predictions + outcomes)", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def collect(project: str, params: Params, experiment: dict) -> dict:
    logger = get_run_logger()
    with open_log(Path(project), params) as log:
        traffic = log.traffic(experiment["id"])
        requests = log.request_counts(experiment["id"])
    losses = unit_losses(traffic, params.source.task)
    logger.info(f"traffic: {len(traffic):,} predictions for {losses['units']:,} units "
                f"({losses['assigned'][0]:,} champion / {losses['assigned'][1]:,} challenger), "
                f"{losses['with_outcome']:,} with outcomes; {requests['fallbacks']:,} challenger fallbacks")
    return {**losses, "requests": requests}


@task(name="analyse: SRM, always-valid test, sample size", cache_policy=NO_CACHE)
def analyse(params: Params, experiment: dict, traffic: dict, now: datetime | None = None) -> dict:
    ab = params.ab
    now = now or datetime.now(UTC)
    cv = loss_cv(traffic[CHAMPION]) if len(traffic[CHAMPION]) >= max(ab.min_units, 2) else None
    cv = cv if cv is not None and np.isfinite(cv) and cv > 0 else None  # all-zero losses: keep the start's plan
    planned = experiment["planned_units"]
    if cv is not None:  # re-plan on the spread of the champion's loss as served, not as on last week's holdout
        planned = plan_units(cv, share=experiment["share"], mde=ab.min_detectable_effect, power=ab.power,
                             alpha=ab.alpha).units
    d = decide_ab(traffic[CHAMPION], traffic[CHALLENGER], assigned=traffic["assigned"], share=experiment["share"],
                  alpha=ab.alpha, srm_alpha=ab.srm_alpha, mde=ab.min_detectable_effect, power=ab.power,
                  min_units=ab.min_units, planned_units=planned, now=now, planned_end=experiment["planned_end"],
                  max_end=experiment["max_end"], fallbacks=traffic["requests"]["fallbacks"],
                  challenger_requests=traffic["requests"]["challenger"], max_error_rate=ab.max_error_rate,
                  metric=experiment["metric"])
    get_run_logger().info(f"analysis: {d.summary}")
    out = d.to_dict()
    out["evidence"]["observed_cv"] = cv
    out["analysed_at"] = now.isoformat()
    return out


@task(name="act on the analysis (registry aliases)", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def act(project: str, params: Params, experiment: dict, decision: dict) -> dict:
    """promote: @champion -> challenger (old champion kept as @previous-champion); rollback: @challenger removed;
    invalid: the experiment stops routing, aliases stay; continue: nothing moves."""
    from mlflow import MlflowClient

    logger = get_run_logger()
    name, action = experiment["model"], decision["action"]
    champ_now, chall_now = alias_version(name, CHAMPION_ALIAS), alias_version(name, CHALLENGER_ALIAS)
    out = {"action": action, "champion": champ_now, "challenger": chall_now, "moved": False}
    if action == CONTINUE:
        return out
    if action in (PROMOTE, ROLLBACK) and (champ_now != experiment["champion_version"]
                                          or chall_now != experiment["challenger_version"]):
        # The aliases moved since the experiment started (a rollback, another promotion): its evidence is stale.
        action = INVALID
        decision["summary"] = (f"invalid: the aliases moved during the experiment (champion v{champ_now}, challenger "
                               f"v{chall_now}; it compared v{experiment['challenger_version']} with "
                               f"v{experiment['champion_version']}): nothing moved")
        decision["action"] = INVALID
        out["action"] = INVALID
    client = MlflowClient()
    version = experiment["challenger_version"]
    if action == PROMOTE:
        promote_challenger(client, name, version, champ_now)
        out.update(champion=version, challenger=None, previous=champ_now, moved=True)
        logger.info(f"act: {name} v{version} is now @champion (v{champ_now} kept as @previous-champion)")
        alerts.announce(alerts.PROMOTED, f"model.{name}", f"{name} v{version} is @champion after A/B experiment "
                        f"{experiment['id']}: {decision['summary']}", version=version)
    elif action == ROLLBACK:
        retire_challenger(client, name)
        out.update(challenger=None, moved=True)
        logger.info(f"act: @challenger v{version} removed; @champion stays v{champ_now}")
    else:
        logger.info(f"act: nothing moved; the experiment stops routing traffic ({decision['summary']})")
        alerts.announce(alerts.UNFINISHABLE, f"model.{name}", f"A/B experiment {experiment['id']} ended without a "
                        f"decision: {decision['summary']}", version=version)
    client.set_model_version_tag(name, version, "ab.decision", decision["action"])
    client.set_model_version_tag(name, version, "ab.summary", decision["summary"][:4900])
    with open_log(Path(project), params) as log:
        log.set_experiment(experiment["id"], status=STATUS[action], decided_at=datetime.now(UTC)
                           .replace(tzinfo=None), decision=decision["summary"])
    return out


def log_to_mlflow(project: Path, params: Params, experiment: dict, traffic: dict, decision: dict,
                  outcome: dict) -> str:
    """One MLflow run per look, in the ab.experiment MLflow experiment."""

    from mlflow import MlflowClient

    exp_id = lineage.ensure_experiment(project, params.ab.experiment)
    ev = decision["evidence"]
    lift = ev.get("lift") or {}
    client = MlflowClient()
    run = client.create_run(exp_id, run_name=f"{experiment['id']}@{decision['analysed_at'][:16]}", tags={
        "ab.experiment_id": experiment["id"], "decision": decision["action"], "decision.summary": decision["summary"],
        "model": experiment["model"], "champion_version": experiment["champion_version"],
        "challenger_version": experiment["challenger_version"]})
    rid = run.info.run_id
    lineage.log_params(rid, {"share": experiment["share"], "metric": experiment["metric"],
                             "started_at": experiment["started_at"], "planned_end": experiment["planned_end"],
                             "max_end": experiment["max_end"], "alpha": params.ab.alpha,
                             "srm_alpha": params.ab.srm_alpha, "min_detectable_effect": params.ab.min_detectable_effect,
                             "power": params.ab.power, "week": experiment.get("week")})
    metrics = {"units_champion": traffic["assigned"][0], "units_challenger": traffic["assigned"][1],
               "outcomes_champion": len(traffic[CHAMPION]), "outcomes_challenger": len(traffic[CHALLENGER]),
               "srm_p_value": ev["srm"]["assigned_p"], "srm_outcome_p_value": ev["srm"]["outcome_p"],
               "planned_units": ev["planned_units"], "fallbacks": traffic["requests"]["fallbacks"]}
    return finish_look(client, rid, metrics, lift, {"experiment": experiment, "decision": decision,
                                                    "outcome": outcome}, "analysis.json")


def finish_look(client, rid: str, metrics: dict, lift: dict, record: dict, artifact: str) -> str:
    """Close the MLflow run of one look at an experiment: its figures and the lift's as metrics, the whole record
    as a JSON artifact."""
    import time

    from mlflow.entities import Metric

    for k in ("lift", "ci_low", "ci_high", "p_value", "champion_mean", "challenger_mean"):
        if k in lift:
            metrics[k] = lift[k]
    now_ms = int(time.time() * 1000)
    client.log_batch(rid, metrics=[Metric(k, float(v), now_ms, 0) for k, v in metrics.items()])
    client.log_text(rid, json.dumps(record, indent=2, default=str), artifact)
    client.set_terminated(rid)
    return rid


@task(name="publish the analysis (MLflow, Prefect UI)", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def publish(project: str, params: Params, experiment: dict, traffic: dict, decision: dict, outcome: dict) -> str:
    """The analysis logged to MLflow and shown in the Prefect UI; the MLflow run id."""
    run_id = log_to_mlflow(Path(project), params, experiment, traffic, decision, outcome)
    ui.publish_ab(run_id, params, experiment, traffic, decision, outcome)
    return run_id
